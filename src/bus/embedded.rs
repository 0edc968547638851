//! The embedded on-disk log: an append-only log with consumer offsets, for
//! running every role in one process with nothing to install.
//!
//! Each topic is a directory of segment files named by the offset of their
//! first record. A record is framed as
//! `len u32 | crc32 u32 | offset u64 | key_len u32 | key | payload`
//! (little endian; `len` counts everything after the crc, the crc covers
//! the same bytes), so a torn write at the tail is found and cut on open.
//! Appends fsync once per call: callers batch, which is group commit.
//! Consumer-group offsets are small files replaced atomically.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Bytes before a record's key: len, crc, offset, key length.
const HEADER: usize = 4 + 4 + 8 + 4;
/// Largest record accepted (a guard against reading garbage as a length).
const MAX_RECORD: usize = 64 * 1024 * 1024;

/// Why the log failed; every variant names the file or topic involved.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedLogError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid name {name:?}: use only letters, digits, '.', '_' and '-'")]
    BadName { name: String },
    #[error("{path}: corrupt record at byte {position} (not at the tail, so not a torn write)")]
    Corrupt { path: PathBuf, position: u64 },
    #[error("record of {size} bytes exceeds the {MAX_RECORD}-byte limit")]
    TooLarge { size: usize },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EmbeddedLogError + '_ {
    move |source| EmbeddedLogError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Tuning of the log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: 128 * 1024 * 1024,
        }
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub key: Bytes,
    pub payload: Bytes,
}

/// The log: topics by name, opened lazily.
pub struct EmbeddedLog {
    dir: PathBuf,
    options: LogOptions,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
}

/// One topic: its writer and the offset readers may read up to.
struct Topic {
    dir: PathBuf,
    writer: Mutex<SegmentWriter>,
    /// Offset the next append gets; published after the bytes are written.
    end: AtomicU64,
}

/// The open tail segment.
struct SegmentWriter {
    file: File,
    path: PathBuf,
    len: u64,
    next_offset: u64,
}

fn check_name(name: &str) -> Result<(), EmbeddedLogError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok && name != "." && name != ".." {
        Ok(())
    } else {
        Err(EmbeddedLogError::BadName {
            name: name.to_owned(),
        })
    }
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// Segment bases of a topic directory, ascending.
fn segments(dir: &Path) -> Result<Vec<u64>, EmbeddedLogError> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            name.to_str()?.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    Ok(bases)
}

fn sync_dir(dir: &Path) -> Result<(), EmbeddedLogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Reads one frame from `r`. `Ok(None)` at a clean end or a torn tail;
/// `Err` only for IO errors. The second value is the frame's size.
fn read_frame(r: &mut impl Read) -> std::io::Result<Option<(Record, u64)>> {
    let mut head = [0u8; 8];
    if !read_full(r, &mut head)? {
        return Ok(None);
    }
    let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
    if !(12..=MAX_RECORD + 12).contains(&len) {
        return Ok(None);
    }
    let mut body = vec![0u8; len];
    if !read_full(r, &mut body)? || crc32fast::hash(&body) != crc {
        return Ok(None);
    }
    let offset = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
    let key_len = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
    if 12 + key_len > len {
        return Ok(None);
    }
    let body = Bytes::from(body);
    let record = Record {
        offset,
        key: body.slice(12..12 + key_len),
        payload: body.slice(12 + key_len..),
    };
    Ok(Some((record, (8 + len) as u64)))
}

/// Fills `buf`; false if the stream ended first (a clean end or torn tail).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn encode_frame(out: &mut Vec<u8>, offset: u64, key: &[u8], payload: &[u8]) {
    let len = 12 + key.len() + payload.len();
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

impl Topic {
    /// Opens a topic directory, cutting a torn tail off its last segment.
    fn open(dir: PathBuf) -> Result<Topic, EmbeddedLogError> {
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let bases = segments(&dir)?;
        let base = bases.last().copied().unwrap_or(0);
        let path = dir.join(segment_name(base));
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let file_len = file.metadata().map_err(io_err(&path))?.len();
        let (good, next_offset) = Self::scan(&mut file, &path, base)?;
        if good < file_len {
            tracing::warn!(file = %path.display(), cut_bytes = file_len - good,
                "embedded log: cut a torn or corrupt tail left by a crash");
            file.set_len(good).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
        }
        if bases.is_empty() {
            sync_dir(&dir)?;
        }
        Ok(Topic {
            dir,
            end: AtomicU64::new(next_offset),
            writer: Mutex::new(SegmentWriter {
                file,
                path,
                len: good,
                next_offset,
            }),
        })
    }

    /// Valid bytes of a segment and the offset after its last record.
    fn scan(file: &mut File, path: &Path, base: u64) -> Result<(u64, u64), EmbeddedLogError> {
        file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
        let mut reader = BufReader::with_capacity(1 << 20, &*file);
        let (mut good, mut next) = (0u64, base);
        while let Some((record, size)) = read_frame(&mut reader).map_err(io_err(path))? {
            if record.offset != next {
                break;
            }
            good += size;
            next += 1;
        }
        Ok((good, next))
    }

    fn append(&self, records: &[(&[u8], &[u8])], segment_bytes: u64) -> Result<u64, EmbeddedLogError> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if w.len >= segment_bytes {
            let path = self.dir.join(segment_name(w.next_offset));
            let file = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            sync_dir(&self.dir)?;
            w.file = file;
            w.path = path;
            w.len = 0;
        }
        let first = w.next_offset;
        let size: usize = records.iter().map(|(k, v)| HEADER + k.len() + v.len()).sum();
        let mut buf = Vec::with_capacity(size);
        for (i, (key, payload)) in records.iter().enumerate() {
            if key.len() + payload.len() > MAX_RECORD {
                return Err(EmbeddedLogError::TooLarge {
                    size: key.len() + payload.len(),
                });
            }
            encode_frame(&mut buf, first + i as u64, key, payload);
        }
        let path = w.path.clone();
        if let Err(e) = w.file.write_all(&buf).and_then(|_| w.file.sync_data()) {
            // Leave no half-written batch behind for the next append.
            let _ = w.file.set_len(w.len);
            return Err(io_err(&path)(e));
        }
        w.len += buf.len() as u64;
        w.next_offset += records.len() as u64;
        self.end.store(w.next_offset, Ordering::Release);
        Ok(first)
    }
}

impl EmbeddedLog {
    /// Opens (creating) the log rooted at `dir`.
    pub fn open(dir: &Path) -> Result<EmbeddedLog, EmbeddedLogError> {
        EmbeddedLog::open_with(dir, LogOptions::default())
    }

    /// Opens the log with explicit options.
    pub fn open_with(dir: &Path, options: LogOptions) -> Result<EmbeddedLog, EmbeddedLogError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        Ok(EmbeddedLog {
            dir: dir.to_owned(),
            options,
            topics: Mutex::new(HashMap::new()),
        })
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, EmbeddedLogError> {
        check_name(name)?;
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = topics.get(name) {
            return Ok(t.clone());
        }
        let topic = Arc::new(Topic::open(self.dir.join(name))?);
        topics.insert(name.to_owned(), topic.clone());
        Ok(topic)
    }

    /// Appends records and returns the first one's offset; durable when it
    /// returns.
    pub fn append(&self, topic: &str, records: &[(&[u8], &[u8])]) -> Result<u64, EmbeddedLogError> {
        self.topic(topic)?.append(records, self.options.segment_bytes)
    }

    /// The offset the next appended record will get.
    pub fn end_offset(&self, topic: &str) -> Result<u64, EmbeddedLogError> {
        Ok(self.topic(topic)?.end.load(Ordering::Acquire))
    }

    /// A sequential reader starting at offset `from`.
    pub fn reader(&self, topic: &str, from: u64) -> Result<LogReader, EmbeddedLogError> {
        Ok(LogReader {
            topic: self.topic(topic)?,
            next: from,
            segment: None,
        })
    }

    fn offset_path(&self, group: &str, topic: &str) -> Result<PathBuf, EmbeddedLogError> {
        check_name(group)?;
        check_name(topic)?;
        Ok(self.dir.join("_offsets").join(group).join(topic))
    }

    /// Stores the next offset `group` will read from `topic`, atomically.
    pub fn commit(&self, group: &str, topic: &str, next_offset: u64) -> Result<(), EmbeddedLogError> {
        let path = self.offset_path(group, topic)?;
        let dir = path.parent().expect("offset path has a parent").to_owned();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let tmp = dir.join(format!(".{topic}.tmp"));
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(next_offset.to_string().as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(&dir)
    }

    /// The next offset `group` reads from `topic` (0 if it never committed).
    pub fn committed(&self, group: &str, topic: &str) -> Result<u64, EmbeddedLogError> {
        let path = self.offset_path(group, topic)?;
        match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|_| EmbeddedLogError::Corrupt {
                path: path.clone(),
                position: 0,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err(&path)(e)),
        }
    }
}

/// Reads a topic in order, keeping its place in the current segment.
pub struct LogReader {
    topic: Arc<Topic>,
    next: u64,
    segment: Option<OpenSegment>,
}

/// A segment open for reading, positioned at record `next`.
struct OpenSegment {
    reader: BufReader<File>,
    path: PathBuf,
    position: u64,
}

impl LogReader {
    /// Up to `max` records from the current position; fewer (or none) when
    /// the end of what has been appended is reached.
    pub fn read(&mut self, max: usize) -> Result<Vec<Record>, EmbeddedLogError> {
        let mut out = Vec::new();
        while out.len() < max && self.next < self.topic.end.load(Ordering::Acquire) {
            let segment = match self.segment.as_mut() {
                Some(s) => s,
                None => self.segment.insert(self.open_at(self.next)?),
            };
            let frame = read_frame(&mut segment.reader).map_err(io_err(&segment.path))?;
            match frame {
                Some((record, size)) if record.offset == self.next => {
                    segment.position += size;
                    self.next += 1;
                    out.push(record);
                }
                Some(_) => {
                    return Err(EmbeddedLogError::Corrupt {
                        path: segment.path.clone(),
                        position: segment.position,
                    });
                }
                // This segment is exhausted; the record is in the next one,
                // which is named by its first offset.
                None => {
                    let next_path = self.topic.dir.join(segment_name(self.next));
                    if next_path == segment.path || !next_path.exists() {
                        return Err(EmbeddedLogError::Corrupt {
                            path: segment.path.clone(),
                            position: segment.position,
                        });
                    }
                    self.segment = None;
                }
            }
        }
        Ok(out)
    }

    /// Opens the segment holding `offset` and skips to it.
    fn open_at(&self, offset: u64) -> Result<OpenSegment, EmbeddedLogError> {
        let bases = segments(&self.topic.dir)?;
        let base = bases
            .iter()
            .rev()
            .find(|b| **b <= offset)
            .copied()
            .unwrap_or(0);
        let path = self.topic.dir.join(segment_name(base));
        let file = File::open(&path).map_err(io_err(&path))?;
        let mut segment = OpenSegment {
            reader: BufReader::with_capacity(256 * 1024, file),
            path,
            position: 0,
        };
        let mut at = base;
        while at < offset {
            match read_frame(&mut segment.reader).map_err(io_err(&segment.path))? {
                Some((_, size)) => {
                    segment.position += size;
                    at += 1;
                }
                None => break,
            }
        }
        Ok(segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(log: &EmbeddedLog, topic: &str, from: u64, max: usize) -> Vec<(u64, String)> {
        let mut r = log.reader(topic, from).unwrap();
        r.read(max)
            .unwrap()
            .into_iter()
            .map(|rec| (rec.offset, String::from_utf8(rec.payload.to_vec()).unwrap()))
            .collect()
    }

    #[test]
    fn appended_records_read_back_in_order_with_keys() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        assert_eq!(log.append("t", &[(b"k1", b"a"), (b"k2", b"b")]).unwrap(), 0);
        assert_eq!(log.append("t", &[(b"", b"c")]).unwrap(), 2);
        let mut r = log.reader("t", 0).unwrap();
        let recs = r.read(10).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(&recs[0].key[..], b"k1");
        assert_eq!(&recs[2].payload[..], b"c");
        assert!(r.read(10).unwrap().is_empty());
    }

    #[test]
    fn offsets_continue_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = EmbeddedLog::open(dir.path()).unwrap();
            log.append("t", &[(b"", b"a"), (b"", b"b")]).unwrap();
        }
        let log = EmbeddedLog::open(dir.path()).unwrap();
        assert_eq!(log.end_offset("t").unwrap(), 2);
        assert_eq!(log.append("t", &[(b"", b"c")]).unwrap(), 2);
        assert_eq!(payloads(&log, "t", 1, 10), [(1, "b".into()), (2, "c".into())]);
    }

    #[test]
    fn torn_tail_is_cut_on_reopen_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = EmbeddedLog::open(dir.path()).unwrap();
            log.append("t", &[(b"", b"a"), (b"", b"b")]).unwrap();
        }
        let seg = dir.path().join("t").join(segment_name(0));
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        let mut partial = Vec::new();
        encode_frame(&mut partial, 2, b"", b"torn record");
        f.write_all(&partial[..partial.len() - 3]).unwrap();
        drop(f);
        let log = EmbeddedLog::open(dir.path()).unwrap();
        assert_eq!(log.end_offset("t").unwrap(), 2);
        assert_eq!(log.append("t", &[(b"", b"c")]).unwrap(), 2);
        let all = payloads(&log, "t", 0, 10);
        assert_eq!(all.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn reads_cross_segment_rolls_and_can_start_mid_segment() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open_with(dir.path(), LogOptions { segment_bytes: 64 }).unwrap();
        for i in 0..20u32 {
            log.append("t", &[(b"", i.to_string().as_bytes())]).unwrap();
        }
        assert!(segments(&dir.path().join("t")).unwrap().len() > 3);
        let all = payloads(&log, "t", 0, 100);
        assert_eq!(all.len(), 20);
        assert_eq!(all[19], (19, "19".into()));
        let tail = payloads(&log, "t", 7, 3);
        assert_eq!(tail, [(7, "7".into()), (8, "8".into()), (9, "9".into())]);
        drop(log);
        let log = EmbeddedLog::open_with(dir.path(), LogOptions { segment_bytes: 64 }).unwrap();
        assert_eq!(log.append("t", &[(b"", b"20")]).unwrap(), 20);
        assert_eq!(payloads(&log, "t", 18, 10).len(), 3);
    }

    #[test]
    fn committed_offsets_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = EmbeddedLog::open(dir.path()).unwrap();
            assert_eq!(log.committed("g", "t").unwrap(), 0);
            log.commit("g", "t", 42).unwrap();
        }
        let log = EmbeddedLog::open(dir.path()).unwrap();
        assert_eq!(log.committed("g", "t").unwrap(), 42);
        assert_eq!(log.committed("other", "t").unwrap(), 0);
    }

    #[test]
    fn reader_sees_records_appended_after_it_was_created() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        log.append("t", &[(b"", b"a")]).unwrap();
        let mut r = log.reader("t", 0).unwrap();
        assert_eq!(r.read(10).unwrap().len(), 1);
        assert!(r.read(10).unwrap().is_empty());
        log.append("t", &[(b"", b"b"), (b"", b"c")]).unwrap();
        let more = r.read(10).unwrap();
        assert_eq!(more.iter().map(|r| r.offset).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn concurrent_appends_get_unique_contiguous_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(EmbeddedLog::open(dir.path()).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let p = format!("{t}-{i}");
                        log.append("t", &[(b"", p.as_bytes()), (b"", p.as_bytes())]).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let all = payloads(&log, "t", 0, 1000);
        assert_eq!(all.len(), 400);
        assert!(all.iter().enumerate().all(|(i, (o, _))| *o == i as u64));
        // Each batch stays together.
        assert!(all.chunks(2).all(|pair| pair[0].1 == pair[1].1));
    }

    #[test]
    fn bad_topic_and_group_names_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        for bad in ["", "..", "a/b", "x y"] {
            let err = log.append(bad, &[(b"", b"a")]).unwrap_err().to_string();
            assert!(err.contains("invalid name"), "{err}");
        }
        assert!(log.commit("g/../x", "t", 1).is_err());
    }
}
