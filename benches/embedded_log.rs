//! Embedded log throughput: appends 1 KiB records in fsync'd batches of
//! 256, then reads them back sequentially, twice, through the log's public
//! API (`tollgate::bus::embedded::EmbeddedLog`).
//!
//! Run with `cargo bench --bench embedded_log`. `TOLLGATE_LOG_BENCH_DIR`
//! picks the disk the log is written to (default: the temp directory), since
//! the append figure is mostly the disk's fsync latency. Prints figures;
//! asserts nothing about speed.

use std::path::PathBuf;
use std::time::Instant;

use tollgate::bus::embedded::EmbeddedLog;

/// Bytes of each record's payload.
const PAYLOAD_BYTES: usize = 1024;
/// Records per append call: one write and one fsync each.
const BATCH: usize = 256;
/// Append calls.
const BATCHES: usize = 400;
/// Topic written and read.
const TOPIC: &str = "bench";

fn main() {
    let dir = bench_dir();
    let log = EmbeddedLog::open(dir.path()).expect("open the embedded log");
    let records = append_all(&log);
    for pass in ["first (page cache warm)", "second"] {
        read_all(&log, pass, records);
    }
}

/// A fresh temp directory, under `TOLLGATE_LOG_BENCH_DIR` when set.
fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("TOLLGATE_LOG_BENCH_DIR").map(PathBuf::from) {
        Some(base) => tempfile::tempdir_in(&base)
            .unwrap_or_else(|e| panic!("temp dir in {}: {e}", base.display())),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

/// Appends [`BATCHES`] batches of [`BATCH`] records, prints the rate, and
/// returns how many records were appended.
fn append_all(log: &EmbeddedLog) -> usize {
    let payload = vec![0x5au8; PAYLOAD_BYTES];
    let batch: Vec<(&[u8], &[u8])> = (0..BATCH)
        .map(|_| (&b"key-0001"[..], &payload[..]))
        .collect();
    let t = Instant::now();
    for _ in 0..BATCHES {
        log.append(TOPIC, &batch).expect("append a batch");
    }
    let secs = t.elapsed().as_secs_f64();
    let n = (BATCHES * BATCH) as f64;
    println!(
        "append: {n} records of 1 KiB in {BATCHES} fsync'd batches of {BATCH}: {:.0} records/s, {:.0} batches/s, {:.1} MB/s",
        n / secs,
        BATCHES as f64 / secs,
        n * PAYLOAD_BYTES as f64 / secs / 1e6
    );
    BATCHES * BATCH
}

/// Reads the whole topic from offset 0 with one reader, checks that all
/// `expected` records came back, and prints the rate.
fn read_all(log: &EmbeddedLog, pass: &str, expected: usize) {
    let t = Instant::now();
    let mut reader = log.reader(TOPIC, 0).expect("open a reader");
    let (mut count, mut bytes) = (0usize, 0usize);
    loop {
        let got = reader.read(1024).expect("read records");
        if got.is_empty() {
            break;
        }
        count += got.len();
        bytes += got
            .iter()
            .map(|r| r.key.len() + r.payload.len())
            .sum::<usize>();
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(count, expected, "every appended record is read back");
    println!(
        "read {pass}: {count} records, {:.0} MB/s, {:.0} records/s",
        bytes as f64 / secs / 1e6,
        count as f64 / secs
    );
}
