//! Records a bus refuses for their size.
//!
//! Retrying such a record as it is can never succeed, and the batch it is
//! in (with everything queued behind it) would never move again. An event
//! record is instead cut down ([`crate::field_caps::MINIMAL`]) and sent
//! again: its usage, team and cost survive, long texts do not. A record
//! that is not an event, or still too big, is dropped and counted as lost,
//! with an error naming the topic and size.

use bytes::Bytes;

use crate::event::LlmEvent;
use crate::field_caps::{MINIMAL, cap_event};
use crate::metrics::METRICS;

/// What to do with one record given the most bytes the bus takes.
#[derive(Debug, PartialEq)]
pub enum Fitted {
    /// Within the limit, unchanged.
    AsIs,
    /// Cut down to this payload, which fits.
    Shrunk(Bytes),
    /// Cannot be made to fit: drop it (it is counted as lost).
    Lost,
}

/// Fits `(key, payload)` under `limit` bytes (key + payload).
pub fn fit(topic: &str, key: &[u8], payload: &[u8], limit: usize) -> Fitted {
    if key.len() + payload.len() <= limit {
        return Fitted::AsIs;
    }
    match shrink(payload) {
        Some(small) if key.len() + small.len() <= limit => {
            tracing::warn!(
                topic,
                from = payload.len(),
                to = small.len(),
                limit,
                "event too large for the bus: long fields cut and sent"
            );
            Fitted::Shrunk(small)
        }
        _ => {
            lose(topic, payload.len(), limit);
            Fitted::Lost
        }
    }
}

/// The event in `payload` with every field cut to the minimal caps.
pub fn shrink(payload: &[u8]) -> Option<Bytes> {
    let mut event = LlmEvent::from_json(payload).ok()?;
    cap_event(&mut event, &MINIMAL);
    serde_json::to_vec(&event).ok().map(Bytes::from)
}

/// Counts and logs a record dropped for its size.
pub fn lose(topic: &str, size: usize, limit: usize) {
    METRICS.events_lost.inc();
    tracing::error!(
        topic,
        size,
        limit,
        "record too large for the bus even with its fields cut: dropped (counted in tollgate_events_lost_total)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_json(model: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "event_id": uuid::Uuid::now_v7(), "schema_version": 1, "trace_id": "t",
            "session_id": "s".repeat(100_000), "request_id": null,
            "started_at": "2026-01-01T00:00:00Z", "ended_at": "2026-01-01T00:00:00Z",
            "ttft_ms": null, "latency_ms": 0, "workspace": "w", "team": "t", "user": "u",
            "key_id": "k", "metadata": {"m": "v".repeat(100_000)}, "endpoint": "messages",
            "provider": "anthropic", "target": "anthropic", "region": null,
            "model_requested": model, "model_served": model, "stream": false,
            "status": 200, "error_type": null, "stop_reason": null, "attempts": [],
            "usage": {"input_tokens": 7, "output_tokens": 9, "cache_creation_5m_tokens": 0,
                "cache_creation_1h_tokens": 0, "cache_read_tokens": 0,
                "web_search_requests": 0, "web_fetch_requests": 0},
            "downgrades": ["d".repeat(100_000)], "client": "c".repeat(100_000)
        }))
        .unwrap()
    }

    #[test]
    fn an_oversized_event_is_cut_down_keeping_its_usage() {
        let big = event_json(&"m".repeat(1 << 20));
        let Fitted::Shrunk(small) = fit("events", b"t", &big, 4096) else {
            panic!("not shrunk");
        };
        assert!(small.len() < 4096, "{}", small.len());
        let e: LlmEvent = serde_json::from_slice(&small).unwrap();
        assert_eq!((e.usage.input_tokens, e.usage.output_tokens), (7, 9));
        assert_eq!(e.team, "t");
        assert!(e.model_requested.unwrap().contains("[truncated"));
    }

    #[test]
    fn a_record_that_fits_stays_and_one_that_cannot_is_lost() {
        let small = event_json("claude");
        assert_eq!(fit("events", b"t", &small, 1 << 20), Fitted::AsIs);
        assert_eq!(fit("events", b"t", &small, 100), Fitted::Lost);
        assert_eq!(fit("budgets", b"k", &[b'x'; 200], 100), Fitted::Lost);
    }
}
