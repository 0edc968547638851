//! One open topic: its recovery when first opened (a torn tail cut, the
//! sparse index rebuilt) and its append path (the writer: encode, write,
//! fsync, publish, roll), plus where a reader of it starts.
//!
//! Separate from [`super::EmbeddedLog`], which only finds topics by name:
//! everything that must agree on the state of one topic's segments (the
//! writer lock, the published end, the segment list) lives here.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::cursor::SegmentCursor;
use super::files::{ensure_dir, list_segments, segment_name, sync_dir};
use super::frame::{Frame, HEADER_LEN, encode_frame};
use super::{EmbeddedLogError, MAX_RECORD_BYTES, io_err};

/// A sparse index entry is kept about every this many bytes of a segment, so
/// a reader starting mid-segment scans at most this far to find its offset.
const INDEX_INTERVAL: u64 = 1024 * 1024;

/// One open topic: its writer and what readers may see.
pub(super) struct Topic {
    /// Topic name, for errors.
    pub(super) name: String,
    /// The topic's directory.
    pub(super) dir: PathBuf,
    /// The tail segment, locked for the duration of one append.
    pub(super) writer: Mutex<Writer>,
    /// What appends have made durable and visible; locked only to copy or
    /// update a few numbers.
    published: Mutex<Published>,
    /// Copy of `published.end` for lock-free [`super::EmbeddedLog::end_offset`].
    pub(super) end: AtomicU64,
    /// Serialises what rewrites or deletes sealed segments (compaction,
    /// retention), which readers and appends never wait on.
    pub(super) maintenance: Mutex<()>,
    /// Base of the segment the last compaction wrote, so an unchanged
    /// topic is not rewritten again.
    pub(super) compacted: Mutex<Option<u64>>,
}

/// The writable tail segment of a topic.
pub(super) struct Writer {
    /// Open for appending.
    file: File,
    /// Its path, for errors.
    path: PathBuf,
    /// Offset of its first record.
    pub(super) base: u64,
    /// Bytes in it (all durable).
    pub(super) len: u64,
    /// Offset the next record gets.
    next_offset: u64,
    /// Byte position at or after which the next sparse index entry is taken.
    next_index_pos: u64,
    /// Encode buffer, reused across appends to avoid reallocating.
    scratch: Vec<u8>,
    /// Set when a failed append could not be undone; appends then refuse.
    pub(super) failed: bool,
}

/// The part of a topic's state readers need, updated after each fsync.
pub(super) struct Published {
    /// Offset the next record gets = records durable so far.
    pub(super) end: u64,
    /// Base offset of the segment being appended to.
    pub(super) active_base: u64,
    /// Durable bytes in that segment; readers read no further.
    pub(super) active_len: u64,
    /// Every segment known, ascending by base; the last is the active one.
    pub(super) segments: Vec<SegmentIndex>,
    /// Bumped whenever sealed segments are rewritten or deleted: a reader
    /// that opened a segment under an older generation finds its next one
    /// by offset again, since the file it read may have been replaced.
    pub(super) generation: u64,
}

/// Sparse index of one segment.
pub(super) struct SegmentIndex {
    /// Offset of the segment's first record (its file name).
    pub(super) base: u64,
    /// `(offset, byte position)` of some frames, ascending; empty for
    /// segments sealed before this process opened the topic.
    pub(super) entries: Vec<(u64, u64)>,
}

impl Topic {
    /// Opens (creating) a topic directory and recovers its last segment:
    /// verifies every frame and cuts a torn tail left by a crash.
    pub(super) fn open(root: &Path, name: &str) -> Result<Topic, EmbeddedLogError> {
        let dir = root.join(name);
        ensure_dir(&dir, root)?;
        let mut bases = list_segments(&dir)?;
        let new_topic = bases.is_empty();
        if new_topic {
            bases.push(0);
        }
        let base = bases[bases.len() - 1];
        let path = dir.join(segment_name(base));
        let file = crate::private_fs::open_options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        if new_topic {
            // Make the first segment's directory entry durable.
            sync_dir(&dir)?;
        }
        let file_len = file.metadata().map_err(io_err("stat", &path))?.len();

        let mut cursor = SegmentCursor::open(path.clone(), base, 0)?;
        let mut next_offset = base;
        let mut entries = Vec::new();
        let mut next_index_pos = 0;
        let good_len = loop {
            match cursor
                .next_frame(file_len, 0, false)
                .map_err(io_err("read", &path))?
            {
                Frame::Whole { offset, pos, .. } => {
                    if offset != next_offset {
                        // A frame with a valid checksum is not a torn write.
                        return Err(EmbeddedLogError::Corrupt {
                            path,
                            position: pos,
                            reason: format!("record has offset {offset}, expected {next_offset}"),
                        });
                    }
                    if pos >= next_index_pos {
                        entries.push((offset, pos));
                        next_index_pos = pos + INDEX_INTERVAL;
                    }
                    next_offset += 1;
                }
                Frame::Skipped | Frame::End => break file_len,
                Frame::Bad { pos, reason } => {
                    tracing::warn!(
                        file = %path.display(),
                        cut_bytes = file_len - pos,
                        kept_bytes = pos,
                        kept_records = next_offset - base,
                        reason,
                        "embedded log: cutting a torn tail (a write interrupted by a crash) off the last segment"
                    );
                    file.set_len(pos).map_err(io_err("truncate", &path))?;
                    file.sync_all().map_err(io_err("fsync", &path))?;
                    break pos;
                }
            }
        };
        drop(cursor);

        let mut segments: Vec<SegmentIndex> = bases
            .iter()
            .map(|&base| SegmentIndex {
                base,
                entries: Vec::new(),
            })
            .collect();
        if let Some(last) = segments.last_mut() {
            last.entries = entries;
        }
        Ok(Topic {
            name: name.to_owned(),
            dir,
            end: AtomicU64::new(next_offset),
            published: Mutex::new(Published {
                end: next_offset,
                active_base: base,
                active_len: good_len,
                segments,
                generation: 0,
            }),
            writer: Mutex::new(Writer {
                file,
                path,
                base,
                len: good_len,
                next_offset,
                next_index_pos,
                scratch: Vec::new(),
                failed: false,
            }),
            maintenance: Mutex::new(()),
            compacted: Mutex::new(None),
        })
    }

    /// Locks the published state (poisoning cannot leave it inconsistent:
    /// it is only assigned whole values).
    pub(super) fn published(&self) -> MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `(end, active_base, active_len)` as of now.
    pub(super) fn snapshot(&self) -> (u64, u64, u64) {
        let p = self.published();
        (p.end, p.active_base, p.active_len)
    }

    /// Appends a batch under the writer lock: roll if needed, one write, one
    /// fsync, then publish. Returns the first record's offset.
    pub(super) fn append(
        &self,
        records: &[(&[u8], &[u8])],
        segment_bytes: u64,
    ) -> Result<u64, EmbeddedLogError> {
        let mut batch_bytes = 0u64;
        for (key, payload) in records {
            let size = key.len() + payload.len();
            if size > MAX_RECORD_BYTES {
                return Err(EmbeddedLogError::RecordTooLarge {
                    topic: self.name.clone(),
                    size,
                });
            }
            batch_bytes += (HEADER_LEN + size) as u64;
        }
        let mut w = match self.writer.lock() {
            Ok(w) => w,
            Err(poisoned) => {
                // A panic mid-append leaves the file's tail unknown.
                let mut w = poisoned.into_inner();
                w.failed = true;
                w
            }
        };
        if w.failed {
            return Err(EmbeddedLogError::WriterFailed {
                topic: self.name.clone(),
                path: w.path.clone(),
            });
        }
        if records.is_empty() {
            return Ok(w.next_offset);
        }
        if w.len > 0 && w.len + batch_bytes > segment_bytes {
            self.roll(&mut w)?;
        }

        let w = &mut *w;
        let first = w.next_offset;
        let saved_index_pos = w.next_index_pos;
        let mut new_entries = Vec::new();
        w.scratch.clear();
        w.scratch.reserve(batch_bytes as usize);
        for (i, (key, payload)) in records.iter().enumerate() {
            let offset = first + i as u64;
            let pos = w.len + w.scratch.len() as u64;
            if pos >= w.next_index_pos {
                new_entries.push((offset, pos));
                w.next_index_pos = pos + INDEX_INTERVAL;
            }
            encode_frame(&mut w.scratch, offset, key, payload);
        }
        let written = w
            .file
            .write_all(&w.scratch)
            .map_err(io_err("write", &w.path))
            .and_then(|()| w.file.sync_data().map_err(io_err("fsync", &w.path)));
        if w.scratch.capacity() > 16 * 1024 * 1024 {
            w.scratch = Vec::new();
        }
        if let Err(e) = written {
            // Take the batch back out so the next append starts on a frame
            // boundary; readers never saw it (it was not published).
            w.next_index_pos = saved_index_pos;
            if w.file.set_len(w.len).is_err() {
                w.failed = true;
            }
            return Err(e);
        }
        w.len += batch_bytes;
        w.next_offset += records.len() as u64;

        let mut p = self.published();
        if p.segments.last().map(|s| s.base) != Some(w.base) {
            p.segments.push(SegmentIndex {
                base: w.base,
                entries: Vec::new(),
            });
        }
        if let Some(last) = p.segments.last_mut() {
            last.entries.extend(new_entries);
        }
        p.end = w.next_offset;
        p.active_base = w.base;
        p.active_len = w.len;
        self.end.store(w.next_offset, Ordering::Release);
        Ok(first)
    }

    /// Starts a new segment named by the next offset. The old one is already
    /// durable; the new one's directory entry is made durable too.
    pub(super) fn roll(&self, w: &mut Writer) -> Result<(), EmbeddedLogError> {
        let path = self.dir.join(segment_name(w.next_offset));
        let file = crate::private_fs::open_options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        // Only an empty file can be left here (by a roll that crashed before
        // its first write); anything else would be overwritten history.
        let len = file.metadata().map_err(io_err("stat", &path))?.len();
        if len != 0 {
            return Err(EmbeddedLogError::Corrupt {
                path,
                position: 0,
                reason: format!("segment to roll into already holds {len} bytes"),
            });
        }
        sync_dir(&self.dir)?;
        w.file = file;
        w.path = path;
        w.base = w.next_offset;
        w.len = 0;
        w.next_index_pos = 0;
        Ok(())
    }

    /// Where a reader starting at `offset` should open: segment base, a
    /// byte position at or before the offset's frame, and the generation
    /// of the segment list it was found in. Before the first segment (its
    /// records deleted by retention) means the first segment's start.
    fn locate(&self, offset: u64) -> (u64, u64, u64) {
        let p = self.published();
        let i = p.segments.partition_point(|s| s.base <= offset);
        let Some(seg) = p.segments.get(i.saturating_sub(1)) else {
            return (0, 0, p.generation);
        };
        let j = seg.entries.partition_point(|&(o, _)| o <= offset);
        match j.checked_sub(1).map(|j| seg.entries[j]) {
            Some((_, pos)) => (seg.base, pos, p.generation),
            None => (seg.base, 0, p.generation),
        }
    }

    /// Opens a cursor for a reader whose next record is `offset`. A
    /// segment deleted between finding and opening it (compaction,
    /// retention) is looked up again.
    pub(super) fn open_cursor(&self, offset: u64) -> Result<SegmentCursor, EmbeddedLogError> {
        let mut tries = 0;
        loop {
            let (base, pos, generation) = self.locate(offset);
            match SegmentCursor::open(self.dir.join(segment_name(base)), base, pos) {
                Ok(mut cursor) => {
                    cursor.generation = generation;
                    return Ok(cursor);
                }
                Err(EmbeddedLogError::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound && tries < 3 =>
                {
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The segment a reader goes on to once it read all of the sealed
    /// segment `cursor`: the next one by base, or, if segments were
    /// rewritten since the cursor opened, wherever `next` now is.
    pub(super) fn next_cursor(
        &self,
        cursor: &SegmentCursor,
        next: u64,
    ) -> Result<Option<SegmentCursor>, EmbeddedLogError> {
        let following = {
            let p = self.published();
            if p.generation != cursor.generation {
                None
            } else {
                match p.segments.iter().find(|s| s.base > cursor.base) {
                    Some(s) => Some((s.base, p.generation)),
                    None => return Ok(None),
                }
            }
        };
        match following {
            None => self.open_cursor(next).map(Some),
            Some((base, generation)) => {
                match SegmentCursor::open(self.dir.join(segment_name(base)), base, 0) {
                    Ok(mut c) => {
                        c.generation = generation;
                        Ok(Some(c))
                    }
                    Err(EmbeddedLogError::Io { source, .. })
                        if source.kind() == io::ErrorKind::NotFound =>
                    {
                        self.open_cursor(next).map(Some)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::sync::Arc;

    use super::super::tests::{append_numbered, check_segmented, read_text, small_segments};
    use super::super::{EmbeddedLog, LogOptions};
    use super::*;

    #[test]
    fn offsets_continue_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = EmbeddedLog::open(dir.path()).unwrap();
            append_numbered(&log, "t", 0..3);
        }
        let log = EmbeddedLog::open(dir.path()).unwrap();
        assert_eq!(log.end_offset("t").unwrap(), 3);
        assert_eq!(log.append("t", &[(b"", b"record-3")]).unwrap(), 3);
        let all = read_text(&log, "t", 0, 10);
        assert_eq!(all.len(), 4);
        assert_eq!(all[3], (3, "record-3".into()));
    }

    #[test]
    fn torn_tail_is_truncated_on_reopen_and_appends_continue_at_the_right_offset() {
        // Each way a crash can leave the tail: part of a frame, garbage, and
        // a whole frame whose bytes did not all reach the disk.
        let mut whole = Vec::new();
        encode_frame(&mut whole, 2, b"k", b"torn record");
        let mut bad_crc = whole.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0xff;
        let tails: [(&str, Vec<u8>); 4] = [
            ("partial frame", whole[..whole.len() - 3].to_vec()),
            ("partial header", whole[..6].to_vec()),
            ("garbage", vec![0xab; 37]),
            ("bad checksum", bad_crc),
        ];
        for (what, tail) in tails {
            let dir = tempfile::tempdir().unwrap();
            let seg = dir.path().join("t").join(segment_name(0));
            let good_len = {
                let log = EmbeddedLog::open(dir.path()).unwrap();
                append_numbered(&log, "t", 0..2);
                std::fs::metadata(&seg).unwrap().len()
            };
            let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
            f.write_all(&tail).unwrap();
            drop(f);

            let log = EmbeddedLog::open(dir.path()).unwrap();
            assert_eq!(log.end_offset("t").unwrap(), 2, "{what}");
            assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len, "{what}");
            assert_eq!(log.append("t", &[(b"", b"record-2")]).unwrap(), 2, "{what}");
            let all = read_text(&log, "t", 0, 10);
            let texts: Vec<_> = all.iter().map(|(_, p)| p.as_str()).collect();
            assert_eq!(texts, ["record-0", "record-1", "record-2"], "{what}");
            drop(log);
            // And the repaired log reopens cleanly.
            let log = EmbeddedLog::open(dir.path()).unwrap();
            assert_eq!(log.end_offset("t").unwrap(), 3, "{what}");
        }
    }

    #[test]
    fn valid_frame_with_wrong_offset_in_the_last_segment_is_an_error_not_a_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = EmbeddedLog::open(dir.path()).unwrap();
            append_numbered(&log, "t", 0..2);
        }
        let seg = dir.path().join("t").join(segment_name(0));
        let mut frame = Vec::new();
        encode_frame(&mut frame, 7, b"", b"out of place");
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&frame).unwrap();
        drop(f);
        let len = std::fs::metadata(&seg).unwrap().len();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        let err = log.end_offset("t").unwrap_err();
        assert!(matches!(err, EmbeddedLogError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("expected 2"), "{err}");
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), len, "nothing cut");
    }

    #[test]
    fn segments_roll_and_reads_cross_them_including_from_mid_segment() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = EmbeddedLog::open_with(dir.path(), small_segments()).unwrap();
            append_numbered(&log, "t", 0..30);
            // A batch bigger than a segment still goes in whole.
            let batch: Vec<String> = (30..40).map(|i| format!("record-{i}")).collect();
            let refs: Vec<(&[u8], &[u8])> =
                batch.iter().map(|p| (&b"k"[..], p.as_bytes())).collect();
            assert_eq!(log.append("t", &refs).unwrap(), 30);
            check_segmented(&log, 40);
        }
        let bases = list_segments(&dir.path().join("t")).unwrap();
        assert!(bases.len() >= 5, "{bases:?}");
        assert_eq!(bases[0], 0);
        for base in &bases {
            let len = std::fs::metadata(dir.path().join("t").join(segment_name(*base)))
                .unwrap()
                .len();
            assert!(len <= 200 || *base == 30, "segment {base} has {len} bytes");
        }
        // After reopening, sealed segments have no index: readers scan.
        let log = EmbeddedLog::open_with(dir.path(), small_segments()).unwrap();
        assert_eq!(log.end_offset("t").unwrap(), 40);
        check_segmented(&log, 40);
        append_numbered(&log, "t", 40..45);
        check_segmented(&log, 45);
    }

    #[test]
    fn sparse_index_lets_readers_start_deep_inside_a_large_segment() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        let payload = vec![1u8; 4096];
        let batch: Vec<(&[u8], &[u8])> = (0..1024).map(|_| (&b""[..], &payload[..])).collect();
        log.append("t", &batch).unwrap(); // ~4 MiB: several index entries
        let entries = log.topic("t").unwrap().published().segments[0]
            .entries
            .len();
        assert!(entries >= 4, "{entries} index entries");
        let got = log.read("t", 1000, 2).unwrap();
        assert_eq!(
            got.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [1000, 1001]
        );
        drop(log);
        // Recovery rebuilds the active segment's index.
        let log = EmbeddedLog::open(dir.path()).unwrap();
        let rebuilt = log.topic("t").unwrap().published().segments[0]
            .entries
            .len();
        assert_eq!(rebuilt, entries);
        assert_eq!(log.read("t", 1023, 5).unwrap()[0].offset, 1023);
    }

    #[test]
    fn concurrent_appends_from_several_threads_yield_unique_contiguous_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(
            EmbeddedLog::open_with(
                dir.path(),
                LogOptions {
                    segment_bytes: 4096,
                },
            )
            .unwrap(),
        );
        let threads = 4u64;
        let batches = 40u64;
        let per_batch = 3u64;
        // A reader running alongside must only ever see whole, ordered data.
        let tail = {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut r = log.reader("t", 0).unwrap();
                let mut seen = 0u64;
                while seen < threads * batches * per_batch {
                    for rec in r.read(50).unwrap() {
                        assert_eq!(rec.offset, seen);
                        seen += 1;
                    }
                }
                seen
            })
        };
        let writers: Vec<_> = (0..threads)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut firsts = Vec::new();
                    for b in 0..batches {
                        let p = format!("{t}-{b}");
                        let batch = [(&b"k"[..], p.as_bytes()); 3];
                        firsts.push((log.append("t", &batch).unwrap(), p));
                    }
                    firsts
                })
            })
            .collect();
        let mut firsts: Vec<(u64, String)> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        firsts.sort();
        assert_eq!(tail.join().unwrap(), threads * batches * per_batch);
        let all = read_text(&log, "t", 0, 10_000);
        assert_eq!(all.len() as u64, threads * batches * per_batch);
        for (i, (first, p)) in firsts.iter().enumerate() {
            assert_eq!(
                *first,
                i as u64 * per_batch,
                "batches get contiguous offsets"
            );
            for j in 0..per_batch {
                assert_eq!(&all[(*first + j) as usize].1, p, "batch stays together");
            }
        }
        assert_eq!(log.end_offset("t").unwrap(), threads * batches * per_batch);
    }

    #[test]
    fn oversized_record_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        let huge = vec![0u8; MAX_RECORD_BYTES + 1];
        let err = log
            .append("t", &[(b"", b"fine"), (b"", &huge)])
            .unwrap_err();
        assert!(
            matches!(err, EmbeddedLogError::RecordTooLarge { .. }),
            "{err}"
        );
        assert_eq!(log.end_offset("t").unwrap(), 0);
    }
}
