//! Upstream providers behind one trait.
//!
//! The gateway decides *whether* and *where* to send a request; a provider
//! knows *how*: its URL scheme, its credential, and how its answer becomes
//! Anthropic Messages bytes. Every provider answers in Anthropic's wire
//! format (SSE or JSON), so the gateway's tee reads one format only.

pub mod anthropic;
pub mod bedrock;
pub mod error_types;
pub mod eventstream;
pub mod translate;
pub mod vertex;
pub mod vertex_token;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use http::{HeaderMap, StatusCode};

use crate::config::{Config, ProviderKind};

/// RFC 3986's unreserved characters: all a path segment keeps as is.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one URL path segment: everything but the unreserved
/// characters (`/`, `?`, `#`, `%`, `:` included), and a segment of dots
/// too, so a value taken from a request can never leave its segment.
pub fn path_segment(s: &str) -> String {
    encode_segment(s, UNRESERVED)
}

/// As [`path_segment`], but `@` stays: Vertex model IDs carry their date
/// after it (`claude-3-5-sonnet@20240620`), and `@` is valid in a segment.
pub fn model_version_segment(s: &str) -> String {
    const WITH_AT: &percent_encoding::AsciiSet = &UNRESERVED.remove(b'@');
    encode_segment(s, WITH_AT)
}

fn encode_segment(s: &str, set: &'static percent_encoding::AsciiSet) -> String {
    if !s.is_empty() && s.bytes().all(|b| b == b'.') {
        return s.replace('.', "%2E");
    }
    percent_encoding::utf8_percent_encode(s, set).to_string()
}

/// The Anthropic API operations tollgate forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Messages,
    CountTokens,
}

impl Endpoint {
    /// The name stored on events (`endpoint` column).
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "count_tokens",
        }
    }
}

/// What the gateway asks a provider to send.
#[derive(Debug, Clone)]
pub struct ProviderRequest {
    pub endpoint: Endpoint,
    /// The client's query string (e.g. `beta=true`), passed through.
    pub query: Option<String>,
    /// Client headers already stripped of credentials, hop-by-hop and
    /// tollgate's own; the provider adds its credential.
    pub headers: HeaderMap,
    /// The client's body, untouched.
    pub body: Bytes,
    /// Subscription passthrough: `headers` carry the client's own
    /// Anthropic credential, and the provider adds none of its own (only
    /// Anthropic targets take such a request).
    pub passthrough: bool,
}

/// A body arriving from upstream, chunk by chunk.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, ProviderError>> + Send>>;

/// The start of an upstream answer; the body streams on.
pub struct ProviderResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: BodyStream,
    /// What the provider could not take and was removed (e.g.
    /// `anthropic-beta:<flag>`); recorded on the event.
    pub downgrades: Vec<String>,
}

/// How reaching a provider failed; each maps to an event `error_type` and
/// an Anthropic-shaped error for the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("cannot connect to {target}: {message}")]
    Connect { target: String, message: String },
    #[error("{target} did not answer within the upstream timeout")]
    Timeout { target: String },
    #[error("the answer from {target} broke off: {message}")]
    Stream { target: String, message: String },
    #[error("request to {target} failed: {message}")]
    Other { target: String, message: String },
    #[error("provider {target} is not usable: {message}")]
    Misconfigured { target: String, message: String },
}

impl ProviderError {
    /// The short name stored as the event's `error_type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            ProviderError::Connect { .. } => "upstream_connect_error",
            ProviderError::Timeout { .. } => "upstream_timeout",
            ProviderError::Stream { .. } => "upstream_stream_error",
            ProviderError::Other { .. } => "upstream_error",
            ProviderError::Misconfigured { .. } => "provider_misconfigured",
        }
    }
}

/// One upstream target tollgate can forward to.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The provider family stored on events (`anthropic`, `bedrock`, …).
    fn kind(&self) -> &'static str;
    /// The configured target name (`[providers.NAME]`).
    fn target(&self) -> &str;
    /// Sends the request and returns once the answer's head has arrived.
    async fn send(&self, request: ProviderRequest) -> Result<ProviderResponse, ProviderError>;
}

/// An upstream body as it streams, its failures classified as mid-stream.
pub(crate) fn body_stream(response: reqwest::Response, target: &str) -> BodyStream {
    use futures::StreamExt;
    let target = target.to_owned();
    Box::pin(
        response
            .bytes_stream()
            .map(move |chunk| chunk.map_err(|e| classify(&target, e, true))),
    )
}

/// The refusal of a passthrough request by a provider that is not
/// Anthropic: the client's credential is Anthropic's, so it cannot be sent
/// elsewhere (config validation and the gateway keep it from coming here).
pub(crate) fn passthrough_refused(target: &str) -> ProviderError {
    ProviderError::Misconfigured {
        target: target.to_owned(),
        message: "a passthrough request carries the client's Anthropic credential and goes to kind \"anthropic\" only".into(),
    }
}

/// The 400 answer to a request a translation could not read, in
/// Anthropic's error shape.
pub(crate) fn invalid_request(message: &str) -> ProviderResponse {
    let body = serde_json::json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}});
    json_answer(
        StatusCode::BAD_REQUEST,
        Bytes::from(body.to_string()),
        Vec::new(),
    )
}

/// A whole JSON answer (errors tollgate or a translation makes).
pub(crate) fn json_answer(
    status: StatusCode,
    body: Bytes,
    downgrades: Vec<String>,
) -> ProviderResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    ProviderResponse {
        status,
        headers,
        body: Box::pin(futures::stream::once(async move { Ok(body) })),
        downgrades,
    }
}

/// Builds every configured provider, sharing one HTTP client (one
/// connection pool) between them.
pub fn from_config(
    cfg: &Config,
) -> Result<std::collections::HashMap<String, Arc<dyn Provider>>, ProviderError> {
    let client = http_client(cfg)?;
    let mut out = std::collections::HashMap::new();
    for (name, p) in &cfg.providers {
        let provider: Arc<dyn Provider> = match p.kind {
            ProviderKind::Anthropic => Arc::new(anthropic::Anthropic::new(name, p, client.clone())),
            ProviderKind::Bedrock => Arc::new(bedrock::Bedrock::new(name, p, client.clone())),
            ProviderKind::Vertex => Arc::new(vertex::Vertex::new(name, p, client.clone())),
        };
        out.insert(name.clone(), provider);
    }
    Ok(out)
}

/// The upstream HTTP client: pooled keep-alive connections, no automatic
/// decompression (the tee must see the bytes the client gets).
///
/// Connections stay warm for a gateway's load: up to 1024 idle ones per
/// host, kept 90 s. TCP keep-alive probes at 15 s, and on HTTP/2 (which
/// the providers negotiate over TLS) a ping every 20 s even while idle, so
/// a connection a load balancer or NAT dropped is found and replaced
/// before a request waits on it. The HTTP/2 window adapts to the link, so
/// a long streamed answer is not held back by flow control. TCP_NODELAY:
/// small SSE events go out at once.
///
/// Redirects are not followed: a 3xx goes back to the client as the
/// upstream sent it. reqwest follows up to ten by default and, when the
/// host changes, strips only `Authorization`-like headers, so Anthropic's
/// `x-api-key` would go to wherever a `Location` pointed.
fn http_client(cfg: &Config) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_millis(
            cfg.server.upstream_connect_timeout_ms,
        ))
        .timeout(Duration::from_secs(cfg.server.upstream_timeout_secs))
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_keepalive(Duration::from_secs(15))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .http2_keep_alive_timeout(Duration::from_secs(10))
        .http2_keep_alive_while_idle(true)
        .http2_adaptive_window(true)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| ProviderError::Misconfigured {
            target: "http-client".into(),
            message: e.to_string(),
        })
}

/// The most bytes of an upstream error answer read: a provider (or
/// whatever answers at its URL) cannot make tollgate buffer more.
pub(crate) const MAX_ERROR_BODY: usize = 64 * 1024;

/// An upstream answer's body as text, at most `max` bytes of it; a longer
/// one is cut (on a char boundary) and says so.
pub(crate) async fn capped_text(
    mut response: reqwest::Response,
    max: usize,
    target: &str,
) -> Result<String, ProviderError> {
    let mut body = Vec::new();
    let mut cut = false;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| classify(target, e, true))?
    {
        let room = max - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            cut = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    let mut text = String::from_utf8_lossy(&body).into_owned();
    if cut {
        // A cut inside a UTF-8 sequence reads as U+FFFD; drop it.
        if text.ends_with('\u{FFFD}') {
            text.pop();
        }
        text.push_str(&format!(
            "…[answer from {target} cut at {max} bytes: longer than tollgate reads]"
        ));
    }
    Ok(text)
}

/// Maps a reqwest failure to what it means for the request.
pub(crate) fn classify(target: &str, err: reqwest::Error, mid_stream: bool) -> ProviderError {
    let target = target.to_owned();
    let message = error_chain(&err);
    if err.is_timeout() {
        ProviderError::Timeout { target }
    } else if err.is_connect() {
        ProviderError::Connect { target, message }
    } else if mid_stream || err.is_body() || err.is_decode() {
        ProviderError::Stream { target, message }
    } else {
        ProviderError::Other { target, message }
    }
}

/// An error with its causes, since reqwest's top-level text alone
/// ("error sending request") does not say what went wrong.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream answering 307 to another host: the answer is what the
    /// client gets, and the other host never sees the provider key.
    #[tokio::test]
    async fn upstream_redirects_are_returned_not_followed() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let elsewhere_hits = Arc::new(AtomicUsize::new(0));
        let hits = elsewhere_hits.clone();
        let elsewhere = axum::Router::new().fallback(move || {
            hits.fetch_add(1, Ordering::SeqCst);
            async { "taken" }
        });
        let elsewhere_addr = serve(elsewhere).await;
        let upstream = axum::Router::new().fallback(move || async move {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(
                    http::header::LOCATION,
                    format!("http://{elsewhere_addr}/v1/messages"),
                )],
            )
        });
        let upstream_addr = serve(upstream).await;
        let config = Config::parse("", std::path::Path::new("tollgate.toml")).unwrap();
        let client = http_client(&config).unwrap();
        let answer = client
            .post(format!("http://{upstream_addr}/v1/messages"))
            .header("x-api-key", "sk-provider-key")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(elsewhere_hits.load(Ordering::SeqCst), 0, "not followed");
    }

    /// Serves `app` on a loopback port of its own.
    async fn serve(app: axum::Router) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    #[test]
    fn path_segments_never_leave_their_segment() {
        for hostile in [
            "../../v1/projects/other",
            "..",
            ".",
            "a/b",
            "a?b#c",
            "%2e%2e",
        ] {
            for encoded in [path_segment(hostile), model_version_segment(hostile)] {
                assert!(
                    !encoded.contains('/') && !encoded.contains('?') && !encoded.contains('#'),
                    "{hostile:?} -> {encoded}"
                );
                assert!(
                    encoded != ".." && encoded != ".",
                    "{hostile:?} -> {encoded}"
                );
                assert!(!encoded.contains("%2e%2e"), "{hostile:?} -> {encoded}");
            }
        }
        assert_eq!(
            model_version_segment("claude-3-5-sonnet@20240620"),
            "claude-3-5-sonnet@20240620"
        );
        assert_eq!(
            path_segment("us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
            "us.anthropic.claude-sonnet-4-5-20250929-v1%3A0"
        );
    }
}
