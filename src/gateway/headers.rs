//! What tollgate reads from request headers, and which headers cross the
//! gateway in each direction.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, header};

use super::error::GatewayError;
use crate::http_headers::first_of;

/// Per-request facts the client supplies in headers.
#[derive(Debug, Clone, Default)]
pub struct RequestTags {
    pub trace_id: String,
    pub metadata: BTreeMap<String, String>,
    pub session_id: Option<String>,
    /// `x-claude-code-agent-id`: which of the session's agents sent it.
    pub agent_id: Option<String>,
    /// `x-claude-code-parent-agent-id`: the agent that started that one.
    pub parent_agent_id: Option<String>,
    pub client: Option<String>,
}

/// Metadata beyond this is refused: it is stored on every event.
const MAX_METADATA_BYTES: usize = 4096;

impl RequestTags {
    /// Reads trace ID, metadata, session and client; a trace ID is made
    /// (UUIDv7) when the client sent none.
    pub fn from_headers(headers: &HeaderMap) -> Result<RequestTags, GatewayError> {
        let trace_id = match first_of(headers, &["x-tollgate-trace-id", "x-portkey-trace-id"]) {
            Some((name, v)) => {
                let v = v
                    .to_str()
                    .map_err(|_| bad(name, "must be visible ASCII"))?
                    .trim();
                if v.is_empty() || v.len() > 256 {
                    return Err(bad(name, "must be 1 to 256 characters"));
                }
                v.to_owned()
            }
            None => uuid::Uuid::now_v7().to_string(),
        };
        let metadata = match first_of(headers, &["x-tollgate-metadata", "x-portkey-metadata"]) {
            Some((name, v)) => parse_metadata(name, v.as_bytes())?,
            None => BTreeMap::new(),
        };
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Ok(RequestTags {
            trace_id,
            metadata,
            session_id: text("x-claude-code-session-id"),
            agent_id: text("x-claude-code-agent-id"),
            parent_agent_id: text("x-claude-code-parent-agent-id"),
            client: text(header::USER_AGENT.as_str()),
        })
    }
}

impl RequestTags {
    /// Tags for a request whose tag headers were unusable.
    pub fn with_fresh_trace(mut self) -> RequestTags {
        self.trace_id = uuid::Uuid::now_v7().to_string();
        self
    }
}

fn bad(header: &'static str, reason: &str) -> GatewayError {
    GatewayError::BadHeader {
        header,
        reason: reason.to_owned(),
    }
}

/// Metadata must be a JSON object whose values are all strings.
fn parse_metadata(
    header: &'static str,
    raw: &[u8],
) -> Result<BTreeMap<String, String>, GatewayError> {
    if raw.len() > MAX_METADATA_BYTES {
        return Err(bad(
            header,
            &format!("must be at most {MAX_METADATA_BYTES} bytes"),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(raw)
        .map_err(|e| bad(header, &format!("must be a JSON object of strings ({e})")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(bad(header, "must be a JSON object of strings"));
    };
    map.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            other => Err(bad(
                header,
                &format!("value of {k:?} must be a string, got {other}"),
            )),
        })
        .collect()
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) never cross a proxy.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn is_hop_by_hop(name: &str, connection_listed: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || connection_listed.iter().any(|c| c == name)
}

/// Headers named in `Connection:` are hop-by-hop too.
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The client headers that go upstream: everything (all `anthropic-*` and
/// unknown headers included) except hop-by-hop ones, the client's
/// credentials, tollgate's own (`x-tollgate-*`, `x-portkey-*`), and those
/// the HTTP client sets itself (`host`, `content-length`, `accept-encoding`).
pub fn upstream_headers(client: &HeaderMap) -> HeaderMap {
    filtered(client, false)
}

/// The client headers that go upstream on a passthrough request: as
/// [`upstream_headers`], but the client's own `Authorization` and
/// `x-api-key` go too, unchanged, marked sensitive so no debug output of
/// the request shows them. tollgate's key header never does.
pub fn passthrough_upstream_headers(client: &HeaderMap) -> HeaderMap {
    filtered(client, true)
}

fn filtered(client: &HeaderMap, keep_credentials: bool) -> HeaderMap {
    let listed = connection_listed(client);
    let dropped: &[&str] = if keep_credentials { &[] } else { CREDENTIALS };
    let mut out = HeaderMap::with_capacity(client.len());
    for (name, value) in client {
        let n = name.as_str();
        if held_back(n, &listed, dropped) {
            continue;
        }
        let mut value = value.clone();
        if CREDENTIALS.contains(&n) {
            value.set_sensitive(true);
        }
        out.append(name.clone(), value);
    }
    out
}

/// The client's own credentials (tollgate's key in Bearer mode is the
/// client's `authorization`).
const CREDENTIALS: &[&str] = &["authorization", "x-api-key"];

/// Whether a client header (lower-case `name`) stays out of the upstream
/// request: hop-by-hop ones (including those the client's `Connection`
/// names, `listed`), those the HTTP client sets itself, tollgate's own,
/// and the `credentials` given.
fn held_back(name: &str, listed: &[String], credentials: &[&str]) -> bool {
    is_hop_by_hop(name, listed)
        || ["host", "content-length", "accept-encoding"].contains(&name)
        || credentials.contains(&name)
        || name.starts_with("x-tollgate-")
        || name.starts_with("x-portkey-")
}

/// Headers a route's `forward_headers` can never forward, whatever it
/// lists: everything [`upstream_headers`] holds back, credentials
/// (proxy credentials and cookies too) included; `listed` are the headers
/// the client's `Connection` names.
pub fn never_forwarded(name: &str, listed: &[String]) -> bool {
    let n = name.trim().to_ascii_lowercase();
    let credentials = [CREDENTIALS, &["proxy-authorization", "cookie"]].concat();
    held_back(&n, listed, &credentials)
}

/// Adds the client headers a route's `forward_headers` names to the
/// upstream headers, except those [`never_forwarded`] keeps back.
pub fn add_forwarded(up: &mut HeaderMap, client: &HeaderMap, names: &[String]) {
    let listed = connection_listed(client);
    for name in names.iter().filter(|n| !never_forwarded(n, &listed)) {
        let Ok(n) = HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes()) else {
            continue;
        };
        for v in client.get_all(&n) {
            up.append(n.clone(), v.clone());
        }
    }
}

/// The upstream answer's headers that go back to the client: all but
/// hop-by-hop ones (the body is re-framed by this server).
pub fn downstream_headers(upstream: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(upstream);
    let mut out = HeaderMap::with_capacity(upstream.len() + 1);
    for (name, value) in upstream {
        if !is_hop_by_hop(name.as_str(), &listed) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn portkey_aliases_are_accepted() {
        let tags = RequestTags::from_headers(&headers(&[
            ("x-portkey-trace-id", "t-9"),
            ("x-portkey-metadata", r#"{"env":"ci"}"#),
        ]))
        .unwrap();
        assert_eq!(tags.trace_id, "t-9");
        assert_eq!(tags.metadata["env"], "ci");
    }

    #[test]
    fn claude_code_session_and_agent_ids_are_kept() {
        let tags = RequestTags::from_headers(&headers(&[
            ("x-claude-code-session-id", "s-1"),
            ("x-claude-code-agent-id", "agent-b"),
            ("x-claude-code-parent-agent-id", "agent-a"),
        ]))
        .unwrap();
        assert_eq!(tags.session_id.as_deref(), Some("s-1"));
        assert_eq!(tags.agent_id.as_deref(), Some("agent-b"));
        assert_eq!(tags.parent_agent_id.as_deref(), Some("agent-a"));
    }

    #[test]
    fn trace_id_is_made_when_absent() {
        let tags = RequestTags::from_headers(&HeaderMap::new()).unwrap();
        assert_eq!(tags.trace_id.len(), 36);
    }

    #[test]
    fn metadata_that_is_not_an_object_of_strings_names_the_header() {
        for bad in [r#"["a"]"#, r#"{"n":1}"#, "not json"] {
            let err = RequestTags::from_headers(&headers(&[("x-tollgate-metadata", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("x-tollgate-metadata"), "{err}");
        }
    }

    #[test]
    fn upstream_headers_keep_anthropic_and_unknown_drop_credentials_and_hop_by_hop() {
        let out = upstream_headers(&headers(&[
            ("anthropic-beta", "a,b"),
            ("anthropic-version", "2023-06-01"),
            ("x-custom", "1"),
            ("authorization", "Bearer tg"),
            ("x-api-key", "tg"),
            ("x-tollgate-trace-id", "t"),
            ("x-portkey-metadata", "{}"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "p"),
            ("keep-alive", "timeout=5"),
            ("accept-encoding", "gzip"),
            ("host", "h"),
        ]));
        let names: Vec<_> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["anthropic-beta", "anthropic-version", "x-custom"]);
    }

    #[test]
    fn passthrough_keeps_the_client_credentials_but_never_the_tollgate_key() {
        let out = passthrough_upstream_headers(&headers(&[
            ("authorization", "Bearer sk-ant-oat01-client"),
            ("x-api-key", "sk-ant-api03-client"),
            ("anthropic-beta", "oauth-2025-04-20"),
            ("x-tollgate-api-key", "tg"),
            ("x-portkey-api-key", "tg"),
        ]));
        let names: Vec<_> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["authorization", "x-api-key", "anthropic-beta"]);
        assert_eq!(out["authorization"], "Bearer sk-ant-oat01-client");
        assert!(out["authorization"].is_sensitive() && out["x-api-key"].is_sensitive());
        assert!(
            never_forwarded("X-Tollgate-Api-Key", &[]) && !never_forwarded("x-request-source", &[])
        );
    }

    #[test]
    fn forward_headers_never_forwards_credentials_host_hop_by_hop_or_tollgates_own() {
        let client = headers(&[
            ("host", "evil.example"),
            ("authorization", "Bearer tg-key"),
            ("x-api-key", "tg-key"),
            ("proxy-authorization", "p"),
            ("cookie", "c"),
            ("connection", "x-private"),
            ("x-private", "p"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("x-tollgate-api-key", "tg"),
            ("x-tollgate-provider", "b"),
            ("content-length", "1"),
            ("x-team-tag", "ok"),
        ]);
        let names: Vec<String> = client.keys().map(|k| k.as_str().to_uppercase()).collect();
        let mut up = HeaderMap::new();
        add_forwarded(&mut up, &client, &names);
        let sent: Vec<_> = up.keys().map(|k| k.as_str()).collect();
        assert_eq!(sent, ["x-team-tag"]);
    }
}
