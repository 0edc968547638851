//! A small AWS event-stream writer, written from AWS's format description
//! rather than with tollgate's encoder, so tollgate's Bedrock decoder is
//! checked against a second implementation.
//!
//! A message is: total length (u32), headers length (u32), a CRC32 of
//! those eight bytes, the headers, the payload, and a CRC32 of everything
//! before it; all integers big-endian. A header is its name's length (u8),
//! the name, a type byte (7 for a string), the value's length (u16) and
//! the value.

use bytes::{BufMut, Bytes, BytesMut};

/// The header value type byte of a UTF-8 string.
const STRING_TYPE: u8 = 7;

/// Prelude (12 bytes) plus the trailing message CRC (4 bytes).
const OVERHEAD: usize = 16;

/// One message with string headers, framed.
pub fn message(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let encoded = encode_headers(headers);
    let total = OVERHEAD + encoded.len() + payload.len();
    let mut out = BytesMut::with_capacity(total);
    out.put_u32(total as u32);
    out.put_u32(encoded.len() as u32);
    out.put_u32(crc32fast::hash(&out[..8]));
    out.put_slice(&encoded);
    out.put_slice(payload);
    out.put_u32(crc32fast::hash(&out));
    out.freeze()
}

/// String headers in the event-stream header encoding.
fn encode_headers(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(STRING_TYPE);
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// One Anthropic stream event (its JSON) as a Bedrock `chunk` event: the
/// event's bytes, base64-encoded, in `{"bytes": ...}`.
pub fn chunk(event_json: &[u8]) -> Bytes {
    use base64::Engine;
    let payload = serde_json::json!({
        "bytes": base64::engine::general_purpose::STANDARD.encode(event_json)
    });
    message(
        &[
            (":event-type", "chunk"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};

    /// The reference decoder (AWS's own crate) reads what this writer wrote:
    /// both CRCs, the headers and the payload.
    #[test]
    fn aws_reference_decoder_reads_the_written_chunk() {
        let framed = chunk(br#"{"type":"ping"}"#);
        let mut buf = BytesMut::from(&framed[..]);
        let DecodedFrame::Complete(m) = MessageFrameDecoder::new().decode_frame(&mut buf).unwrap()
        else {
            panic!("a whole message was written");
        };
        let header = |n: &str| {
            m.headers()
                .iter()
                .find(|h| h.name().as_str() == n)
                .and_then(|h| h.value().as_string().ok())
                .map(|s| s.as_str().to_owned())
        };
        assert_eq!(header(":event-type").as_deref(), Some("chunk"));
        assert_eq!(header(":message-type").as_deref(), Some("event"));
        let payload: serde_json::Value = serde_json::from_slice(m.payload()).unwrap();
        assert_eq!(payload["bytes"], "eyJ0eXBlIjoicGluZyJ9");
        assert!(buf.is_empty(), "the length prefix covers the whole message");
    }

    /// A flipped payload byte breaks the message CRC.
    #[test]
    fn aws_reference_decoder_refuses_a_corrupted_message() {
        let mut bytes = chunk(b"{}").to_vec();
        let middle = bytes.len() - 6;
        bytes[middle] ^= 1;
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(MessageFrameDecoder::new().decode_frame(&mut buf).is_err());
    }
}
