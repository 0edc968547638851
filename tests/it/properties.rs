//! Property tests and a small mutation fuzzer over the parsers that read
//! what clients, upstreams and operators send: the SSE tee, the AWS
//! event-stream decoder, the config loader, the metadata header, routing
//! configs and the logs cursor.
//!
//! Each target has a corpus under `tests/data/fuzz/<target>/` (real wire
//! samples and hand-made edge cases); every case mutates one corpus entry
//! by a few byte edits. The case count is fixed, so the run is bounded
//! (`PROPTEST_CASES` raises it for a longer session by hand). The
//! property everywhere: no panic, and a clear error or a sane value.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use tollgate::config::Config;
use tollgate::gateway::headers::RequestTags;
use tollgate::gateway::route::{self, ClientRouting, RouteConfig};
use tollgate::gateway::tee::SseReader;
use tollgate::lake::query::Cursor;
use tollgate::providers::eventstream::{Decoder, chunk_frame, message_to_sse};

/// The corpus of one target.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|f| f.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!seeds.is_empty(), "corpus {} is empty", dir.display());
    seeds
}

/// One byte edit: (position, byte, kind: replace / insert / delete / cut).
type Edit = (usize, u8, u8);

/// A corpus entry with `edits` applied.
fn mutate(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for &(pos, byte, kind) in edits {
        let at = pos % (v.len() + 1);
        match kind % 4 {
            0 if at < v.len() => v[at] = byte,
            1 => v.insert(at, byte),
            2 if at < v.len() => {
                v.remove(at);
            }
            3 => v.truncate(at),
            _ => {}
        }
    }
    v
}

/// A corpus pick and a few edits.
fn mutation() -> impl Strategy<Value = (usize, Vec<Edit>)> {
    (any::<usize>(), prop::collection::vec(any::<Edit>(), 0..12))
}

/// Splits bytes at the given cut points.
fn chunks<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for p in points {
        out.push(&bytes[start..p]);
        start = p;
    }
    out.push(&bytes[start..]);
    out
}

fn feed_sse(chunks: &[&[u8]]) -> SseReader {
    let mut r = SseReader::default();
    for c in chunks {
        r.feed(c, Instant::now());
    }
    r
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sse_reader_reads_the_same_whatever_the_chunking_and_survives_mutations(
        (pick, edits) in mutation(),
        cuts in prop::collection::vec(any::<usize>(), 0..24),
    ) {
        let seeds = corpus("sse");
        let seed = &seeds[pick % seeds.len()];
        let whole = feed_sse(&[seed]).facts;
        let split = feed_sse(&chunks(seed, &cuts)).facts;
        prop_assert_eq!(&whole.usage, &split.usage);
        prop_assert_eq!(whole.stop_reason, split.stop_reason);
        prop_assert_eq!(whole.complete, split.complete);
        let mutated = mutate(seed, &edits);
        let _ = feed_sse(&chunks(&mutated, &cuts));
    }

    #[test]
    fn event_stream_decoder_errors_but_never_panics_and_frames_survive_any_chunking(
        (pick, edits) in mutation(),
        cuts in prop::collection::vec(any::<usize>(), 0..24),
        texts in prop::collection::vec("[ -~]{0,64}", 1..4),
    ) {
        let seeds = corpus("eventstream");
        let mutated = mutate(&seeds[pick % seeds.len()], &edits);
        let mut d = Decoder::default();
        for c in chunks(&mutated, &cuts) {
            match d.feed(c) {
                Ok(messages) => messages.iter().for_each(|m| { let _ = message_to_sse(m); }),
                Err(e) => { prop_assert!(e.contains("malformed")); break; }
            }
        }
        // Frames tollgate writes decode to as many messages, however cut.
        let mut stream = Vec::new();
        for t in &texts {
            stream.extend_from_slice(&chunk_frame(serde_json::json!({"type": "ping", "t": t}).to_string().as_bytes()));
        }
        let mut d = Decoder::default();
        let mut n = 0;
        for c in chunks(&stream, &cuts) {
            n += d.feed(c).unwrap().len();
        }
        prop_assert_eq!(n, texts.len());
    }

    #[test]
    fn config_loader_refuses_with_a_message_but_never_panics((pick, edits) in mutation()) {
        let seeds = corpus("config");
        let mutated = mutate(&seeds[pick % seeds.len()], &edits);
        if let Ok(text) = std::str::from_utf8(&mutated)
            && let Err(e) = Config::parse(text, Path::new("fuzz.toml")) {
                prop_assert!(!e.to_string().is_empty());
            }
    }

    #[test]
    fn metadata_header_is_an_object_of_strings_or_a_named_refusal((pick, edits) in mutation()) {
        let seeds = corpus("metadata");
        let mutated = mutate(&seeds[pick % seeds.len()], &edits);
        let Ok(value) = HeaderValue::from_bytes(&mutated) else { return Ok(()) };
        let mut headers = HeaderMap::new();
        headers.insert("x-tollgate-metadata", value);
        match RequestTags::from_headers(&headers) {
            Ok(tags) => prop_assert!(tags.metadata.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() <= 4096),
            Err(e) => prop_assert!(e.to_string().contains("x-tollgate-metadata")),
        }
    }

    #[test]
    fn client_routing_configs_never_panic_and_never_move_on_from_a_2xx(
        (pick, edits) in mutation(),
        status in 100u16..600,
    ) {
        let seeds = corpus("route_config");
        let mutated = mutate(&seeds[pick % seeds.len()], &edits);
        let Ok(value) = HeaderValue::from_bytes(&mutated) else { return Ok(()) };
        let mut headers = HeaderMap::new();
        headers.insert("x-tollgate-config", value);
        let allowed = ClientRouting { allow_config: true, routes: Vec::new() };
        match route::resolve(&headers, &RouteConfig::single("a"), &BTreeMap::new(), &allowed) {
            Ok(r) => {
                let metadata = BTreeMap::new();
                let plan = r.plan(&route::Facts { model: Some("m"), metadata: &metadata });
                prop_assert!(plan.len() <= r.targets.len());
                if (200..300).contains(&status) {
                    prop_assert!(!r.falls_back_on(status) && !r.retries_on(status));
                }
            }
            Err(e) => prop_assert!(e.to_string().contains("x-tollgate-config")),
        }
    }

    #[test]
    fn cursors_round_trip_and_hostile_ones_are_refused(
        (pick, edits) in mutation(),
        text in "\\PC{0,80}",
        value in -1e15f64..1e15,
    ) {
        let seeds = corpus("cursor");
        let mutated = mutate(&seeds[pick % seeds.len()], &edits);
        if let Some(c) = Cursor::decode(&String::from_utf8_lossy(&mutated)) {
            prop_assert!(c.value.is_finite());
        }
        if let Some(c) = Cursor::decode(&text) {
            prop_assert!(c.value.is_finite());
        }
        let seed = Cursor::decode(std::str::from_utf8(&seeds[0]).unwrap()).expect("the corpus cursor decodes");
        let c = Cursor { value, ..seed };
        prop_assert_eq!(Cursor::decode(&c.encode()), Some(c));
    }
}

#[test]
fn a_cursor_carrying_nan_or_infinity_is_refused() {
    use base64::Engine;
    for value in ["NaN", "inf", "-inf", "1e400"] {
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
            "started_at|d|{value}|0192f4e0-0000-7000-8000-000000000000"
        ));
        assert!(Cursor::decode(&text).is_none(), "{value}");
    }
}
