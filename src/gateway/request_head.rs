//! The few request-body fields the gateway's decisions need, read once.
//!
//! Claude Code's bodies are 76–120 KB; only `model`, `stream` and
//! `max_tokens` (and the billing choices `speed` and `inference_geo`) matter here, so everything else is skipped without being
//! built (serde borrows the strings and ignores the rest).

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
    /// serde's message, which names line and column.
    pub fn parse(body: &'a [u8]) -> Result<RequestHead<'a>, GatewayError> {
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

    #[test]
    fn malformed_json_is_refused_with_position() {
        let err = RequestHead::parse(b"{\"model\": ").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
