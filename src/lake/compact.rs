//! Compaction: many small sink files become a few large sorted ones.
//!
//! The sink writes one file per flush, so a busy day holds hundreds of
//! small files, each needing its own footer read and bloom filter probe.
//! Compaction merges a run of consecutive files of one partition and day
//! into one file named by the run's whole offset range, sorted by the
//! hour of `started_at`, then `trace_id`, then `started_at` (see
//! [`sorted`]): a time range's raw rows (the edges of a spend query) and a
//! trace's rows both sit in a few row groups and pages.
//!
//! Nothing is lost or doubled at any point: the merged file is complete
//! (temp file, fsync, rename) before its inputs are deleted, and readers
//! ([`super::store::LakeStore`]) never list a file whose range another file
//! covers. Inputs left behind by a crash are deleted by the next run.
//!
//! In a bucket, the merged file is one complete upload (the commit point)
//! and its inputs are left for the next run to delete: query processes
//! may reuse a file listing for up to the sink's flush interval, and one
//! taken just before the merge must still find the files it names.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch};
use arrow::compute::{SortColumn, SortOptions, concat_batches, lexsort_to_indices, take};
use arrow::datatypes::TimestampMillisecondType;

use super::LakeError;
use super::files::{LakeLayout, WriteMode, file_name};
use super::rollup::{self, HOUR_MS};

/// What counts as small and how large a merged file may grow.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Files at least this large are left alone.
    pub small_file_bytes: u64,
    /// A merged file holds at most this many rows.
    pub max_rows: usize,
    /// Fewer small files than this in a run are not worth a rewrite.
    pub min_files: usize,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            small_file_bytes: 32 * 1024 * 1024,
            max_rows: 1_000_000,
            min_files: 4,
        }
    }
}

/// What one compaction run did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CompactReport {
    pub files_merged: usize,
    pub files_written: usize,
    pub rows: usize,
    /// Inputs of an earlier, interrupted run that were deleted.
    pub leftovers_deleted: usize,
    /// Hourly rollups written for files that had none.
    pub rollups_repaired: usize,
    /// Rollups of merged inputs that were deleted (left in a bucket, as
    /// their raw files are, for the next run).
    pub rollups_deleted: usize,
}

/// One lake file as compaction sees it.
#[derive(Debug, Clone)]
struct LakeFile {
    path: PathBuf,
    first: u64,
    last: u64,
    bytes: u64,
}

/// Compacts every day and partition of the lake (`tollgate compact`).
pub fn compact(layout: &LakeLayout, opts: &CompactOptions) -> Result<CompactReport, LakeError> {
    compact_owned(layout, opts, &|_| true)
}

/// Compacts the partitions `owned` says this process owns, and no other:
/// sinks on many machines share one lake, and each compacts only the bus
/// partitions it is assigned, so no two compactors work on the same
/// files. Ownership is asked again for each partition and day, just
/// before its files are merged.
pub fn compact_owned(
    layout: &LakeLayout,
    opts: &CompactOptions,
    owned: &dyn Fn(u32) -> bool,
) -> Result<CompactReport, LakeError> {
    // Rollups of inputs merged by an earlier run go first (in a bucket a
    // run never deletes what it merged itself: see the module docs), then
    // files without a rollup get one.
    let mut report = CompactReport {
        rollups_deleted: rollup::delete_superseded(layout, owned)?,
        rollups_repaired: rollup::repair(layout, owned)?,
        ..CompactReport::default()
    };
    let mut groups: BTreeMap<(PathBuf, u32), Vec<LakeFile>> = BTreeMap::new();
    for f in layout.listing()? {
        let dir = f.path.parent().map(PathBuf::from).unwrap_or_default();
        groups
            .entry((dir, f.partition))
            .or_default()
            .push(LakeFile {
                path: f.path,
                first: f.first,
                last: f.last,
                bytes: f.bytes,
            });
    }
    for ((dir, partition), files) in groups {
        if !owned(partition) {
            continue;
        }
        let files = delete_superseded(layout, files, &mut report)?;
        for run in runs(&files, opts) {
            merge(layout, &dir, partition, run, &mut report)?;
        }
    }

    crate::metrics::METRICS
        .lake_compacted_files
        .inc_by(report.files_merged as u64);
    Ok(report)
}

/// Deletes files another file covers (what an interrupted run left) and
/// returns the rest in offset order.
fn delete_superseded(
    layout: &LakeLayout,
    mut files: Vec<LakeFile>,
    report: &mut CompactReport,
) -> Result<Vec<LakeFile>, LakeError> {
    files.sort_by_key(|f| (f.first, std::cmp::Reverse(f.last)));
    let mut kept: Vec<LakeFile> = Vec::with_capacity(files.len());
    for f in files {
        if kept.iter().any(|k| k.first <= f.first && f.last <= k.last) {
            layout.remove(&f.path)?;
            report.leftovers_deleted += 1;
        } else {
            kept.push(f);
        }
    }
    Ok(kept)
}

/// Runs of consecutive small files worth merging. A large file breaks a
/// run: the merged range must never cover a file that is not merged.
fn runs<'a>(files: &'a [LakeFile], opts: &CompactOptions) -> Vec<&'a [LakeFile]> {
    let mut out = Vec::new();
    let mut start = 0;
    // Rows are unknown without opening files; bytes bound the run instead,
    // at a generous ~100 bytes per compressed row.
    let max_bytes = (opts.max_rows as u64).saturating_mul(100);
    let mut run_bytes = 0u64;
    for (i, f) in files.iter().enumerate() {
        let small = f.bytes < opts.small_file_bytes;
        if !small || run_bytes + f.bytes > max_bytes {
            if i - start >= opts.min_files {
                out.push(&files[start..i]);
            }
            start = if small { i } else { i + 1 };
            run_bytes = if small { f.bytes } else { 0 };
            continue;
        }
        run_bytes += f.bytes;
    }
    if files.len() - start >= opts.min_files {
        out.push(&files[start..]);
    }
    out
}

/// Writes the run as one sorted file, then deletes its inputs (locally;
/// in a bucket the next run does, see the module docs).
fn merge(
    layout: &LakeLayout,
    dir: &std::path::Path,
    partition: u32,
    run: &[LakeFile],
    report: &mut CompactReport,
) -> Result<(), LakeError> {
    let (first, last) = (run[0].first, run[run.len() - 1].last);
    let mut batches = Vec::new();
    for f in run {
        batches.extend(layout.read(&f.path)?);
    }
    let merged = sorted(&batches).map_err(|message| LakeError::Write {
        path: dir.to_owned(),
        message,
    })?;
    let path = dir.join(file_name(partition, first, last));
    layout.write(&path, &merged, WriteMode::New)?;
    // The merged rollup covers the inputs' rollups, which readers then
    // no longer see: every hour is counted once.
    rollup::write_for(layout, &path, std::slice::from_ref(&merged), WriteMode::New)?;
    if layout.remote().is_none() {
        for f in run {
            layout.remove(&f.path)?;
            for r in [
                layout.hourly_path_of(&f.path),
                layout.daily_path_of(&f.path),
            ]
            .into_iter()
            .flatten()
            {
                layout.remove(&r)?;
            }
        }
    }
    report.files_merged += run.len();
    report.files_written += 1;
    report.rows += merged.num_rows();
    Ok(())
}

/// All rows in one batch sorted by the hour of `started_at`, `trace_id`,
/// `started_at`.
///
/// Hour first, so the raw rows of part of a day (the edges of a spend
/// query, answered from raw events around the hourly rollups) are a few
/// row groups and pages found by their `started_at` statistics, instead
/// of every page of the day's files. Trace second, so within an hour a
/// trace's rows are together: trace IDs the gateway makes are UUIDv7,
/// ordered by time, so row groups also hold narrow trace ranges and a
/// lookup is pruned by statistics to about one row group per file; a
/// client's own random trace IDs fall back on the bloom filters.
pub fn sorted(batches: &[RecordBatch]) -> Result<RecordBatch, String> {
    let schema = crate::event::arrow_schema();
    let all = concat_batches(&schema, batches).map_err(|e| e.to_string())?;
    let column = |name: &str| -> Result<ArrayRef, String> {
        all.column_by_name(name)
            .cloned()
            .ok_or_else(|| format!("column {name} missing"))
    };
    let key = |values: ArrayRef| SortColumn {
        values,
        options: Some(SortOptions::default()),
    };
    let started = column("started_at")?;
    let hours: Int64Array = started
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or("started_at is not a millisecond timestamp")?
        .unary(|ms| ms.div_euclid(HOUR_MS));
    let keys = [key(Arc::new(hours)), key(column("trace_id")?), key(started)];
    let indices = lexsort_to_indices(&keys, None).map_err(|e| e.to_string())?;
    let columns = all
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), &indices, None))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::files::{read_file, write_atomically};

    fn file(first: u64, last: u64, bytes: u64) -> LakeFile {
        LakeFile {
            path: PathBuf::from(format!("p0-{first}-{last}")),
            first,
            last,
            bytes,
        }
    }

    #[test]
    fn a_large_file_splits_runs_so_no_merged_range_covers_it() {
        let opts = CompactOptions {
            small_file_bytes: 100,
            max_rows: 1_000_000,
            min_files: 2,
        };
        let files = [
            file(0, 9, 10),
            file(10, 19, 10),
            file(20, 29, 500),
            file(30, 39, 10),
            file(40, 49, 10),
            file(50, 59, 10),
        ];
        let runs: Vec<(u64, u64)> = runs(&files, &opts)
            .iter()
            .map(|r| (r[0].first, r[r.len() - 1].last))
            .collect();
        assert_eq!(runs, vec![(0, 19), (30, 59)]);
    }

    /// Writes `n` files of `rows` events each for partition 0 of one day.
    fn write_small_files(layout: &LakeLayout, n: u64, rows: u64) -> Vec<PathBuf> {
        use crate::event::{BusPosition, to_record_batch};
        let day = chrono::Utc::now().date_naive();
        // One hour for every row, so the merged file is sorted by trace.
        let noon = day.and_hms_opt(12, 0, 0).expect("noon").and_utc();
        (0..n)
            .map(|f| {
                let events: Vec<_> = (0..rows)
                    .map(|i| {
                        let mut e = crate::event::tests::sample_event();
                        e.trace_id = format!("trace-{}", (f * rows + i) % 7);
                        e.started_at = noon;
                        e.ended_at = noon;
                        e
                    })
                    .collect();
                let with_pos: Vec<_> = events
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        let pos = BusPosition {
                            partition: 0,
                            offset: f * rows + i as u64,
                        };
                        (pos, e)
                    })
                    .collect();
                let path = layout.file_path(day, 0, f * rows, f * rows + rows - 1);
                write_atomically(&path, &to_record_batch(&with_pos).unwrap()).unwrap();
                path
            })
            .collect()
    }

    async fn count_rows(layout: &LakeLayout) -> (usize, usize) {
        let lake = crate::lake::query::Lake::open(layout).await.unwrap();
        let limits = crate::lake::query::SqlLimits {
            max_rows: 10,
            timeout: std::time::Duration::from_secs(30),
        };
        let sql = "SELECT count(*) AS n, count(DISTINCT bus_offset) AS d FROM events";
        let r = lake
            .sql(&crate::lake::query::Scope::All, sql, limits)
            .await
            .unwrap();
        let n = |k: &str| r.rows[0][k].as_u64().unwrap() as usize;
        (n("n"), n("d"))
    }

    #[test]
    fn rows_sort_by_hour_then_trace_then_time() {
        use chrono::TimeZone;
        let at = |h: u32, m: u32| chrono::Utc.with_ymd_and_hms(2026, 11, 2, h, m, 0).unwrap();
        let input = [
            (at(10, 30), "b"),
            (at(9, 10), "z"),
            (at(10, 5), "a"),
            (at(10, 1), "b"),
            (at(9, 59), "a"),
        ];
        let events: Vec<_> = input
            .iter()
            .map(|(t, trace)| {
                let mut e = crate::event::tests::sample_event();
                e.started_at = *t;
                e.trace_id = (*trace).to_owned();
                e
            })
            .collect();
        let out = sorted(&[crate::event::tests::batch_of(&events)]).unwrap();
        let traces = out.column_by_name("trace_id").unwrap().as_string::<i32>();
        let times = out
            .column_by_name("started_at")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        let got: Vec<(i64, &str)> = (0..out.num_rows())
            .map(|i| (times.value(i), traces.value(i)))
            .collect();
        let ms = |h, m| at(h, m).timestamp_millis();
        assert_eq!(
            got,
            vec![
                (ms(9, 59), "a"),
                (ms(9, 10), "z"),
                (ms(10, 5), "a"),
                (ms(10, 1), "b"),
                (ms(10, 30), "b"),
            ]
        );
    }

    #[tokio::test]
    async fn merged_files_are_sorted_and_inputs_left_by_a_crash_are_hidden_then_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let layout = LakeLayout::new(dir.path());
        let inputs = write_small_files(&layout, 5, 20);
        let saved = std::fs::read(&inputs[2]).unwrap();
        let opts = CompactOptions {
            min_files: 2,
            ..CompactOptions::default()
        };
        let report = compact(&layout, &opts).unwrap();
        assert_eq!(
            (report.files_merged, report.files_written, report.rows),
            (5, 1, 100)
        );
        let files = layout.files().unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!((files[0].2, files[0].3), (0, 99));
        let merged = read_file(&files[0].0).unwrap();
        let traces = merged[0]
            .column_by_name("trace_id")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap()
            .iter()
            .map(|t| t.unwrap().to_owned())
            .collect::<Vec<_>>();
        assert!(
            traces.windows(2).all(|w| w[0] <= w[1]),
            "one hour: sorted by trace"
        );
        assert_eq!(count_rows(&layout).await, (100, 100));

        // A crash between writing the merged file and deleting an input.
        std::fs::write(&inputs[2], saved).unwrap();
        assert_eq!(count_rows(&layout).await, (100, 100), "no row twice");
        let report = compact(&layout, &opts).unwrap();
        assert_eq!(report.leftovers_deleted, 1);
        assert!(!inputs[2].exists());
        assert_eq!(count_rows(&layout).await, (100, 100));
    }

    #[test]
    fn a_sink_compacts_only_the_partitions_it_owns() {
        let dir = tempfile::tempdir().unwrap();
        let layout = LakeLayout::new(dir.path());
        write_small_files(&layout, 3, 5);
        let day = chrono::Utc::now().date_naive();
        for f in 0..3u64 {
            let e = crate::event::tests::sample_event();
            let pos = crate::event::BusPosition {
                partition: 1,
                offset: f,
            };
            let batch = crate::event::to_record_batch(&[(pos, &e)]).unwrap();
            write_atomically(&layout.file_path(day, 1, f, f), &batch).unwrap();
        }
        let opts = CompactOptions {
            min_files: 2,
            ..CompactOptions::default()
        };
        let report = compact_owned(&layout, &opts, &|p| p == 1).unwrap();
        assert_eq!((report.files_merged, report.rows), (3, 3));
        let mut left: Vec<(u32, u64, u64)> = layout
            .files()
            .unwrap()
            .into_iter()
            .map(|(_, p, f, l)| (p, f, l))
            .collect();
        left.sort();
        assert_eq!(left, vec![(0, 0, 4), (0, 5, 9), (0, 10, 14), (1, 0, 2)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_a_bucket_merged_inputs_stay_hidden_until_the_next_run_deletes_them() {
        let layout = crate::lake::object::in_memory_layout();
        let l = layout.clone();
        let first = tokio::task::spawn_blocking(move || {
            for f in 0..4u64 {
                let events: Vec<_> = (0..5u64)
                    .map(|i| {
                        let mut e = crate::event::tests::sample_event();
                        e.trace_id = format!("trace-{}", (f * 5 + i) % 3);
                        e
                    })
                    .collect();
                let rows: Vec<_> = events
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        let pos = crate::event::BusPosition {
                            partition: 0,
                            offset: f * 5 + i as u64,
                        };
                        (pos, e)
                    })
                    .collect();
                let batch = crate::event::to_record_batch(&rows).unwrap();
                let path = l.file_path(chrono::Utc::now().date_naive(), 0, f * 5, f * 5 + 4);
                l.write(&path, &batch, WriteMode::New).unwrap();
            }
            let opts = CompactOptions {
                min_files: 2,
                ..CompactOptions::default()
            };
            compact(&l, &opts).unwrap()
        })
        .await
        .unwrap();
        assert_eq!((first.files_merged, first.rows), (4, 20));
        assert_eq!(layout.remote().map(|_| ()), Some(()));
        assert_eq!(count_rows(&layout).await, (20, 20), "inputs hidden");
        let l = layout.clone();
        let (second, left) = tokio::task::spawn_blocking(move || {
            let r = compact(&l, &CompactOptions::default()).unwrap();
            (r, l.files().unwrap())
        })
        .await
        .unwrap();
        assert_eq!(second.leftovers_deleted, 4);
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].2, left[0].3), (0, 19));
        assert_eq!(count_rows(&layout).await, (20, 20));
    }

    #[test]
    fn a_run_shorter_than_min_files_is_left_alone() {
        let opts = CompactOptions {
            small_file_bytes: 100,
            max_rows: 1_000_000,
            min_files: 3,
        };
        let files = [file(0, 9, 10), file(10, 19, 10), file(20, 29, 500)];
        assert!(runs(&files, &opts).is_empty());
    }
}
