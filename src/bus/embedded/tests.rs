//! Tests of the whole log through its public face: round trips, file
//! permissions, the directory lock, and deletion of consumed segments
//! (which needs commits, retention, reads and a reopen together). The
//! helpers here are shared with the tests beside each part.

use std::path::Path;

use super::cursor::READ_BUF;
use super::files::{list_segments, segment_name};
use super::*;

/// Offsets and payloads (as text) of up to `max` records from `from`.
pub(super) fn read_text(
    log: &EmbeddedLog,
    topic: &str,
    from: u64,
    max: usize,
) -> Vec<(u64, String)> {
    log.read(topic, from, max)
        .unwrap()
        .into_iter()
        .map(|r| (r.offset, String::from_utf8(r.payload.to_vec()).unwrap()))
        .collect()
}

/// `n` numbered records appended one per call.
pub(super) fn append_numbered(log: &EmbeddedLog, topic: &str, range: std::ops::Range<u32>) {
    for i in range {
        let p = format!("record-{i}");
        log.append(topic, &[(b"k", p.as_bytes())]).unwrap();
    }
}

/// Segments of 200 bytes: a few records roll one.
pub(super) fn small_segments() -> LogOptions {
    LogOptions { segment_bytes: 200 }
}

/// Reads `0..n` whole, in small steps, and from every start offset.
pub(super) fn check_segmented(log: &EmbeddedLog, n: u64) {
    let all = read_text(log, "t", 0, 1000);
    assert_eq!(all.len() as u64, n);
    for (i, (offset, text)) in all.iter().enumerate() {
        assert_eq!(
            (*offset, text.as_str()),
            (i as u64, format!("record-{i}").as_str())
        );
    }
    let mut r = log.reader("t", 0).unwrap();
    let mut stepped = Vec::new();
    loop {
        let got = r.read(3).unwrap();
        if got.is_empty() {
            break;
        }
        stepped.extend(got.into_iter().map(|r| r.offset));
    }
    assert_eq!(stepped, (0..n).collect::<Vec<_>>());
    for from in 0..n {
        let got = read_text(log, "t", from, 4);
        let want: Vec<u64> = (from..(from + 4).min(n)).collect();
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            want,
            "from {from}"
        );
        assert_eq!(got[0].1, format!("record-{from}"));
    }
    assert!(log.read("t", n, 10).unwrap().is_empty());
    assert!(log.read("t", n + 5, 10).unwrap().is_empty());
}

#[test]
fn log_and_reader_are_send_and_sync_as_documented() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send + 'static>() {}
    send_sync::<EmbeddedLog>();
    send::<LogReader>();
}

#[test]
fn append_then_read_round_trips_keys_payloads_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path()).unwrap();
    assert_eq!(log.end_offset("t").unwrap(), 0);
    assert_eq!(log.append("t", &[(b"k1", b"a"), (b"", b"b")]).unwrap(), 0);
    // Larger than the read buffer, to exercise its growth.
    let big = vec![7u8; 3 * READ_BUF + 5];
    assert_eq!(log.append("t", &[(b"big", &big), (b"k3", b"")]).unwrap(), 2);
    assert_eq!(log.append("t", &[]).unwrap(), 4);
    assert_eq!(log.end_offset("t").unwrap(), 4);

    let mut r = log.reader("t", 0).unwrap();
    let recs = r.read(100).unwrap();
    assert_eq!(
        recs.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert_eq!(
        (&recs[0].key[..], &recs[0].payload[..]),
        (&b"k1"[..], &b"a"[..])
    );
    assert_eq!(
        (&recs[1].key[..], &recs[1].payload[..]),
        (&b""[..], &b"b"[..])
    );
    assert_eq!(
        (&recs[2].key[..], recs[2].payload.len()),
        (&b"big"[..], big.len())
    );
    assert!(recs[2].payload.iter().all(|&b| b == 7));
    assert_eq!(
        (&recs[3].key[..], &recs[3].payload[..]),
        (&b"k3"[..], &b""[..])
    );
    assert!(r.read(100).unwrap().is_empty());
    assert_eq!(r.position(), 4);
    // Reading in small steps gives the same records.
    let mut r = log.reader("t", 1).unwrap();
    assert_eq!(r.read(1).unwrap()[0].offset, 1);
    assert_eq!(
        r.read(2)
            .unwrap()
            .iter()
            .map(|r| r.offset)
            .collect::<Vec<_>>(),
        [2, 3]
    );
    // Topics are independent.
    assert_eq!(log.append("other", &[(b"", b"x")]).unwrap(), 0);
    assert_eq!(read_text(&log, "other", 0, 10), [(0, "x".into())]);
}

#[cfg(unix)]
#[test]
fn the_log_creates_owner_only_directories_and_files() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data").join("log");
    let log = EmbeddedLog::open_with(&dir, small_segments()).unwrap();
    append_numbered(&log, "t", 0..20);
    log.commit("g", "t", 3).unwrap();
    assert_eq!(mode(&root.path().join("data")), 0o700);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("t")), 0o700);
    assert_eq!(mode(&dir.join("LOCK")), 0o600);
    assert_eq!(mode(&dir.join("t").join("g.offset")), 0o600);
    let segments = list_segments(&dir.join("t")).unwrap();
    assert!(segments.len() > 1, "rolled: {segments:?}");
    for base in segments {
        assert_eq!(mode(&dir.join("t").join(segment_name(base))), 0o600);
    }
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_while_the_first_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path()).unwrap();
    let err = EmbeddedLog::open(dir.path()).err().unwrap();
    assert!(matches!(err, EmbeddedLogError::Locked { .. }), "{err}");
    drop(log);
    EmbeddedLog::open(dir.path()).unwrap();
}

#[test]
fn consumed_segments_are_deleted_and_reading_after_them_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open_with(dir.path(), small_segments()).unwrap();
    append_numbered(&log, "t", 0..200);
    let segments = || list_segments(&dir.path().join("t")).unwrap().len();
    let before = segments();
    assert!(
        before > 2,
        "small segments should have rolled, got {before}"
    );
    assert_eq!(
        log.delete_consumed("t").unwrap(),
        0,
        "no group committed yet: keep all"
    );
    log.commit("a", "t", 150).unwrap();
    log.commit("b", "t", 40).unwrap();
    let deleted = log.delete_consumed("t").unwrap();
    assert!(deleted > 0 && segments() < before);
    assert_eq!(
        read_text(&log, "t", 40, 1)[0].0,
        40,
        "the slowest group still reads its next record"
    );
    log.commit("b", "t", 200).unwrap();
    log.delete_consumed("t").unwrap();
    assert!(
        segments() > 1,
        "group a (at 150) still holds the later segments"
    );
    log.commit("a", "t", 200).unwrap();
    log.delete_consumed("t").unwrap();
    assert_eq!(
        segments(),
        1,
        "everything consumed: only the active segment is left"
    );
    drop(log);
    let log = EmbeddedLog::open_with(dir.path(), small_segments()).unwrap();
    append_numbered(&log, "t", 200..201);
    assert_eq!(
        read_text(&log, "t", 200, 5)[0].0,
        200,
        "offsets continue after reopen"
    );
}
