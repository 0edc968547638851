//! The few request-body fields the gateway's decisions need, read once.
//!
//! Claude Code's bodies are 76–120 KB; only `model`, `stream` and
//! `max_tokens` (and the billing choices `speed` and `inference_geo`) matter here, so everything else is skipped without being
//! built. The body is skimmed (`json_scan`: strings passed over with
//! `memchr`, checked as serde would) and only the wanted members' values
//! are parsed; anything the skimmer is unsure of goes to serde, which then
//! decides with its own message.

use std::borrow::Cow;

use serde::Deserialize;

use super::error::GatewayError;
use super::json_scan::{self, GiveUp};

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
        match Self::skim(body) {
            Ok(head) => Ok(head),
            Err(GiveUp) => {
                serde_json::from_slice(body).map_err(|e| GatewayError::BadJson(e.to_string()))
            }
        }
    }

    /// The fast path: the wanted members found by the skimmer, each value
    /// read on its own. A value of the wrong type gives up, so serde's
    /// message names it as it always did.
    fn skim(body: &'a [u8]) -> Result<RequestHead<'a>, GiveUp> {
        let [model, stream, max_tokens, speed, inference_geo] = json_scan::members(
            body,
            ["model", "stream", "max_tokens", "speed", "inference_geo"],
        )?;
        Ok(RequestHead {
            model: model.map(text).transpose()?.flatten(),
            stream: stream.map(scalar).transpose()?.flatten(),
            max_tokens: max_tokens.map(scalar).transpose()?.flatten(),
            speed: speed.map(text).transpose()?.flatten(),
            inference_geo: inference_geo.map(text).transpose()?.flatten(),
        })
    }

    /// Whether the client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }
}

/// A string value (borrowed when it has no escapes) or `null`.
fn text(span: &[u8]) -> Result<Option<Cow<'_, str>>, GiveUp> {
    match span {
        b"null" => Ok(None),
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => std::str::from_utf8(inner)
            .map(|s| Some(Cow::Borrowed(s)))
            .map_err(|_| GiveUp),
        _ => serde_json::from_slice::<String>(span)
            .map(|s| Some(Cow::Owned(s)))
            .map_err(|_| GiveUp),
    }
}

/// A scalar value (`bool`, `u64`) or `null`, as serde reads it.
fn scalar<T: serde::de::DeserializeOwned>(span: &[u8]) -> Result<Option<T>, GiveUp> {
    serde_json::from_slice(span).map_err(|_| GiveUp)
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

    /// The skimmed head is the head serde reads, on bodies of every shape
    /// the gateway sees (and on odd ones that make the skimmer give up).
    #[test]
    fn skimmed_head_equals_serde_head() {
        let big = "y\\n".repeat(20_000);
        let cases = [
            format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"{big}"}}],"system":[{{"text":"s"}}],"max_tokens":32000,"stream":true,"speed":"fast","inference_geo":"us"}}"#
            ),
            r#"{"model":null,"stream":null,"max_tokens":null}"#.to_owned(),
            r#"{"model":"cl\u0061ude","max_tokens":1}"#.to_owned(),
            r#"{"messages":[]}"#.to_owned(),
            r#"{"model":5}"#.to_owned(),
            r#"{"max_tokens":-1}"#.to_owned(),
            r#"{"stream":"yes"}"#.to_owned(),
            r#"{"model":"a","model":"b"}"#.to_owned(),
            r#"["m", true, 5]"#.to_owned(),
        ];
        for body in &cases {
            let serde: Result<RequestHead<'_>, _> = serde_json::from_str(body);
            match (serde, RequestHead::parse(body.as_bytes())) {
                (Ok(want), Ok(got)) => {
                    assert_eq!(format!("{want:?}"), format!("{got:?}"), "{body}")
                }
                (Err(want), Err(GatewayError::BadJson(got))) => assert_eq!(want.to_string(), got),
                (want, got) => panic!("{body}: serde {want:?}, skimmer {got:?}"),
            }
        }
    }

    #[test]
    fn malformed_json_is_refused_with_position() {
        let err = RequestHead::parse(b"{\"model\": ").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
