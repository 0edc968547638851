//! The costed record: the raw event's JSON with its cost added.
//!
//! Re-serialising every priced event whole was the accountant's largest
//! cost after parsing it. The raw record is already the event's JSON, so
//! the costed record is that JSON with a `"cost"` member appended: the
//! event's fields are copied as bytes, only the cost is serialised. A raw
//! record that might already name a cost (the text `"cost"` anywhere, or
//! any `\u` escape, which could spell it) is serialised whole as before,
//! so the result never holds two `cost` members. Readers see the same
//! event either way (JSON members are unordered); fields the accountant's
//! build does not know are kept rather than dropped.

use bytes::Bytes;
use memchr::memmem;

use crate::bus::records::RecordBuf;
use crate::event::LlmEvent;

/// The costed record of `event` (already priced) parsed from `raw`.
pub fn encode(
    buf: &mut RecordBuf,
    raw: &[u8],
    event: &LlmEvent,
) -> Result<Bytes, serde_json::Error> {
    match &event.cost {
        Some(cost) if splicable(raw) => buf.json_with_member(raw, "cost", cost),
        _ => buf.json(event),
    }
}

/// Whether `raw` is one JSON object with members (it parsed as an event)
/// that cannot hold a member called `cost`.
fn splicable(raw: &[u8]) -> bool {
    let object = raw.trim_ascii();
    object.len() > 2
        && object.starts_with(b"{")
        && object.ends_with(b"}")
        && memmem::find(raw, b"\"cost\"").is_none()
        && memmem::find(raw, b"\\u").is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Cost, CostLines};

    fn priced(raw: &[u8]) -> LlmEvent {
        let mut event: LlmEvent = serde_json::from_slice(raw).unwrap();
        event.cost = Some(Cost {
            price_table_version: "v1".into(),
            lines: Some(CostLines {
                total_usd: rust_decimal::Decimal::new(125, 3),
                ..CostLines::default()
            }),
            family: Some("sonnet".into()),
            tier: Some("standard".into()),
            basis: Some("table".into()),
            notes: Vec::new(),
            source: None,
        });
        event
    }

    fn raw_event() -> Vec<u8> {
        serde_json::to_vec(&crate::event::tests::sample_event()).unwrap()
    }

    #[test]
    fn the_costed_record_reads_back_as_the_priced_event() {
        let raw = raw_event();
        let event = priced(&raw);
        let out = encode(&mut RecordBuf::new(), &raw, &event).unwrap();
        assert!(out.starts_with(&raw[..raw.len() - 1]), "raw bytes kept");
        let back: LlmEvent = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn a_raw_record_that_may_name_a_cost_is_serialised_whole() {
        let plain = raw_event();
        let text = String::from_utf8(plain.clone()).unwrap();
        let with_null = text.replacen('{', "{\"cost\":null,", 1);
        let escaped = text.replacen('{', "{\"\\u0063ost\":null,", 1);
        for raw in [with_null, escaped] {
            let event = priced(raw.as_bytes());
            let out = encode(&mut RecordBuf::new(), raw.as_bytes(), &event).unwrap();
            let back: LlmEvent = serde_json::from_slice(&out).expect("one cost member");
            assert_eq!(back, event);
        }
    }
}
