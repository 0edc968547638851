//! AWS event-stream (`application/vnd.amazon.eventstream`) as Bedrock
//! speaks it, on top of `aws-smithy-eventstream`'s framing: decoding
//! Bedrock's answer into Anthropic SSE, and encoding Anthropic stream
//! events as Bedrock chunks for clients in Bedrock mode.

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder, write_message_to};
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use base64::Engine;
use bytes::{Bytes, BytesMut};

/// Incremental decoder of an event-stream body.
#[derive(Default)]
pub struct Decoder {
    buffer: BytesMut,
    frames: MessageFrameDecoder,
}

impl Decoder {
    /// Feeds bytes; returns every message they complete.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Message>, String> {
        self.buffer.extend_from_slice(chunk);
        let mut out = Vec::new();
        loop {
            match self.frames.decode_frame(&mut self.buffer) {
                Ok(DecodedFrame::Complete(m)) => out.push(m),
                Ok(DecodedFrame::Incomplete) => return Ok(out),
                Err(e) => return Err(format!("malformed event-stream frame: {e}")),
            }
        }
    }
}

/// A string header of a message.
pub fn header<'a>(m: &'a Message, name: &str) -> Option<&'a str> {
    m.headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| h.value().as_string().ok())
        .map(|s| s.as_str())
}

/// One Bedrock message as Anthropic SSE: a chunk's decoded bytes are one
/// Anthropic stream event; an exception becomes an SSE `error` event.
pub fn message_to_sse(m: &Message) -> Result<Bytes, String> {
    match header(m, ":message-type") {
        Some("event") => {
            if header(m, ":event-type") != Some("chunk") {
                return Ok(Bytes::new());
            }
            let payload: serde_json::Value = serde_json::from_slice(m.payload())
                .map_err(|e| format!("chunk payload is not JSON: {e}"))?;
            let b64 = payload["bytes"]
                .as_str()
                .ok_or("chunk payload has no \"bytes\"")?;
            let json = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("chunk bytes are not base64: {e}"))?;
            let event: serde_json::Value = serde_json::from_slice(&json)
                .map_err(|e| format!("chunk is not an Anthropic event: {e}"))?;
            let kind = event["type"].as_str().unwrap_or("message");
            Ok(sse(kind, &json))
        }
        Some("exception") => {
            let kind = header(m, ":exception-type").unwrap_or("internalServerException");
            let message = serde_json::from_slice::<serde_json::Value>(m.payload())
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(m.payload()).into_owned());
            let (_, error_type) = exception_status(kind);
            let body = serde_json::json!({"type": "error", "error": {"type": error_type, "message": format!("bedrock {kind}: {message}")}});
            Ok(sse("error", body.to_string().as_bytes()))
        }
        other => Err(format!("unexpected event-stream message type {other:?}")),
    }
}

/// An SSE event.
pub fn sse(kind: &str, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + kind.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    out.freeze()
}

/// The HTTP status and Anthropic error type of a Bedrock exception name
/// (`ThrottlingException` or `throttlingException`).
pub fn exception_status(kind: &str) -> (u16, &'static str) {
    let k = kind.split(':').next().unwrap_or(kind).to_ascii_lowercase();
    let status = match k.as_str() {
        "throttlingexception" | "servicequotaexceededexception" => 429,
        "validationexception" => 400,
        "accessdeniedexception" => 403,
        "resourcenotfoundexception" => 404,
        "modeltimeoutexception" => 504,
        "serviceunavailableexception" | "modelnotreadyexception" => 529,
        "unrecognizedclientexception" | "expiredtokenexception" => 401,
        _ => 500,
    };
    (status, super::error_types::error_type_for_status(status))
}

/// The Bedrock exception name for an HTTP status, for errors answered to
/// clients in Bedrock mode.
pub fn status_exception(status: u16) -> &'static str {
    match status {
        400 | 413 => "ValidationException",
        401 => "UnrecognizedClientException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        429 => "ThrottlingException",
        503 | 529 => "ServiceUnavailableException",
        504 => "ModelTimeoutException",
        _ => "InternalServerException",
    }
}

/// One Anthropic stream event (its JSON) as a Bedrock `chunk` message.
pub fn chunk_frame(event_json: &[u8]) -> Bytes {
    let payload = serde_json::json!({ "bytes": base64::engine::general_purpose::STANDARD.encode(event_json) });
    frame(
        vec![
            Header::new(":event-type", HeaderValue::String("chunk".into())),
            Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ),
            Header::new(":message-type", HeaderValue::String("event".into())),
        ],
        payload.to_string().into_bytes(),
    )
}

/// A Bedrock in-stream exception message.
pub fn exception_frame(kind: &str, message: &str) -> Bytes {
    let lower = {
        let mut c = kind.chars();
        c.next()
            .map(|f| f.to_ascii_lowercase().to_string() + c.as_str())
            .unwrap_or_default()
    };
    frame(
        vec![
            Header::new(":exception-type", HeaderValue::String(lower.into())),
            Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ),
            Header::new(":message-type", HeaderValue::String("exception".into())),
        ],
        serde_json::json!({ "message": message })
            .to_string()
            .into_bytes(),
    )
}

fn frame(headers: Vec<Header>, payload: Vec<u8>) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 128);
    // Writing a well-formed message into a Vec cannot fail.
    let _ = write_message_to(&Message::new_from_parts(headers, payload), &mut out);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/claude-code/response_bedrock_eventstream.bin");
        std::fs::read(path).expect("the real Bedrock stream sample")
    }

    #[test]
    fn real_bedrock_stream_decodes_to_anthropic_sse_whatever_the_chunking() {
        let bytes = sample();
        for size in [1, 7, 64, bytes.len()] {
            let mut d = Decoder::default();
            let mut sse_text = String::new();
            for part in bytes.chunks(size) {
                for m in d.feed(part).unwrap() {
                    sse_text.push_str(std::str::from_utf8(&message_to_sse(&m).unwrap()).unwrap());
                }
            }
            assert!(
                sse_text.starts_with("event: message_start\ndata: {"),
                "{sse_text}"
            );
            assert!(sse_text.contains("event: message_stop"), "{sse_text}");
        }
    }

    #[test]
    fn chunks_we_encode_decode_back_to_the_same_event() {
        let event = br#"{"type":"message_stop"}"#;
        let mut d = Decoder::default();
        let ms = d.feed(&chunk_frame(event)).unwrap();
        assert_eq!(ms.len(), 1);
        assert_eq!(
            &message_to_sse(&ms[0]).unwrap()[..],
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
        let ms = d
            .feed(&exception_frame("ThrottlingException", "slow down"))
            .unwrap();
        let text = String::from_utf8(message_to_sse(&ms[0]).unwrap().to_vec()).unwrap();
        assert!(
            text.starts_with("event: error\n")
                && text.contains("rate_limit_error")
                && text.contains("slow down"),
            "{text}"
        );
    }

    #[test]
    fn corrupt_frames_are_errors_not_panics() {
        let mut bytes = sample();
        bytes[20] ^= 0xff;
        let mut d = Decoder::default();
        assert!(d.feed(&bytes).is_err());
    }
}
