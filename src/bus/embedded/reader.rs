//! [`LogReader`]: a consumer's sequential read of one topic, following
//! segment rolls, compaction and retention.
//!
//! Separate from the topic's append path: a reader only copies the
//! published end under a short lock and reads through its own file handle,
//! so it never waits on an fsync.

use std::sync::Arc;

use super::cursor::SegmentCursor;
use super::frame::Frame;
use super::topic::Topic;
use super::{EmbeddedLogError, Record, io_err};

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
    /// A reader of `topic` whose first record will be `from`; its segment
    /// is opened on the first read that has a record to return.
    pub(super) fn new(topic: Arc<Topic>, from: u64) -> LogReader {
        LogReader {
            topic,
            next: from,
            cursor: None,
        }
    }

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
    use super::super::EmbeddedLog;
    use super::super::files::segment_name;
    use super::super::frame::HEADER_LEN;
    use super::super::tests::{append_numbered, small_segments};
    use super::*;

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
}
