//! The few request-body fields the gateway's decisions need, read once.
//!
//! Claude Code's bodies are 76–120 KB; only `model`, `stream` and
//! `max_tokens` (and the billing choices `speed` and `inference_geo`)
//! matter here, so everything else is skipped without being built: serde
//! passes over ignored strings eight bytes at a time and borrows the
//! wanted ones. (A skimmer of tollgate's own did the same until
//! 2026-12-03; `cargo bench --bench request_head` found serde 10–15%
//! faster on Claude Code's body, so it went.)

use std::borrow::Cow;

use serde::Deserialize;

use super::error::GatewayError;

/// `model`, `stream` and `max_tokens` of a Messages request.
#[derive(Debug, Default, Deserialize)]
pub struct RequestHead<'a> {
    #[serde(borrow, default)]
    pub model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// `"fast"` asks for fast mode, billed at the model's fast rates.
    #[serde(borrow, default)]
    pub speed: Option<Cow<'a, str>>,
    /// `"us"` asks for US-only inference, billed ×1.1.
    #[serde(borrow, default)]
    pub inference_geo: Option<Cow<'a, str>>,
}

impl<'a> RequestHead<'a> {
    /// Parses the body; anything that is not a JSON object is refused with
    /// serde's message, which names line and column. (serde would also
    /// read a struct from an array, by position: a body no provider takes.)
    pub fn parse(body: &'a [u8]) -> Result<RequestHead<'a>, GatewayError> {
        if body.trim_ascii_start().first() == Some(&b'[') {
            return Err(GatewayError::BadJson(
                "the request body is a JSON array; a Messages request is an object".into(),
            ));
        }
        serde_json::from_slice(body).map_err(|e| GatewayError::BadJson(e.to_string()))
    }

    /// Whether the client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_decision_fields_and_skips_the_rest() {
        let body = br#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi \"there\""}],"max_tokens":32000,"stream":true}"#;
        let head = RequestHead::parse(body).unwrap();
        assert_eq!(head.model.as_deref(), Some("claude-sonnet-4-5"));
        assert!(head.is_stream());
        assert_eq!(head.max_tokens, Some(32000));
    }

    /// Odd bodies: nulls, escapes, wrong types, a repeated field (serde
    /// refuses it, so no two parts of tollgate can read different values).
    #[test]
    fn odd_bodies_read_or_are_refused_by_name() {
        let head = RequestHead::parse(br#"{"model":"cl\u0061ude","stream":null}"#).unwrap();
        assert_eq!(head.model.as_deref(), Some("claude"));
        assert_eq!(head.stream, None);
        for (body, named) in [
            (
                &br#"{"model":"a","model":"b"}"#[..],
                "duplicate field `model`",
            ),
            (br#"{"max_tokens":-1}"#, "invalid value"),
            (br#"{"stream":"yes"}"#, "invalid type"),
            (br#" ["m", true, 5]"#, "is a JSON array"),
            (br#""m""#, "invalid type"),
        ] {
            let err = RequestHead::parse(body).unwrap_err().to_string();
            assert!(err.contains(named), "{err}");
        }
    }

    #[test]
    fn malformed_json_is_refused_with_position() {
        let err = RequestHead::parse(b"{\"model\": ").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    /// Claude Code's real first request: the fields after its 70 KB of
    /// messages, system prompt and tools are found.
    #[test]
    fn claude_codes_first_request() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/claude-code/anthropic_first_request_authtoken.json"
        );
        let capture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let body = capture["body"].to_string();
        let head = RequestHead::parse(body.as_bytes()).expect("head");
        assert_eq!(head.model.as_deref(), capture["body"]["model"].as_str());
        assert_eq!(head.max_tokens, capture["body"]["max_tokens"].as_u64());
        assert!(head.is_stream());
    }
}
