//! Buffered reading of frames from one segment file, used by recovery (to
//! check the last segment), by readers and by maintenance scans.
//!
//! Separate from the topic and the reader because it knows one file and
//! nothing else: where the durable bytes end is always the caller's word,
//! so it never reads a half-written append.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

use bytes::Bytes;

use super::frame::{BODY_FIXED, Frame, HEADER_LEN, le_u32, le_u64};
use super::{EmbeddedLogError, MAX_RECORD_BYTES, Record, io_err};

/// Read buffer of a reader (grown temporarily for larger records).
pub(super) const READ_BUF: usize = 256 * 1024;

/// Buffered sequential reading of frames from one segment file, never past a
/// given byte limit (the durable length), so a reader cannot pick up bytes of
/// an append still in progress.
pub(super) struct SegmentCursor {
    /// Own handle, so the file position is this cursor's alone.
    pub(super) file: File,
    /// For errors.
    pub(super) path: PathBuf,
    /// Offset of the segment's first record.
    pub(super) base: u64,
    /// Read buffer; `buf[start..end]` is unread.
    buf: Vec<u8>,
    /// Start of unread bytes in `buf`.
    start: usize,
    /// End of valid bytes in `buf`.
    end: usize,
    /// File position just after `buf[end - 1]`.
    file_pos: u64,
    /// Length of the segment once known to be sealed (it no longer changes).
    pub(super) sealed_len: Option<u64>,
    /// [`super::topic::Published::generation`] when it was opened.
    pub(super) generation: u64,
}

impl SegmentCursor {
    /// Opens `path` positioned at byte `pos`.
    pub(super) fn open(
        path: PathBuf,
        base: u64,
        pos: u64,
    ) -> Result<SegmentCursor, EmbeddedLogError> {
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
    pub(super) fn pos(&self) -> u64 {
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
    pub(super) fn next_frame(
        &mut self,
        limit: u64,
        skip_below: u64,
        build: bool,
    ) -> io::Result<Frame> {
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
        // Key and payload are copied apart: slicing one shared copy turned
        // every record's buffer into a reference-counted one (an allocation
        // and atomic counts per record, 3% of the pipeline bench's CPU),
        // for a key of a few bytes.
        let record = build.then(|| {
            let (key, payload) = frame[HEADER_LEN..].split_at(key_len);
            Record {
                offset,
                key: Bytes::copy_from_slice(key),
                payload: Bytes::copy_from_slice(payload),
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
