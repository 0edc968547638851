//! What reading a request's head costs on Claude Code's 78 KB body: the
//! gateway finds `model`, `max_tokens`, `stream` and `metadata` in every
//! body it forwards, and in Claude Code's they come after ~70 KB of
//! messages, system prompt and tool descriptions.
//!
//! Run with `cargo bench --bench request_head`. Prints nanoseconds per
//! body and the rate in MB/s (fastest of several passes), and a whole
//! parse into `serde_json::Value` for scale; asserts only that the head
//! read is the body's.

use std::hint::black_box;
use std::path::Path;

use tollgate::gateway::request_head::RequestHead;

#[path = "support/fastest.rs"]
mod fastest;

/// Bodies per timed pass.
const BODIES: u32 = 2_000;
/// Passes per measurement; the fastest is printed (the machine is shared).
const PASSES: u32 = 7;

/// Fastest of [`PASSES`] passes of [`BODIES`] calls of `f`, in ns per body.
fn ns_per_body(f: impl FnMut()) -> f64 {
    fastest::ns_per_call(PASSES, BODIES, f)
}

fn main() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/claude-code/anthropic_first_request_authtoken.json");
    let capture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("sample")).expect("json");
    let body = capture["body"].to_string().into_bytes();
    let head = RequestHead::parse(&body).expect("head");
    let whole = &capture["body"];
    assert_eq!(head.model.as_deref(), whole["model"].as_str());
    assert_eq!(head.max_tokens, whole["max_tokens"].as_u64());
    let mb = body.len() as f64 / 1e6;
    println!(
        "request head: Claude Code's first request, {} bytes",
        body.len()
    );
    let rows = [
        (
            "RequestHead::parse",
            ns_per_body(|| {
                black_box(RequestHead::parse(black_box(&body)).expect("head"));
            }),
        ),
        (
            "serde_json::Value, the whole body",
            ns_per_body(|| {
                black_box(
                    serde_json::from_slice::<serde_json::Value>(black_box(&body)).expect("v"),
                );
            }),
        ),
    ];
    for (what, ns) in rows {
        println!(
            "  {what:<32} {:>8.1} µs per body, {:>6.0} MB/s",
            ns / 1000.0,
            mb / (ns / 1e9)
        );
    }
}
