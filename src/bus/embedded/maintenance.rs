//! Keeping the embedded log's size in check: compaction of keyed state
//! topics and retention of the others.
//!
//! Both only touch sealed segments (never the one being appended to) and
//! run under the topic's maintenance lock, never its writer lock, so
//! appends and reads go on meanwhile. Readers keep working across them:
//! they find records by offset, a deleted file stays readable through an
//! open handle, and a reader whose segment list changed looks its place
//! up again (see `Topic::next_cursor`).
//!
//! - **Compaction** (the budgets topic: only the newest record of each key
//!   matters) rewrites every sealed segment into one holding the newest
//!   record of each key, keeping their offsets. A state topic then costs a
//!   reader from offset 0 about one record per key plus the active segment,
//!   which compaction rolls once it passes a size, instead of its whole
//!   history. A crash at any step leaves segments whose in-order reading
//!   still ends with the newest record of every key.
//! - **Retention** deletes whole sealed segments last written before a
//!   cut-off, but never one holding a record at or past the lowest offset a
//!   consumer group committed (a topic no group committed on keeps
//!   everything): what the accountant, sink or notifier has not taken, or
//!   the budget state does not cover yet, stays.

use std::collections::HashMap;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::files::{OFFSET_SUFFIX, SEGMENT_SUFFIX, segment_name, sync_dir, valid_name};
use super::frame::encode_frame;
use super::topic::{SegmentIndex, Topic};
use super::{EmbeddedLog, EmbeddedLogError, LogReader, io_err};

/// What one compaction did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactReport {
    /// Sealed segments rewritten (replaced by one).
    pub segments: usize,
    /// Records they held.
    pub records_read: u64,
    /// Records kept: the newest of each key (and every unkeyed one).
    pub records_kept: u64,
}

/// Records read per step of a maintenance scan.
const SCAN_BATCH: usize = 4096;

impl EmbeddedLog {
    /// Compacts `topic`: first rolls its active segment if it holds more
    /// than `roll_above` bytes, then rewrites its sealed segments keeping
    /// only the newest record of each key (in the whole topic: a key
    /// rewritten in the active segment loses its sealed records). Does
    /// nothing when the sealed part is the output of the last compaction.
    pub fn compact(&self, topic: &str, roll_above: u64) -> Result<CompactReport, EmbeddedLogError> {
        let t = self.topic(topic)?;
        let _maintenance = t.maintenance.lock().unwrap_or_else(|p| p.into_inner());
        t.roll_if_above(roll_above)?;
        let (sealed, active_base, end) = {
            let p = t.published();
            let sealed: Vec<u64> = p.segments[..p.segments.len() - 1]
                .iter()
                .map(|s| s.base)
                .collect();
            (sealed, p.active_base, p.end)
        };
        let done_before = *t.compacted.lock().unwrap_or_else(|p| p.into_inner());
        if sealed.is_empty() || (sealed.len() == 1 && done_before == Some(sealed[0])) {
            return Ok(CompactReport::default());
        }
        let latest = latest_offsets(&t, sealed[0], end)?;
        let tmp = t.dir.join(format!("compacting{SEGMENT_SUFFIX}.tmp"));
        let (first_kept, records_read, records_kept) =
            write_kept(&t, sealed[0], active_base, &latest, &tmp)?;
        t.install_compacted(&sealed, first_kept, &tmp)?;
        Ok(CompactReport {
            segments: sealed.len(),
            records_read,
            records_kept,
        })
    }

    /// Deletes the sealed segments of `topic` that every consumer group has
    /// committed past, so a long-running log does not grow without bound.
    /// A topic no group has committed on keeps everything. Returns how many
    /// segments were deleted.
    pub fn delete_consumed(&self, topic: &str) -> Result<usize, EmbeddedLogError> {
        self.delete_segments(topic, None)
    }

    /// Deletes the sealed segments of `topic` last written before `cutoff`
    /// that every consumer group has committed past (see the module doc).
    /// Returns how many were deleted.
    pub fn delete_expired(
        &self,
        topic: &str,
        cutoff: SystemTime,
    ) -> Result<usize, EmbeddedLogError> {
        self.delete_segments(topic, Some(cutoff))
    }

    /// Deletes, oldest first, sealed segments wholly below every group's
    /// committed offset and, if `cutoff` is given, last written before it.
    fn delete_segments(
        &self,
        topic: &str,
        cutoff: Option<SystemTime>,
    ) -> Result<usize, EmbeddedLogError> {
        let t = self.topic(topic)?;
        let _maintenance = t.maintenance.lock().unwrap_or_else(|p| p.into_inner());
        if t.published().segments.len() < 2 {
            return Ok(0);
        }
        let Some(floor) = self.committed_floor(&t)? else {
            return Ok(0);
        };
        let bases: Vec<u64> = t.published().segments.iter().map(|s| s.base).collect();
        // Segment i holds only offsets below segment i+1's base; the
        // active (last) segment is never deleted.
        let mut n = 0;
        while n + 1 < bases.len() && bases[n + 1] <= floor {
            if let Some(cutoff) = cutoff {
                let path = t.dir.join(segment_name(bases[n]));
                let written = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .map_err(io_err("stat", &path))?;
                if written >= cutoff {
                    break;
                }
            }
            n += 1;
        }
        t.forget_segments(&bases[..n], None)?;
        if n > 0 {
            tracing::info!(
                topic,
                segments = n,
                below = floor,
                retention = cutoff.is_some(),
                "embedded log: deleted old segments"
            );
        }
        Ok(n)
    }

    /// The lowest offset any consumer group of the topic committed; `None`
    /// if none did.
    fn committed_floor(&self, t: &Topic) -> Result<Option<u64>, EmbeddedLogError> {
        let mut low: Option<u64> = None;
        for entry in std::fs::read_dir(&t.dir).map_err(io_err("list", &t.dir))? {
            let entry = entry.map_err(io_err("list", &t.dir))?;
            let name = entry.file_name();
            let Some(group) = name.to_str().and_then(|n| n.strip_suffix(OFFSET_SUFFIX)) else {
                continue;
            };
            let next = self.committed(group, &t.name)?;
            low = Some(low.map_or(next, |l| l.min(next)));
        }
        Ok(low)
    }

    /// Names of the topics on disk (directories with valid topic names).
    pub fn topics_on_disk(&self) -> Result<Vec<String>, EmbeddedLogError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io_err("list", &self.root))? {
            let entry = entry.map_err(io_err("list", &self.root))?;
            let is_dir = entry
                .file_type()
                .map_err(io_err("stat", &entry.path()))?
                .is_dir();
            if let Some(name) = entry
                .file_name()
                .to_str()
                .filter(|n| is_dir && valid_name(n))
            {
                out.push(name.to_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Opens (and so recovers) every topic on disk now, so that later uses
    /// find them ready: callers run this on a blocking thread at start-up.
    pub fn recover_all(&self) -> Result<Vec<String>, EmbeddedLogError> {
        let topics = self.topics_on_disk()?;
        for topic in &topics {
            self.topic(topic)?;
        }
        Ok(topics)
    }
}

/// The offset of the newest record of each key in `[from, end)`.
fn latest_offsets(
    t: &Arc<Topic>,
    from: u64,
    end: u64,
) -> Result<HashMap<Bytes, u64>, EmbeddedLogError> {
    let mut latest = HashMap::new();
    let mut reader = LogReader::new(t.clone(), from);
    while reader.position() < end {
        let records = reader.read(SCAN_BATCH)?;
        if records.is_empty() {
            break;
        }
        for r in records.into_iter().filter(|r| r.offset < end) {
            latest.insert(r.key, r.offset);
        }
    }
    Ok(latest)
}

/// Writes the records of `[from, below)` that are the newest of their key
/// (or have no key) to `tmp`, fsync'd. Returns the first kept offset (if
/// any), records read and records kept.
fn write_kept(
    t: &Arc<Topic>,
    from: u64,
    below: u64,
    latest: &HashMap<Bytes, u64>,
    tmp: &Path,
) -> Result<(Option<u64>, u64, u64), EmbeddedLogError> {
    let file = crate::private_fs::create_file(tmp).map_err(io_err("create", tmp))?;
    let mut out = BufWriter::new(file);
    let mut reader = LogReader::new(t.clone(), from);
    let (mut first, mut read, mut kept) = (None, 0u64, 0u64);
    let mut frame = Vec::new();
    'scan: while reader.position() < below {
        let records = reader.read(SCAN_BATCH)?;
        if records.is_empty() {
            break;
        }
        for r in records {
            if r.offset >= below {
                break 'scan;
            }
            read += 1;
            if !r.key.is_empty() && latest.get(&r.key) != Some(&r.offset) {
                continue;
            }
            frame.clear();
            encode_frame(&mut frame, r.offset, &r.key, &r.payload);
            out.write_all(&frame).map_err(io_err("write", tmp))?;
            first.get_or_insert(r.offset);
            kept += 1;
        }
    }
    let file = out
        .into_inner()
        .map_err(|e| io_err("write", tmp)(e.into_error()))?;
    file.sync_all().map_err(io_err("fsync", tmp))?;
    Ok((first, read, kept))
}

impl Topic {
    /// Seals the active segment if it holds more than `above` bytes, so
    /// its records can be compacted.
    fn roll_if_above(&self, above: u64) -> Result<(), EmbeddedLogError> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if w.failed || w.len <= above {
            return Ok(());
        }
        self.roll(&mut w)?;
        let mut p = self.published();
        p.segments.push(SegmentIndex {
            base: w.base,
            entries: Vec::new(),
        });
        p.active_base = w.base;
        p.active_len = 0;
        Ok(())
    }

    /// Puts the compacted segment `tmp` in place of the sealed segments
    /// `old`: renamed to the name of its first record (possibly over an old
    /// segment of that name), published, then the rest of `old` deleted.
    fn install_compacted(
        &self,
        old: &[u64],
        first_kept: Option<u64>,
        tmp: &Path,
    ) -> Result<(), EmbeddedLogError> {
        match first_kept {
            Some(first) => {
                let path = self.dir.join(segment_name(first));
                std::fs::rename(tmp, &path).map_err(io_err("rename into place", &path))?;
                sync_dir(&self.dir)?;
            }
            None => std::fs::remove_file(tmp).map_err(io_err("delete", tmp))?,
        }
        self.forget_segments(old, first_kept)?;
        *self.compacted.lock().unwrap_or_else(|p| p.into_inner()) = first_kept;
        Ok(())
    }

    /// Drops the sealed segments `bases` from the published list (adding
    /// `replacement` in their place) and deletes their files, except the
    /// replacement's, which now holds the compacted records.
    fn forget_segments(
        &self,
        bases: &[u64],
        replacement: Option<u64>,
    ) -> Result<(), EmbeddedLogError> {
        if bases.is_empty() {
            return Ok(());
        }
        {
            let mut p = self.published();
            p.segments.retain(|s| !bases.contains(&s.base));
            if let Some(base) = replacement {
                let at = p.segments.partition_point(|s| s.base < base);
                p.segments.insert(
                    at,
                    SegmentIndex {
                        base,
                        entries: Vec::new(),
                    },
                );
            }
            p.generation += 1;
        }
        for base in bases.iter().filter(|b| Some(**b) != replacement) {
            let path = self.dir.join(segment_name(*base));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("delete segment", &path)(e)),
            }
        }
        sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::LogOptions;
    use super::super::files::list_segments;
    use super::*;

    fn small_segments() -> LogOptions {
        LogOptions { segment_bytes: 300 }
    }

    /// `(offset, key, payload)` of every record from `from`.
    fn all(log: &EmbeddedLog, topic: &str, from: u64) -> Vec<(u64, String, String)> {
        let text = |b: &Bytes| String::from_utf8(b.to_vec()).unwrap();
        log.read(topic, from, 100_000)
            .unwrap()
            .iter()
            .map(|r| (r.offset, text(&r.key), text(&r.payload)))
            .collect()
    }

    /// `n` records cycling over `keys` keys: key `k{i % keys}`, payload `v{i}`.
    fn append_keyed(log: &EmbeddedLog, topic: &str, range: std::ops::Range<u64>, keys: u64) {
        for i in range {
            let (k, v) = (format!("k{}", i % keys), format!("v{i}"));
            log.append(topic, &[(k.as_bytes(), v.as_bytes())]).unwrap();
        }
    }

    #[test]
    fn compaction_keeps_the_newest_record_of_each_key_and_readers_see_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open_with(dir.path(), small_segments()).unwrap();
        append_keyed(&log, "s", 0..200, 3);
        // A reader part-way through when compaction runs.
        let mut early = log.reader("s", 0).unwrap();
        let head = early.read(10).unwrap();
        assert_eq!(head.len(), 10);

        let report = log.compact("s", 0).unwrap();
        assert!(report.segments > 1, "{report:?}");
        assert_eq!(report.records_read, 200);
        assert_eq!(report.records_kept, 3, "one per key: {report:?}");
        let after = all(&log, "s", 0);
        assert_eq!(
            after,
            vec![
                (197, "k2".into(), "v197".into()),
                (198, "k0".into(), "v198".into()),
                (199, "k1".into(), "v199".into()),
            ]
        );
        // The early reader goes on by offset and ends on the same state.
        let mut rest = Vec::new();
        loop {
            let batch = early.read(7).unwrap();
            if batch.is_empty() {
                break;
            }
            rest.extend(batch);
        }
        assert_eq!(rest.last().map(|r| r.offset), Some(199));
        assert!(rest.windows(2).all(|w| w[0].offset < w[1].offset));
        // Appends and a second compaction go on; the state survives a reopen.
        append_keyed(&log, "s", 200..210, 3);
        assert_eq!(log.end_offset("s").unwrap(), 210);
        log.compact("s", 0).unwrap();
        drop(log);
        let log = EmbeddedLog::open_with(dir.path(), small_segments()).unwrap();
        let reopened = all(&log, "s", 0);
        assert_eq!(
            reopened.iter().map(|r| r.0).collect::<Vec<_>>(),
            [207, 208, 209]
        );
        assert_eq!(log.append("s", &[(b"k0", b"new")]).unwrap(), 210);
    }

    #[test]
    fn compacting_an_already_compacted_topic_rewrites_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open_with(dir.path(), small_segments()).unwrap();
        append_keyed(&log, "s", 0..50, 2);
        log.compact("s", 0).unwrap();
        assert_eq!(
            log.compact("s", u64::MAX).unwrap(),
            CompactReport::default()
        );
    }

    #[test]
    fn retention_deletes_old_segments_only_below_every_groups_committed_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open_with(dir.path(), small_segments()).unwrap();
        append_keyed(&log, "e", 0..100, 100);
        let segments = || list_segments(&dir.path().join("e")).unwrap();
        let before = segments();
        assert!(before.len() > 4, "{before:?}");
        let future = SystemTime::now() + Duration::from_secs(3600);
        // No consumer committed: nothing goes, however old.
        assert_eq!(log.delete_expired("e", future).unwrap(), 0);
        log.commit("fast", "e", 100).unwrap();
        log.commit("slow", "e", before[2] + 1).unwrap();
        // Nothing is old enough yet.
        let past = SystemTime::now() - Duration::from_secs(3600);
        assert_eq!(log.delete_expired("e", past).unwrap(), 0);
        // Old enough: only the segments wholly below the slow group's offset.
        assert_eq!(log.delete_expired("e", future).unwrap(), 2);
        assert_eq!(segments(), before[2..].to_vec());
        // A reader from 0 starts at the first record kept.
        let kept = all(&log, "e", 0);
        assert_eq!(kept.first().map(|r| r.0), Some(before[2]));
        assert_eq!(kept.last().map(|r| r.0), Some(99));
        log.commit("slow", "e", 100).unwrap();
        log.delete_expired("e", future).unwrap();
        assert_eq!(segments().len(), 1, "the active segment always stays");
        assert_eq!(log.append("e", &[(b"", b"x")]).unwrap(), 100);
    }
}
