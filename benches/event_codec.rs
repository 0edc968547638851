//! What one event's JSON costs to write and to read: the publisher writes
//! every event once, the accountant and the sink each read it, and those
//! three were most of the pipeline's CPU time per event.
//!
//! Run with `cargo bench --bench event_codec`. Prints nanoseconds per
//! event for each direction on the pipeline bench's event; asserts only
//! that the event reads back as written.
//!
//! sonic-rs 0.5.10 (SIMD JSON, same serde derive) was measured here on
//! 2026-12-03 and not taken: it wrote an event in 1,131 ns against
//! serde_json's 1,248 but read one in 3,958 ns against 2,888. The time is
//! in the event's ~30 fields (a `String` each, two RFC 3339 timestamps,
//! a UUID), not in scanning the bytes.

use std::hint::black_box;
use std::time::Instant;

use tollgate::event::LlmEvent;

/// Events per timed pass.
const EVENTS: u32 = 200_000;
/// Passes per measurement; the fastest is printed (the machine is shared).
const PASSES: u32 = 5;

/// A typical finished request's event (the pipeline bench's).
fn event() -> LlmEvent {
    serde_json::from_value(serde_json::json!({
        "event_id": uuid::Uuid::now_v7(), "schema_version": 1, "trace_id": "trace",
        "session_id": "session-1", "request_id": "msg_01",
        "started_at": "2026-12-01T00:00:00Z", "ended_at": "2026-12-01T00:00:01Z",
        "ttft_ms": 300, "latency_ms": 1000, "workspace": "default", "team": "bench",
        "user": "bench", "key_id": "bench", "metadata": {"repo": "tollgate"},
        "endpoint": "messages", "provider": "anthropic", "target": "anthropic", "region": null,
        "model_requested": "claude-sonnet-4-5", "model_served": "claude-sonnet-4-5-20250929",
        "stream": true, "status": 200, "error_type": null, "stop_reason": "end_turn",
        "attempts": [{"provider": "anthropic", "target": "anthropic", "status": 200,
            "latency_ms": 990, "error_type": null}],
        "usage": {"input_tokens": 1200, "output_tokens": 300, "cache_creation_5m_tokens": 0,
            "cache_creation_1h_tokens": 0, "cache_read_tokens": 20000,
            "web_search_requests": 0, "web_fetch_requests": 0},
        "downgrades": [], "client": "claude-cli/2.1.332"
    }))
    .expect("event")
}

/// Fastest of [`PASSES`] passes of `EVENTS` calls of `f`, in ns per call.
fn ns_per_event(mut f: impl FnMut()) -> f64 {
    (0..PASSES)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..EVENTS {
                f();
            }
            started.elapsed().as_nanos() as f64 / f64::from(EVENTS)
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let event = event();
    let json = serde_json::to_vec(&event).expect("json");
    assert_eq!(LlmEvent::from_json(&json).expect("read"), event);
    let mut out = Vec::with_capacity(4096);
    println!("event codec: one {}-byte event", json.len());
    let rows = [
        (
            "write, serde_json",
            ns_per_event(|| {
                out.clear();
                serde_json::to_writer(&mut out, black_box(&event)).expect("write");
            }),
        ),
        (
            "read, serde_json (LlmEvent::from_json)",
            ns_per_event(|| {
                black_box(LlmEvent::from_json(black_box(&json)).expect("read"));
            }),
        ),
    ];
    for (what, ns) in rows {
        println!("  {what:<40} {ns:>8.0} ns per event");
    }
}
