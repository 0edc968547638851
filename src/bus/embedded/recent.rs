//! [`RecentRecords`]: the last records appended to a topic, kept in memory
//! so a consumer that keeps up reads them without touching the disk.
//!
//! A consumer that keeps up with a topic reads each batch right after its
//! append. Reading it back from the segment file meant a trip to a blocking
//! thread and back for a few records that were still in memory: at
//! moderate load those thread wake-ups were a large part of the process's
//! CPU time per request. The records are the appended `Bytes` themselves
//! (no copy), bounded by their size; a consumer that falls further behind
//! reads from the file as before.

use std::collections::VecDeque;

use bytes::Bytes;

use super::Record;

/// Most bytes of keys and payloads kept per topic. Enough for the batches
/// of moderate load (a few milliseconds of events) to be read from memory;
/// under heavy load consumers read from the file anyway.
pub(super) const RECENT_BYTES: usize = 512 * 1024;

/// The records at the end of a topic, oldest first, contiguous by offset
/// and ending at the topic's published end.
pub(super) struct RecentRecords {
    records: VecDeque<Record>,
    /// Offset the next appended record gets (the published end).
    end: u64,
    /// Bytes of keys and payloads held.
    bytes: usize,
    /// Most bytes held.
    cap: usize,
}

impl RecentRecords {
    /// None held yet; the topic's next record gets offset `end`.
    pub(super) fn new(end: u64, cap: usize) -> RecentRecords {
        RecentRecords {
            records: VecDeque::new(),
            end,
            bytes: 0,
            cap,
        }
    }

    /// Keeps a batch just made durable at offsets `first..`, dropping the
    /// oldest records beyond the cap. A batch not following on from what is
    /// held (it never happens: offsets are given under the writer lock)
    /// starts over rather than leave a gap.
    pub(super) fn push(&mut self, first: u64, batch: &[(Bytes, Bytes)]) {
        if first != self.end {
            self.records.clear();
            self.bytes = 0;
        }
        for (i, (key, payload)) in batch.iter().enumerate() {
            self.bytes += key.len() + payload.len();
            self.records.push_back(Record {
                offset: first + i as u64,
                key: key.clone(),
                payload: payload.clone(),
            });
        }
        self.end = first + batch.len() as u64;
        while self.bytes > self.cap {
            let Some(old) = self.records.pop_front() else {
                break;
            };
            self.bytes -= old.key.len() + old.payload.len();
        }
    }

    /// Up to `max` records from offset `next`, if they are all held and
    /// there is at least one; `None` sends the reader to the file.
    pub(super) fn read_from(&self, next: u64, max: usize) -> Option<Vec<Record>> {
        let first = self.records.front()?.offset;
        if next < first || next >= self.end || max == 0 {
            return None;
        }
        let skip = (next - first) as usize;
        Some(self.records.iter().skip(skip).take(max).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize, size: usize) -> Vec<(Bytes, Bytes)> {
        (0..n)
            .map(|_| (Bytes::new(), Bytes::from(vec![b'x'; size])))
            .collect()
    }

    fn offsets(records: Option<Vec<Record>>) -> Option<Vec<u64>> {
        records.map(|r| r.iter().map(|r| r.offset).collect())
    }

    #[test]
    fn reads_held_records_from_an_offset_and_nothing_before_or_at_the_end() {
        let mut recent = RecentRecords::new(10, 1000);
        assert_eq!(offsets(recent.read_from(10, 5)), None, "nothing held yet");
        recent.push(10, &batch(3, 10));
        recent.push(13, &batch(2, 10));
        assert_eq!(offsets(recent.read_from(11, 3)), Some(vec![11, 12, 13]));
        assert_eq!(offsets(recent.read_from(13, 9)), Some(vec![13, 14]));
        assert_eq!(offsets(recent.read_from(9, 5)), None, "before what is held");
        assert_eq!(offsets(recent.read_from(15, 5)), None, "at the end");
        assert_eq!(offsets(recent.read_from(10, 0)), None);
    }

    #[test]
    fn the_oldest_records_go_once_the_bytes_exceed_the_cap() {
        let mut recent = RecentRecords::new(0, 100);
        recent.push(0, &batch(4, 30));
        assert_eq!(
            offsets(recent.read_from(0, 9)),
            None,
            "offset 0 was dropped"
        );
        assert_eq!(offsets(recent.read_from(1, 9)), Some(vec![1, 2, 3]));
        recent.push(4, &batch(1, 500));
        assert_eq!(offsets(recent.read_from(3, 9)), None);
        assert_eq!(offsets(recent.read_from(4, 9)), None, "larger than the cap");
    }

    #[test]
    fn a_batch_that_does_not_follow_on_replaces_what_is_held() {
        let mut recent = RecentRecords::new(0, 1000);
        recent.push(0, &batch(2, 1));
        recent.push(5, &batch(2, 1));
        assert_eq!(offsets(recent.read_from(0, 9)), None);
        assert_eq!(offsets(recent.read_from(5, 9)), Some(vec![5, 6]));
    }
}
