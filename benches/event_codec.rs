//! What one event's JSON costs to write and to read: the publisher writes
//! every event once, the accountant and the sink each read it, and those
//! three were most of the pipeline's CPU time per event.
//!
//! Run with `cargo bench --bench event_codec`. Prints nanoseconds per
//! event for each direction on the pipeline bench's event, and the parts
//! the event's codec was chosen by: a whole-record UTF-8 check instead of
//! one per string, chrono's strict RFC 3339 parser before its general one,
//! timestamps written by `to_rfc3339_opts`, IDs from uuid's `fast-rng`.
//! Asserts only that the event reads back as written.
//!
//! sonic-rs 0.5.10 (SIMD JSON, same serde derive) was measured here on
//! 2026-12-03 and not taken: on a 922-byte event it wrote in 1,131 ns
//! against serde_json's 1,248 but read in 3,958 ns against 2,888. The
//! time is in the event's ~30 fields (a `String` each, two RFC 3339
//! timestamps, a UUID), not in scanning the bytes.
//!
//! MessagePack (rmp-serde 1.3.1, named fields, so that fields left out or
//! added later still read) was measured the same way on 2026-12-03 and not
//! taken: the same 905-byte event was 724 bytes, written in 897 ns against
//! serde_json's 1,420 and read in 2,552 ns against 3,404 (one run, a slow
//! hour). A quarter off the read does not pay for a second record format.

use std::hint::black_box;

use chrono::{DateTime, SecondsFormat, Utc};
use tollgate::event::LlmEvent;

#[path = "support/event.rs"]
mod event;
#[path = "support/fastest.rs"]
mod fastest;

/// Events per timed pass.
const EVENTS: u32 = 200_000;
/// Passes per measurement; the fastest is printed (the machine is shared).
const PASSES: u32 = 5;

/// Fastest of [`PASSES`] passes of [`EVENTS`] calls of `f`, in ns per event.
fn ns_per_event(f: impl FnMut()) -> f64 {
    fastest::ns_per_call(PASSES, EVENTS, f)
}

fn main() {
    let event = event::template();
    let json = serde_json::to_vec(&event).expect("json");
    assert_eq!(LlmEvent::from_json(&json).expect("read"), event);
    let mut out = Vec::with_capacity(4096);
    println!("event codec: one {}-byte event", json.len());
    let stamp = "2026-12-01T00:00:00.123456Z";
    let rows = [
        (
            "write, serde_json",
            ns_per_event(|| {
                out.clear();
                serde_json::to_writer(&mut out, black_box(&event)).expect("write");
            }),
        ),
        (
            "read, LlmEvent::from_json",
            ns_per_event(|| {
                black_box(LlmEvent::from_json(black_box(&json)).expect("read"));
            }),
        ),
        (
            "read, serde_json::from_slice",
            ns_per_event(|| {
                black_box(serde_json::from_slice::<LlmEvent>(black_box(&json)).expect("read"));
            }),
        ),
        (
            "UTF-8 check of the whole record",
            ns_per_event(|| {
                black_box(std::str::from_utf8(black_box(&json)).expect("utf8"));
            }),
        ),
        (
            "timestamp, chrono's FromStr",
            ns_per_event(|| {
                black_box(black_box(stamp).parse::<DateTime<Utc>>().expect("time"));
            }),
        ),
        (
            "timestamp, chrono's parse_from_rfc3339",
            ns_per_event(|| {
                black_box(DateTime::parse_from_rfc3339(black_box(stamp)).expect("time"));
            }),
        ),
        (
            "timestamp write, chrono's Serialize",
            ns_per_event(|| {
                out.clear();
                serde_json::to_writer(&mut out, black_box(&event.started_at)).expect("write");
            }),
        ),
        (
            "timestamp write, to_rfc3339_opts",
            ns_per_event(|| {
                out.clear();
                let text =
                    black_box(&event.started_at).to_rfc3339_opts(SecondsFormat::AutoSi, true);
                serde_json::to_writer(&mut out, &text).expect("write");
            }),
        ),
        (
            "new event id (LlmEvent::new_id)",
            ns_per_event(|| {
                black_box(LlmEvent::new_id());
            }),
        ),
    ];
    for (what, ns) in rows {
        println!("  {what:<42} {ns:>8.0} ns per event");
    }
}
