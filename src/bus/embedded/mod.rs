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
//! or, better, have whoever appends announce the new end (the async wrapper,
//! `bus::local`, keeps a watch channel per topic). Appends from several
//! threads can return in a different order than they were written, so announce
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
//!
//! # Files
//!
//! Each concern has one file, so a change to one (the on-disk format, the
//! append path, how readers find their place) is read and reviewed alone:
//!
//! - this file: the log's public face: options, errors, open, append, read;
//! - `files`: segment and offset file naming, listing, directory fsync, name
//!   checks;
//! - `frame`: the record frame codec (the on-disk format);
//! - `cursor`: buffered reading of frames from one segment file;
//! - `topic`: one topic's recovery at open and its append path (the writer);
//! - `reader`: [`LogReader`], a consumer's sequential read of one topic;
//! - `offsets`: consumer groups' committed offsets;
//! - `maintenance`: compaction and retention.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

mod cursor;
mod files;
mod frame;
mod maintenance;
mod offsets;
mod reader;
#[cfg(test)]
mod tests;
mod topic;

use files::{MAX_NAME_LEN, check_topic};
pub use frame::MAX_RECORD_BYTES;
pub use maintenance::CompactReport;
pub use reader::LogReader;
use topic::Topic;

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
        Ok(LogReader::new(self.topic(topic)?, from))
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
}
