//! Values handed from producers to a consumer in the same process (see
//! [`Decoded`]), kept by the embedded bus between an append and the read
//! of the same records.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::{BusRecord, Decoded};
use crate::metrics::METRICS;

/// At most this many values wait per topic; values handed over while it
/// is full are dropped and their consumer decodes those records instead.
/// An event's value holds a few KB, so this bounds the memory (a few MiB
/// per topic while the consumer lags), not correctness. It covers what
/// arrives while a consumer lingers at full load (the accountant 50 ms,
/// the sink 100 ms, at ~16,000 events/s).
const KEPT_PER_TOPIC: usize = 2048;

/// Handed-over values per topic, in offset order; only topics a consumer
/// takes from ([`Handed::open`]) keep any.
#[derive(Default)]
pub struct Handed {
    /// Held only to push or pop, never across an await.
    topics: Mutex<HashMap<String, VecDeque<(u64, Decoded)>>>,
}

impl Handed {
    /// From now on values appended to `topic` are kept for a consumer.
    pub fn open(&self, topic: &str) {
        self.lock().entry(topic.to_owned()).or_default();
    }

    /// Keeps the values of records appended to `topic` from offset
    /// `first` on (one per record, in order), if a consumer takes them.
    pub fn put(&self, topic: &str, first: u64, decoded: Vec<Option<Decoded>>) {
        if decoded.is_empty() {
            return;
        }
        let mut topics = self.lock();
        let Some(kept) = topics.get_mut(topic) else {
            return;
        };
        // The oldest are kept: a consumer that lags reads them next, and
        // the newest would wait longest (or be dropped unread).
        let room = KEPT_PER_TOPIC.saturating_sub(kept.len());
        let values = (first..).zip(decoded);
        let values = values.filter_map(|(offset, d)| Some((offset, d?)));
        kept.extend(values.take(room));
    }

    /// Gives each of `records` (read in offset order) the value handed
    /// over for it, dropping values of offsets the reader is past.
    pub fn attach(&self, topic: &str, records: &mut [BusRecord]) {
        let mut topics = self.lock();
        let Some(kept) = topics.get_mut(topic) else {
            return;
        };
        let mut taken = 0;
        for record in records {
            while kept.front().is_some_and(|(o, _)| *o < record.offset) {
                kept.pop_front();
            }
            if kept.front().is_some_and(|(o, _)| *o == record.offset) {
                record.decoded = kept.pop_front().map(|(_, d)| d);
                taken += 1;
            }
        }
        METRICS.bus_handed.with_label_values(&[topic]).inc_by(taken);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<(u64, Decoded)>>> {
        // A panic while holding it cannot leave the queues inconsistent
        // (each operation is a push or a pop), so a poisoned lock is used.
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn read(offsets: std::ops::Range<u64>) -> Vec<BusRecord> {
        offsets
            .map(|o| BusRecord::stored(0, o, Bytes::new(), Bytes::new()))
            .collect()
    }

    #[test]
    fn values_reach_the_records_of_their_offsets_once() {
        let handed = Handed::default();
        handed.open("t");
        handed.put(
            "t",
            10,
            vec![Some(Decoded::new(10u64)), None, Some(Decoded::new(12u64))],
        );
        let mut records = read(9..14);
        handed.attach("t", &mut records);
        let got: Vec<Option<u64>> = records.iter_mut().map(|r| r.take_decoded()).collect();
        assert_eq!(got, [None, Some(10), None, Some(12), None]);
        let mut again = read(10..13);
        handed.attach("t", &mut again);
        assert!(again.iter().all(|r| r.decoded.is_none()), "taken once");
    }

    #[test]
    fn nothing_is_kept_for_a_topic_no_consumer_takes_and_little_for_one_that_lags() {
        let handed = Handed::default();
        handed.put("nobody", 0, vec![Some(Decoded::new(1u8))]);
        assert!(handed.lock().get("nobody").is_none());
        handed.open("t");
        let many = (0..KEPT_PER_TOPIC as u64 + 10)
            .map(|v| Some(Decoded::new(v)))
            .collect();
        handed.put("t", 0, many);
        assert_eq!(handed.lock()["t"].len(), KEPT_PER_TOPIC);
        let last = KEPT_PER_TOPIC as u64;
        let mut records = read(last - 1..last + 1);
        handed.attach("t", &mut records);
        let got: Vec<Option<u64>> = records.iter_mut().map(|r| r.take_decoded()).collect();
        assert_eq!(got, [Some(last - 1), None], "the newest were dropped");
        handed.put("t", last + 10, vec![Some(Decoded::new(0u64))]);
        assert_eq!(handed.lock()["t"].len(), 1, "room again once read");
    }

    #[test]
    fn a_value_of_another_type_is_not_taken() {
        let mut record = read(0..1).remove(0);
        record.decoded = Some(Decoded::new("text"));
        assert_eq!(record.take_decoded::<u64>(), None);
    }
}
