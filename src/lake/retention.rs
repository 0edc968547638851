//! Lake retention: `[lake] retention_days` for raw events and
//! `rollup_retention_days` for rollups (hourly and daily alike).
//!
//! Data is deleted by whole day partitions: a `day=D` directory older than
//! the limit (D before today minus the days kept) loses every file, never
//! part of a day. The sink's compactor runs it after each compaction, for
//! the bus partitions it owns (many sinks sharing a bucket each delete
//! their own partitions' files, as they each compact their own).
//!
//! Every deletion is recorded before it happens, in the lake itself: one
//! JSON object per table, day and run under
//! `_retention/<table>/day=D/<unix ms>-<first partition>.json`, naming
//! every file deleted (with its partition, offsets and size), the limit
//! and the time. Written first, so a crash halfway leaves a record of
//! what was meant to go; kept in the lake, so the audit lives as long as
//! the data's home does and needs no other store. Each run is also
//! logged.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{NaiveDate, TimeDelta, Utc};
use serde::Serialize;

use super::LakeError;
use super::files::{LakeLayout, ListedFile};
use super::object::LakeConfig;
use super::rollup::day_of_path;

/// How many days each table keeps (`None`: for ever).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub raw_days: Option<u32>,
    pub rollup_days: Option<u32>,
}

impl Retention {
    /// The limits `[lake]` sets (0 means keep).
    pub fn from_config(cfg: &LakeConfig) -> Retention {
        let days = |d: u32| (d > 0).then_some(d);
        Retention {
            raw_days: days(cfg.retention_days),
            rollup_days: days(cfg.rollup_retention_days),
        }
    }

    /// Whether anything is ever deleted.
    pub fn is_active(&self) -> bool {
        self.raw_days.is_some() || self.rollup_days.is_some()
    }
}

/// One file in an audit record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeletedFile {
    pub path: String,
    pub partition: u32,
    pub first_offset: u64,
    pub last_offset: u64,
    pub bytes: u64,
}

/// The audit record of one table's day deleted by one run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RetentionRecord {
    pub table: &'static str,
    pub day: NaiveDate,
    pub retention_days: u32,
    pub deleted_at: chrono::DateTime<Utc>,
    pub files: Vec<DeletedFile>,
}

/// What one run deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    pub days: usize,
    pub files: usize,
    pub bytes: u64,
}

/// Deletes what `retention` no longer keeps as of `today`, of the
/// partitions `owned` says are this process's, recording each day first.
pub fn apply(
    layout: &LakeLayout,
    retention: &Retention,
    today: NaiveDate,
    owned: &dyn Fn(u32) -> bool,
) -> Result<RetentionReport, LakeError> {
    let mut report = RetentionReport::default();
    if let Some(days) = retention.raw_days {
        let files = layout.listing()?;
        expire(layout, "events", files, days, today, owned, &mut report)?;
    }
    if let Some(days) = retention.rollup_days {
        for (table, files) in [
            ("events_daily", layout.daily_listing()?),
            ("events_hourly", layout.hourly_listing()?),
        ] {
            expire(layout, table, files, days, today, owned, &mut report)?;
        }
    }
    if report.files > 0 {
        tracing::info!(?report, "lake retention deleted expired days");
    }
    Ok(report)
}

/// Deletes the owned files of `table`'s days older than `days`.
fn expire(
    layout: &LakeLayout,
    table: &'static str,
    files: Vec<ListedFile>,
    days: u32,
    today: NaiveDate,
    owned: &dyn Fn(u32) -> bool,
    report: &mut RetentionReport,
) -> Result<(), LakeError> {
    let cutoff = today - TimeDelta::days(i64::from(days));
    let mut expired: BTreeMap<NaiveDate, Vec<ListedFile>> = BTreeMap::new();
    for f in files {
        match day_of_path(&f.path) {
            Some(day) if day < cutoff && owned(f.partition) => {
                expired.entry(day).or_default().push(f)
            }
            _ => {}
        }
    }
    for (day, files) in expired {
        let record = RetentionRecord {
            table,
            day,
            retention_days: days,
            deleted_at: Utc::now(),
            files: files.iter().map(deleted_file).collect(),
        };
        record_deletion(layout, &record)?;
        for f in &files {
            layout.remove(&f.path)?;
            report.bytes += f.bytes;
        }
        report.files += files.len();
        report.days += 1;
        remove_empty_dir(layout, &files[0].path);
    }
    Ok(())
}

/// A listed file as its audit record names it.
fn deleted_file(f: &ListedFile) -> DeletedFile {
    DeletedFile {
        path: f.path.display().to_string(),
        partition: f.partition,
        first_offset: f.first,
        last_offset: f.last,
        bytes: f.bytes,
    }
}

/// Writes the audit record of a deletion about to happen.
fn record_deletion(layout: &LakeLayout, record: &RetentionRecord) -> Result<(), LakeError> {
    let first = record.files.iter().map(|f| f.partition).min().unwrap_or(0);
    let path = audit_dir(layout)
        .join(record.table)
        .join(format!("day={}", record.day))
        .join(format!(
            "{}-p{first:05}.json",
            record.deleted_at.timestamp_millis()
        ));
    let data = serde_json::to_vec_pretty(record).map_err(|e| LakeError::Write {
        path: path.clone(),
        message: e.to_string(),
    })?;
    layout.put_bytes(&path, data)
}

/// Where audit records of deletions go.
pub fn audit_dir(layout: &LakeLayout) -> std::path::PathBuf {
    layout.root().join("_retention")
}

/// Removes a local `day=` directory left empty (a bucket has none).
fn remove_empty_dir(layout: &LakeLayout, file: &Path) {
    if layout.remote().is_none()
        && let Some(dir) = file.parent()
    {
        // Not empty (another owner's partitions, a temp file): kept.
        let _ = std::fs::remove_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::sample_event;
    use crate::event::{BusPosition, to_record_batch};
    use crate::lake::files::WriteMode;

    /// One event file (and its rollup) of `day` in partition `p`.
    fn write_day(layout: &LakeLayout, day: NaiveDate, p: u32) {
        let mut e = sample_event();
        e.started_at = day.and_hms_opt(12, 0, 0).unwrap().and_utc();
        let pos = BusPosition {
            partition: p,
            offset: 0,
        };
        let batch = to_record_batch(&[(pos, &e)]).unwrap();
        let path = layout.file_path(day, p, 0, 0);
        layout.write(&path, &batch, WriteMode::New).unwrap();
        crate::lake::rollup::write_for(layout, &path, &[batch], WriteMode::New).unwrap();
    }

    fn days(files: Vec<ListedFile>) -> Vec<(NaiveDate, u32)> {
        let mut out: Vec<_> = files
            .iter()
            .map(|f| (day_of_path(&f.path).unwrap(), f.partition))
            .collect();
        out.sort();
        out
    }

    /// Ten days of files in partitions 0 and 1, then retention of 3 days
    /// for raw events and 6 for rollups, for partition 0 only: a day goes
    /// once its last moment is older than the limit (today and the 3 or 6
    /// days before it stay).
    fn check(layout: &LakeLayout) {
        let today = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        for back in 0..10 {
            for p in [0, 1] {
                write_day(layout, today - TimeDelta::days(back), p);
            }
        }
        let retention = Retention {
            raw_days: Some(3),
            rollup_days: Some(6),
        };
        let report = apply(layout, &retention, today, &|p| p == 0).unwrap();
        // Raw: 6 days; rollups: 3 days of events_hourly and of events_daily.
        assert_eq!((report.days, report.files), (6 + 3 + 3, 6 + 3 + 3));
        let raw = days(layout.listing().unwrap());
        assert_eq!(raw.iter().filter(|(_, p)| *p == 0).count(), 4);
        assert!(
            raw.iter()
                .filter(|(_, p)| *p == 0)
                .all(|(d, _)| *d >= today - TimeDelta::days(3))
        );
        assert_eq!(
            raw.iter().filter(|(_, p)| *p == 1).count(),
            10,
            "not owned: kept"
        );
        for rollups in [layout.hourly_listing(), layout.daily_listing()] {
            let rollups = days(rollups.unwrap());
            assert_eq!(rollups.iter().filter(|(_, p)| *p == 0).count(), 7);
        }
        let again = apply(layout, &retention, today, &|p| p == 0).unwrap();
        assert_eq!(again, RetentionReport::default(), "nothing left to delete");
    }

    #[test]
    fn expired_days_are_deleted_whole_and_recorded_on_local_disk() {
        let dir = tempfile::tempdir().unwrap();
        let layout = LakeLayout::new(dir.path());
        check(&layout);
        let audit = audit_dir(&layout).join("events");
        let days: Vec<_> = std::fs::read_dir(&audit).unwrap().flatten().collect();
        assert_eq!(days.len(), 6);
        let day = audit.join("day=2026-11-21");
        let record = std::fs::read_dir(&day)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
        assert_eq!(record["table"], "events");
        assert_eq!(record["retention_days"], 3);
        assert_eq!(record["files"].as_array().unwrap().len(), 1);
        assert!(
            !dir.path()
                .join("events/day=2026-11-21")
                .join("p00000-00000000000000000000-00000000000000000000.parquet")
                .exists()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_days_are_deleted_whole_and_recorded_in_a_bucket() {
        let layout = crate::lake::object::in_memory_layout();
        let l = layout.clone();
        let audit = tokio::task::spawn_blocking(move || {
            check(&l);
            l.remote().unwrap().list(&audit_dir(&l)).unwrap()
        })
        .await
        .unwrap();
        assert_eq!(
            audit.len(),
            6 + 3 + 3,
            "one record per table and day: {audit:?}"
        );
    }
}
