//! The embedded on-disk log: the default event bus, so tollgate needs no
//! Kafka (or anything else) installed to run every role in one process.
//!
//! # Layout
//!
//! ```text
//! <root>/LOCK                                  held (flock) while a process has the log open
//! <root>/<topic>/00000000000000000000.log      segment, named by the offset of its first record
//! <root>/<topic>/00000000000000004096.log      next segment, rolled past `segment_bytes`
//! <root>/<topic>/<group>.offset                consumer group's next offset, decimal text
//! ```
//!
//! Every record is framed as (all little endian)
//! `len u32 | crc32 u32 | offset u64 | key_len u32 | key | payload`, where
//! `len` counts everything after the crc and the crc (crc32fast) covers the
//! same bytes. A write torn by a crash therefore shows up as a frame that is
//! short or fails its checksum, and is cut off when the topic is opened.
//!
//! # Concurrency
//!
//! [`EmbeddedLog`] is `Send + Sync` and meant to be shared behind an `Arc`.
//! Appends to one topic are serialised by a per-topic mutex held only for
//! encode + write + fsync + publish; each [`LogReader`] has its own file
//! handle and only takes a short lock to copy the published end of the log,
//! so readers never wait on an fsync. Readers never look at bytes past the
//! published (fsync'd) end, so they cannot see a half-written batch.
//!
//! Waiting for new data is left to the caller: poll [`EmbeddedLog::end_offset`]
//! or, better, have whoever appends announce the new end (the async wrapper
//! keeps a watch channel per topic). Appends from several threads can return
//! in a different order than they were written, so announce
//! `max(announced, first + n)` (or [`EmbeddedLog::end_offset`]), never a
//! value that could go backwards.
//!
//! # Recovery
//!
//! A topic is opened (and recovered) on its first use by any method, which
//! also creates its directory. Recovery scans only the last segment, checking
//! every frame: from the first frame that is short or fails its checksum to
//! the end of the file is a torn tail and is cut (with a `tracing` warning
//! naming the file and the bytes cut); a frame with a good checksum but the
//! wrong offset is reported as [`EmbeddedLogError::Corrupt`] and nothing is
//! cut. Earlier segments are trusted at open and checked as they are read: a
//! bad frame there is `Corrupt`, never cut. Only one `EmbeddedLog` may have a
//! directory open at a time (an advisory lock on `<root>/LOCK`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

mod maintenance;

pub use maintenance::CompactReport;

/// Bytes of a frame before its key: len, crc, offset, key length.
const HEADER_LEN: usize = 4 + 4 + 8 + 4;
/// Bytes covered by `len` that are not key or payload: offset, key length.
const BODY_FIXED: usize = 8 + 4;
/// Largest key + payload accepted; also stops a garbage length from making
/// a reader allocate gigabytes.
pub const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;
/// A sparse index entry is kept about every this many bytes of a segment, so
/// a reader starting mid-segment scans at most this far to find its offset.
const INDEX_INTERVAL: u64 = 1024 * 1024;
/// Read buffer of a reader (grown temporarily for larger records).
const READ_BUF: usize = 256 * 1024;
/// Longest topic or group name: keeps `<group>.offset` under the usual
/// 255-byte file name limit.
const MAX_NAME_LEN: usize = 200;
/// Suffix of segment files.
const SEGMENT_SUFFIX: &str = ".log";
/// Suffix of consumer-group offset files.
const OFFSET_SUFFIX: &str = ".offset";
/// Digits in a segment file name (enough for any u64).
const SEGMENT_DIGITS: usize = 20;

/// Why the log failed; every variant names the file, topic or group involved
/// so an operator can find what to look at.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedLogError {
    /// A filesystem call failed.
    #[error("embedded log: {op} {}: {source}", path.display())]
    Io {
        /// What was being done ("open", "fsync", ...).
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A topic name that would not be a safe, portable directory name.
    #[error(
        "invalid topic name {name:?}: use 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 '.' '_' '-' (not \".\" or \"..\")"
    )]
    BadTopicName {
        /// The name as given.
        name: String,
    },
    /// A consumer group name that would not be a safe file name.
    #[error(
        "invalid consumer group name {name:?}: use 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 '.' '_' '-' (not \".\" or \"..\")"
    )]
    BadGroupName {
        /// The name as given.
        name: String,
    },
    /// Bad bytes where the log must be intact (a sealed segment, or data
    /// already acknowledged as durable): not a torn tail, so nothing is cut.
    #[error("embedded log: corrupt record in {} at byte {position}: {reason}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the bad frame in that file.
        position: u64,
        /// What was wrong with it.
        reason: String,
    },
    /// A record larger than [`MAX_RECORD_BYTES`]; nothing of the batch was written.
    #[error(
        "embedded log, topic {topic}: record of {size} bytes (key + payload) exceeds the {MAX_RECORD_BYTES}-byte limit"
    )]
    RecordTooLarge {
        /// The topic appended to.
        topic: String,
        /// Key + payload bytes of the offending record.
        size: usize,
    },
    /// A consumer group offset file that does not hold a number.
    #[error("embedded log: committed offset file {} holds {content:?}, not an offset", path.display())]
    BadOffsetFile {
        /// The offset file.
        path: PathBuf,
        /// What it holds (trimmed).
        content: String,
    },
    /// An earlier append failed and its bytes could not be removed, so the
    /// segment's tail is unknown; reopening the log recovers it.
    #[error("embedded log, topic {topic}: an earlier append to {} failed and could not be undone; reopen the log to recover", path.display())]
    WriterFailed {
        /// The topic.
        topic: String,
        /// The segment the failed append went to.
        path: PathBuf,
    },
    /// Another process (or another `EmbeddedLog` in this one) has the log open.
    #[error("embedded log at {} is already open elsewhere (lock {} is held)", dir.display(), lock.display())]
    Locked {
        /// The log's root directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
}

/// Wraps an `io::Error` with the operation and path, for `map_err`.
fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> EmbeddedLogError + 'a {
    move |source| EmbeddedLogError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Tuning of the log; `Default` is what production uses.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// A new segment is started when an append would take the current one
    /// past this size (a single batch larger than this still goes in one
    /// segment). Smaller segments mean more files; the default is 128 MiB.
    pub segment_bytes: u64,
}

impl Default for LogOptions {
    /// 128 MiB segments.
    fn default() -> Self {
        LogOptions {
            segment_bytes: 128 * 1024 * 1024,
        }
    }
}

/// One record read back, with the offset it was given on append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the topic, from 0, contiguous.
    pub offset: u64,
    /// The key given on append (may be empty).
    pub key: Bytes,
    /// The payload given on append.
    pub payload: Bytes,
}

/// The log: a directory of topics, each opened (and recovered) on first use.
///
/// `Send + Sync`; share it behind an `Arc`. All methods block on file IO, so
/// async callers should run them on a blocking pool.
pub struct EmbeddedLog {
    /// Root directory.
    root: PathBuf,
    /// Tuning.
    options: LogOptions,
    /// Topics by name. The map lock is held only to find or insert a slot;
    /// the slot's own lock is held while that topic is recovered, so a long
    /// recovery scan of one topic does not stall the others.
    topics: Mutex<HashMap<String, TopicSlot>>,
    /// Serialises consumer-group commits, which share temp file names.
    commit_lock: Mutex<()>,
    /// Held open for its advisory lock: two processes appending to the same
    /// files would interleave frames and corrupt the log.
    _lock: File,
    /// Threads topics were recovered on, for tests that check recovery
    /// stays off async runtime threads.
    #[cfg(test)]
    pub(crate) recovered_on: Mutex<Vec<std::thread::ThreadId>>,
}

/// A topic's place in [`EmbeddedLog::topics`]: empty until the topic has
/// been opened and recovered (or while that failed).
type TopicSlot = Arc<Mutex<Option<Arc<Topic>>>>;

/// One open topic: its writer and what readers may see.
struct Topic {
    /// Topic name, for errors.
    name: String,
    /// The topic's directory.
    dir: PathBuf,
    /// The tail segment, locked for the duration of one append.
    writer: Mutex<Writer>,
    /// What appends have made durable and visible; locked only to copy or
    /// update a few numbers.
    published: Mutex<Published>,
    /// Copy of `published.end` for lock-free [`EmbeddedLog::end_offset`].
    end: AtomicU64,
    /// Serialises what rewrites or deletes sealed segments (compaction,
    /// retention), which readers and appends never wait on.
    maintenance: Mutex<()>,
    /// Base of the segment the last compaction wrote, so an unchanged
    /// topic is not rewritten again.
    compacted: Mutex<Option<u64>>,
}

/// The writable tail segment of a topic.
struct Writer {
    /// Open for appending.
    file: File,
    /// Its path, for errors.
    path: PathBuf,
    /// Offset of its first record.
    base: u64,
    /// Bytes in it (all durable).
    len: u64,
    /// Offset the next record gets.
    next_offset: u64,
    /// Byte position at or after which the next sparse index entry is taken.
    next_index_pos: u64,
    /// Encode buffer, reused across appends to avoid reallocating.
    scratch: Vec<u8>,
    /// Set when a failed append could not be undone; appends then refuse.
    failed: bool,
}

/// The part of a topic's state readers need, updated after each fsync.
struct Published {
    /// Offset the next record gets = records durable so far.
    end: u64,
    /// Base offset of the segment being appended to.
    active_base: u64,
    /// Durable bytes in that segment; readers read no further.
    active_len: u64,
    /// Every segment known, ascending by base; the last is the active one.
    segments: Vec<SegmentIndex>,
    /// Bumped whenever sealed segments are rewritten or deleted: a reader
    /// that opened a segment under an older generation finds its next one
    /// by offset again, since the file it read may have been replaced.
    generation: u64,
}

/// Sparse index of one segment.
struct SegmentIndex {
    /// Offset of the segment's first record (its file name).
    base: u64,
    /// `(offset, byte position)` of some frames, ascending; empty for
    /// segments sealed before this process opened the topic.
    entries: Vec<(u64, u64)>,
}

/// Checks a topic or group name: it becomes a path component.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Rejects a bad topic name with an error naming it.
fn check_topic(name: &str) -> Result<(), EmbeddedLogError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(EmbeddedLogError::BadTopicName {
            name: name.to_owned(),
        })
    }
}

/// Rejects a bad group name with an error naming it.
fn check_group(name: &str) -> Result<(), EmbeddedLogError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(EmbeddedLogError::BadGroupName {
            name: name.to_owned(),
        })
    }
}

/// File name of the segment whose first record has offset `base`.
fn segment_name(base: u64) -> String {
    format!("{base:0SEGMENT_DIGITS$}{SEGMENT_SUFFIX}")
}

/// Base offset encoded in a segment file name, if it is one.
fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segment bases found in a topic directory, ascending.
fn list_segments(dir: &Path) -> Result<Vec<u64>, EmbeddedLogError> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_segment_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Makes created, renamed or removed directory entries durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), EmbeddedLogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Directory fsync is a no-op off unix (and not possible on Windows).
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), EmbeddedLogError> {
    Ok(())
}

/// Creates `dir` if missing, making its entry in `parent` durable.
fn ensure_dir(dir: &Path, parent: &Path) -> Result<(), EmbeddedLogError> {
    match crate::private_fs::create_dir(dir) {
        Ok(()) => sync_dir(parent),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("create directory", dir)(e)),
    }
}

/// Little-endian u32 at `at` (caller guarantees the bytes are there).
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Little-endian u64 at `at` (caller guarantees the bytes are there).
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Appends one framed record to `out`.
fn encode_frame(out: &mut Vec<u8>, offset: u64, key: &[u8], payload: &[u8]) {
    let len = BODY_FIXED + key.len() + payload.len();
    let start = out.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What [`SegmentCursor::next_frame`] found.
enum Frame {
    /// A frame below the offset asked for, passed over by its header alone
    /// (no checksum): how a reader gets from a sparse index entry to its
    /// start offset.
    Skipped,
    /// A whole frame, checksum verified.
    Whole {
        /// The record's offset.
        offset: u64,
        /// Byte position of the frame.
        pos: u64,
        /// The record, if asked for.
        record: Option<Record>,
    },
    /// No bytes left before the limit.
    End,
    /// Bytes remain before the limit but do not make a valid frame.
    Bad {
        /// Byte position of the bad frame.
        pos: u64,
        /// What was wrong.
        reason: &'static str,
    },
}

/// Buffered sequential reading of frames from one segment file, never past a
/// given byte limit (the durable length), so a reader cannot pick up bytes of
/// an append still in progress.
struct SegmentCursor {
    /// Own handle, so the file position is this cursor's alone.
    file: File,
    /// For errors.
    path: PathBuf,
    /// Offset of the segment's first record.
    base: u64,
    /// Read buffer; `buf[start..end]` is unread.
    buf: Vec<u8>,
    /// Start of unread bytes in `buf`.
    start: usize,
    /// End of valid bytes in `buf`.
    end: usize,
    /// File position just after `buf[end - 1]`.
    file_pos: u64,
    /// Length of the segment once known to be sealed (it no longer changes).
    sealed_len: Option<u64>,
    /// [`Published::generation`] when it was opened.
    generation: u64,
}

impl SegmentCursor {
    /// Opens `path` positioned at byte `pos`.
    fn open(path: PathBuf, base: u64, pos: u64) -> Result<SegmentCursor, EmbeddedLogError> {
        let mut file = File::open(&path).map_err(io_err("open", &path))?;
        if pos > 0 {
            file.seek(SeekFrom::Start(pos))
                .map_err(io_err("seek", &path))?;
        }
        Ok(SegmentCursor {
            file,
            path,
            base,
            buf: Vec::new(),
            start: 0,
            end: 0,
            file_pos: pos,
            sealed_len: None,
            generation: 0,
        })
    }

    /// Byte position of the next unread byte.
    fn pos(&self) -> u64 {
        self.file_pos - (self.end - self.start) as u64
    }

    /// Makes at least `need` unread bytes available, reading no further than
    /// `limit`. False if the file ends first (it is shorter than `limit`).
    fn fill(&mut self, need: usize, limit: u64) -> io::Result<bool> {
        if self.end - self.start >= need {
            return Ok(true);
        }
        let unread = self.end - self.start;
        let capacity = need.max(READ_BUF);
        if self.start > 0 || self.buf.len() < capacity {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = unread;
        }
        if self.buf.len() < capacity {
            self.buf.resize(capacity, 0);
        } else if self.buf.len() > READ_BUF && capacity == READ_BUF {
            // Give back a buffer grown for one large record.
            self.buf.truncate(READ_BUF);
            self.buf.shrink_to_fit();
        }
        while self.end - self.start < need {
            let room = (self.buf.len() - self.end) as u64;
            let want = room.min(limit.saturating_sub(self.file_pos)) as usize;
            if want == 0 {
                return Ok(false);
            }
            match self.file.read(&mut self.buf[self.end..self.end + want]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.end += n;
                    self.file_pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Moves past `n` bytes, seeking if they are not all buffered.
    fn advance(&mut self, n: u64) -> io::Result<()> {
        let buffered = (self.end - self.start) as u64;
        if n <= buffered {
            self.start += n as usize;
        } else {
            let target = self.pos() + n;
            self.file.seek(SeekFrom::Start(target))?;
            self.start = 0;
            self.end = 0;
            self.file_pos = target;
        }
        Ok(())
    }

    /// The next frame before byte `limit`. Frames with offsets below
    /// `skip_below` are passed over unchecked; others are verified, and
    /// returned as a [`Record`] if `build`.
    fn next_frame(&mut self, limit: u64, skip_below: u64, build: bool) -> io::Result<Frame> {
        let pos = self.pos();
        if pos >= limit {
            return Ok(Frame::End);
        }
        let available = limit - pos;
        if available < HEADER_LEN as u64 {
            return Ok(Frame::Bad {
                pos,
                reason: "truncated frame header",
            });
        }
        if !self.fill(HEADER_LEN, limit)? {
            return Ok(Frame::Bad {
                pos,
                reason: "file ends inside a frame header",
            });
        }
        let head = &self.buf[self.start..self.start + HEADER_LEN];
        let len = le_u32(head, 0) as usize;
        let crc = le_u32(head, 4);
        let offset = le_u64(head, 8);
        let key_len = le_u32(head, 16) as usize;
        if !(BODY_FIXED..=BODY_FIXED + MAX_RECORD_BYTES).contains(&len) {
            return Ok(Frame::Bad {
                pos,
                reason: "impossible frame length",
            });
        }
        if key_len > len - BODY_FIXED {
            return Ok(Frame::Bad {
                pos,
                reason: "key length exceeds the frame",
            });
        }
        let size = 8 + len;
        if size as u64 > available {
            return Ok(Frame::Bad {
                pos,
                reason: "frame runs past the end of the segment",
            });
        }
        if offset < skip_below {
            self.advance(size as u64)?;
            return Ok(Frame::Skipped);
        }
        if !self.fill(size, limit)? {
            return Ok(Frame::Bad {
                pos,
                reason: "file ends inside a frame",
            });
        }
        let frame = &self.buf[self.start..self.start + size];
        if crc32fast::hash(&frame[8..]) != crc {
            return Ok(Frame::Bad {
                pos,
                reason: "checksum mismatch",
            });
        }
        let record = build.then(|| {
            let body = Bytes::copy_from_slice(&frame[HEADER_LEN..]);
            Record {
                offset,
                key: body.slice(..key_len),
                payload: body.slice(key_len..),
            }
        });
        self.start += size;
        Ok(Frame::Whole {
            offset,
            pos,
            record,
        })
    }
}

impl Topic {
    /// Opens (creating) a topic directory and recovers its last segment:
    /// verifies every frame and cuts a torn tail left by a crash.
    fn open(root: &Path, name: &str) -> Result<Topic, EmbeddedLogError> {
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
    fn published(&self) -> MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `(end, active_base, active_len)` as of now.
    fn snapshot(&self) -> (u64, u64, u64) {
        let p = self.published();
        (p.end, p.active_base, p.active_len)
    }

    /// Appends a batch under the writer lock: roll if needed, one write, one
    /// fsync, then publish. Returns the first record's offset.
    fn append(
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
    fn roll(&self, w: &mut Writer) -> Result<(), EmbeddedLogError> {
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
    fn open_cursor(&self, offset: u64) -> Result<SegmentCursor, EmbeddedLogError> {
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
    fn next_cursor(
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

impl EmbeddedLog {
    /// Opens (creating) the log rooted at `dir` with default options. Topics
    /// are opened and recovered lazily, on first use.
    pub fn open(dir: &Path) -> Result<EmbeddedLog, EmbeddedLogError> {
        EmbeddedLog::open_with(dir, LogOptions::default())
    }

    /// Opens (creating) the log rooted at `dir` with explicit options (tests
    /// use small segments). Fails with [`EmbeddedLogError::Locked`] if the
    /// directory is already open elsewhere.
    pub fn open_with(dir: &Path, options: LogOptions) -> Result<EmbeddedLog, EmbeddedLogError> {
        crate::private_fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let lock_path = dir.join("LOCK");
        let lock = crate::private_fs::open_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(EmbeddedLogError::Locked {
                    dir: dir.to_owned(),
                    lock: lock_path,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err("lock", &lock_path)(e)),
        }
        Ok(EmbeddedLog {
            root: dir.to_owned(),
            options,
            topics: Mutex::new(HashMap::new()),
            commit_lock: Mutex::new(()),
            _lock: lock,
            #[cfg(test)]
            recovered_on: Mutex::new(Vec::new()),
        })
    }

    /// The topic, opening and recovering it on first use.
    fn topic(&self, name: &str) -> Result<Arc<Topic>, EmbeddedLogError> {
        check_topic(name)?;
        let slot = {
            let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
            match topics.get(name) {
                Some(slot) => slot.clone(),
                None => {
                    let slot = Arc::new(Mutex::new(None));
                    topics.insert(name.to_owned(), slot.clone());
                    slot
                }
            }
        };
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(topic) = slot.as_ref() {
            return Ok(topic.clone());
        }
        let topic = Arc::new(Topic::open(&self.root, name)?);
        #[cfg(test)]
        self.recovered_on
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(std::thread::current().id());
        *slot = Some(topic.clone());
        Ok(topic)
    }

    /// Appends `(key, payload)` records to `topic`, in order, and returns the
    /// offset of the first. Durable (written and fsync'd) when it returns,
    /// with one fsync per call: batch records into one call for group commit.
    /// An empty batch writes nothing and returns the end offset. On error
    /// nothing of the batch is visible or kept.
    pub fn append(&self, topic: &str, records: &[(&[u8], &[u8])]) -> Result<u64, EmbeddedLogError> {
        self.topic(topic)?
            .append(records, self.options.segment_bytes)
    }

    /// The offset the next appended record will get: the number of records
    /// ever appended (and durable). Cheap; usable for polling.
    pub fn end_offset(&self, topic: &str) -> Result<u64, EmbeddedLogError> {
        Ok(self.topic(topic)?.end.load(Ordering::Acquire))
    }

    /// A sequential reader of `topic` whose first record will be `from`.
    /// `from` may be past the end: the reader then returns nothing until
    /// the log reaches it.
    pub fn reader(&self, topic: &str, from: u64) -> Result<LogReader, EmbeddedLogError> {
        Ok(LogReader {
            topic: self.topic(topic)?,
            next: from,
            cursor: None,
        })
    }

    /// One-shot read of up to `max` records from `from`; for repeated reads
    /// keep a [`LogReader`], which keeps its file position.
    pub fn read(
        &self,
        topic: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<Record>, EmbeddedLogError> {
        self.reader(topic, from)?.read(max)
    }

    /// Path of a group's offset file for a topic (validating both names).
    fn offset_path(&self, group: &str, topic: &str) -> Result<PathBuf, EmbeddedLogError> {
        check_topic(topic)?;
        check_group(group)?;
        Ok(self
            .root
            .join(topic)
            .join(format!("{group}{OFFSET_SUFFIX}")))
    }

    /// Durably records that `group` will next read `next_offset` of
    /// `topic`: temp file, fsync, rename over the old one, fsync directory.
    pub fn commit(
        &self,
        group: &str,
        topic: &str,
        next_offset: u64,
    ) -> Result<(), EmbeddedLogError> {
        let path = self.offset_path(group, topic)?;
        let dir = self.root.join(topic);
        let tmp = dir.join(format!("{group}{OFFSET_SUFFIX}.tmp"));
        let _guard = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        ensure_dir(&dir, &self.root)?;
        let mut file = crate::private_fs::create_file(&tmp).map_err(io_err("create", &tmp))?;
        file.write_all(format!("{next_offset}\n").as_bytes())
            .map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("fsync", &tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
        sync_dir(&dir)
    }

    /// The next offset `group` will read from `topic`: what it last
    /// committed, or 0 if it never did.
    pub fn committed(&self, group: &str, topic: &str) -> Result<u64, EmbeddedLogError> {
        let path = self.offset_path(group, topic)?;
        match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse()
                .map_err(|_| EmbeddedLogError::BadOffsetFile {
                    content: text.trim().to_owned(),
                    path,
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }
}

impl EmbeddedLog {
    /// Deletes the sealed segments of `topic` that every consumer group has
    /// committed past, so a long-running log does not grow without bound.
    /// A topic no group has committed on keeps everything. Returns how many
    /// segments were deleted.
    pub fn delete_consumed(&self, topic: &str) -> Result<usize, EmbeddedLogError> {
        self.delete_segments(topic, None)
    }
}

/// Reads one topic in order, keeping its place (file handle and buffer) so
/// sequential reads cost no re-scanning; follows segment rolls and sees
/// records appended after it was created. `Send`, not shared: one per
/// consumer.
pub struct LogReader {
    /// The topic read.
    topic: Arc<Topic>,
    /// Offset of the next record to return.
    next: u64,
    /// Open segment, positioned at `next` (or before it, while skipping);
    /// `None` until the first record to read exists.
    cursor: Option<SegmentCursor>,
}

impl LogReader {
    /// Offset of the next record [`LogReader::read`] will return.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Up to `max` records from the reader's position; fewer, or none, when
    /// it reaches the end of what has been durably appended. Call again
    /// later to get records appended since.
    pub fn read(&mut self, max: usize) -> Result<Vec<Record>, EmbeddedLogError> {
        let (end, active_base, active_len) = self.topic.snapshot();
        let mut out = Vec::with_capacity(max.min(end.saturating_sub(self.next) as usize).min(4096));
        while out.len() < max && self.next < end {
            let cursor = match self.cursor.as_mut() {
                Some(c) => c,
                None => self.cursor.insert(self.topic.open_cursor(self.next)?),
            };
            let limit = if cursor.base == active_base {
                active_len
            } else if let Some(len) = cursor.sealed_len {
                len
            } else {
                // Sealed by a roll since it was opened: it no longer grows.
                let len = cursor
                    .file
                    .metadata()
                    .map_err(io_err("stat", &cursor.path))?
                    .len();
                *cursor.sealed_len.insert(len)
            };
            let frame = cursor
                .next_frame(limit, self.next, true)
                .map_err(io_err("read", &cursor.path))?;
            match frame {
                Frame::Skipped => {}
                Frame::Whole {
                    offset,
                    record: Some(record),
                    ..
                } if offset == self.next
                    || (offset > self.next && gap_allowed(cursor.base, active_base, self.next)) =>
                {
                    self.next = offset + 1;
                    out.push(record);
                }
                Frame::Whole { offset, pos, .. } => {
                    return Err(EmbeddedLogError::Corrupt {
                        path: cursor.path.clone(),
                        position: pos,
                        reason: format!("record has offset {offset}, expected {}", self.next),
                    });
                }
                Frame::Bad { pos, reason } => {
                    return Err(EmbeddedLogError::Corrupt {
                        path: cursor.path.clone(),
                        position: pos,
                        reason: reason.to_owned(),
                    });
                }
                Frame::End => {
                    if cursor.base == active_base {
                        return Err(EmbeddedLogError::Corrupt {
                            path: cursor.path.clone(),
                            position: cursor.pos(),
                            reason: format!("record {} missing before the durable end", self.next),
                        });
                    }
                    // Sealed segment done: on to the next one (compaction
                    // and retention leave gaps between segments).
                    match self.topic.next_cursor(cursor, self.next)? {
                        Some(next) => self.cursor = Some(next),
                        None => {
                            return Err(EmbeddedLogError::Corrupt {
                                path: cursor.path.clone(),
                                position: cursor.pos(),
                                reason: format!(
                                    "segment ends before offset {} and no segment follows",
                                    self.next
                                ),
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Whether a reader may find a record past the one it expects: in a
/// sealed segment (compaction keeps only some records of a key), or at
/// the start of a segment when earlier ones were deleted (retention). In
/// the active segment, never: its offsets are contiguous by construction.
fn gap_allowed(segment_base: u64, active_base: u64, next: u64) -> bool {
    segment_base != active_base || next <= segment_base
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;

    use super::*;

    /// Offsets and payloads (as text) of up to `max` records from `from`.
    fn read_text(log: &EmbeddedLog, topic: &str, from: u64, max: usize) -> Vec<(u64, String)> {
        log.read(topic, from, max)
            .unwrap()
            .into_iter()
            .map(|r| (r.offset, String::from_utf8(r.payload.to_vec()).unwrap()))
            .collect()
    }

    /// `n` numbered records appended one per call.
    fn append_numbered(log: &EmbeddedLog, topic: &str, range: std::ops::Range<u32>) {
        for i in range {
            let p = format!("record-{i}");
            log.append(topic, &[(b"k", p.as_bytes())]).unwrap();
        }
    }

    fn small_segments() -> LogOptions {
        LogOptions { segment_bytes: 200 }
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
    fn a_second_open_of_the_same_directory_is_refused_while_the_first_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        let err = EmbeddedLog::open(dir.path()).err().unwrap();
        assert!(matches!(err, EmbeddedLogError::Locked { .. }), "{err}");
        drop(log);
        EmbeddedLog::open(dir.path()).unwrap();
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
    fn corrupt_record_in_a_sealed_segment_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = EmbeddedLog::open_with(dir.path(), small_segments()).unwrap();
            append_numbered(&log, "t", 0..20);
        }
        let seg = dir.path().join("t").join(segment_name(0));
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[HEADER_LEN + 2] ^= 0x01; // inside the first record's payload
        std::fs::write(&seg, &bytes).unwrap();

        let log = EmbeddedLog::open_with(dir.path(), small_segments()).unwrap();
        assert_eq!(
            log.end_offset("t").unwrap(),
            20,
            "sealed segments are not cut"
        );
        let err = log.read("t", 0, 10).unwrap_err();
        assert!(
            matches!(err, EmbeddedLogError::Corrupt { position: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(&segment_name(0)), "{err}");
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

    /// Reads `0..n` whole, in small steps, and from every start offset.
    fn check_segmented(log: &EmbeddedLog, n: u64) {
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

    #[test]
    fn commit_and_committed_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = EmbeddedLog::open(dir.path()).unwrap();
            assert_eq!(log.committed("sink", "t").unwrap(), 0, "unknown group");
            log.commit("sink", "t", 42).unwrap();
            log.commit("sink", "t", 43).unwrap();
            log.commit("audit", "t", 7).unwrap();
            assert_eq!(log.committed("sink", "t").unwrap(), 43);
        }
        let log = EmbeddedLog::open(dir.path()).unwrap();
        assert_eq!(log.committed("sink", "t").unwrap(), 43);
        assert_eq!(log.committed("audit", "t").unwrap(), 7);
        assert_eq!(log.committed("sink", "other").unwrap(), 0);
        // Offset files do not disturb the topic's segments.
        assert_eq!(log.end_offset("t").unwrap(), 0);
        assert_eq!(log.append("t", &[(b"", b"a")]).unwrap(), 0);

        std::fs::write(dir.path().join("t").join("sink.offset"), "junk").unwrap();
        let err = log.committed("sink", "t").unwrap_err();
        assert!(
            matches!(err, EmbeddedLogError::BadOffsetFile { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("sink.offset"), "{err}");
    }

    #[test]
    fn reader_sees_records_appended_after_it_was_created() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open_with(dir.path(), small_segments()).unwrap();
        let mut early = log.reader("t", 0).unwrap(); // before the topic has data
        let mut ahead = log.reader("t", 3).unwrap(); // past the end
        assert!(early.read(10).unwrap().is_empty());
        append_numbered(&log, "t", 0..2);
        assert_eq!(early.read(10).unwrap().len(), 2);
        assert!(ahead.read(10).unwrap().is_empty());
        // Keep appending across several segment rolls, reading as we go.
        for i in 2..30u32 {
            append_numbered(&log, "t", i..i + 1);
            let got = early.read(10).unwrap();
            assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [i as u64]);
        }
        let got = ahead.read(100).unwrap();
        assert_eq!(got.first().map(|r| r.offset), Some(3));
        assert_eq!(got.len(), 27);
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
    fn bad_topic_name_is_rejected_with_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        let long = "x".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../up",
            "sp ace",
            "naïve",
            long.as_str(),
        ] {
            let err = log.append(bad, &[(b"", b"a")]).unwrap_err();
            assert!(
                matches!(err, EmbeddedLogError::BadTopicName { .. }),
                "{bad:?}: {err}"
            );
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
            assert!(log.reader(bad, 0).is_err());
            assert!(log.end_offset(bad).is_err());
            assert!(log.commit("g", bad, 1).is_err());
        }
        let err = log.commit("g/../x", "t", 1).unwrap_err();
        assert!(
            matches!(err, EmbeddedLogError::BadGroupName { .. }),
            "{err}"
        );
        for good in ["tollgate.events.v1", "A-b_c.9"] {
            log.append(good, &[(b"", b"a")]).unwrap();
        }
        assert!(!dir.path().join("a").exists());
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

    /// Hand-run throughput check, not part of the suite:
    /// `cargo test --release throughput_by_hand -- --ignored --nocapture`.
    /// Appends 1 KiB records in fsync'd batches of 256, then reads them back
    /// sequentially. `TOLLGATE_LOG_BENCH_DIR` picks the disk (default: temp).
    #[test]
    #[ignore = "throughput check run by hand"]
    fn throughput_by_hand() {
        let base = std::env::var_os("TOLLGATE_LOG_BENCH_DIR").map(PathBuf::from);
        let dir = match base {
            Some(b) => tempfile::tempdir_in(b).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let log = EmbeddedLog::open(dir.path()).unwrap();
        let payload = vec![0x5au8; 1024];
        let batch: Vec<(&[u8], &[u8])> =
            (0..256).map(|_| (&b"key-0001"[..], &payload[..])).collect();
        let batches = 400;
        let t = std::time::Instant::now();
        for _ in 0..batches {
            log.append("bench", &batch).unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        let n = (batches * batch.len()) as f64;
        println!(
            "append: {n} records of 1 KiB in {batches} fsync'd batches of 256: {:.0} records/s, {:.0} batches/s, {:.1} MB/s",
            n / secs,
            batches as f64 / secs,
            n * 1024.0 / secs / 1e6
        );

        for pass in ["first (page cache warm)", "second"] {
            let t = std::time::Instant::now();
            let mut r = log.reader("bench", 0).unwrap();
            let (mut count, mut bytes) = (0usize, 0usize);
            loop {
                let got = r.read(1024).unwrap();
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
            assert_eq!(count as f64, n);
            println!(
                "read {pass}: {count} records, {:.0} MB/s, {:.0} records/s",
                bytes as f64 / secs / 1e6,
                count as f64 / secs
            );
        }
    }
}
