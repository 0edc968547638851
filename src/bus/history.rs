//! Reading a topic's history: from its start up to the records that were
//! last when the read began.
//!
//! State derived from the log is rebuilt this way (the accountant's ledgers,
//! `tollgate replay`, the notifier's delivered alerts), always with a
//! reader outside any consumer group ([`Log::read_all`]), so no group's
//! offsets move and no group join is waited for.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{BusError, BusRecord, Log};

/// How long a history read may go without receiving a record before it
/// gives up: the bus is down or the records are gone.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// The offset of the last record of each non-empty partition of `topic`:
/// where a history read begun now ends.
pub async fn last_offsets(log: &dyn Log, topic: &str) -> Result<HashMap<u32, u64>, BusError> {
    let mut ends = HashMap::new();
    for p in 0..log.partitions(topic).await? {
        if let Some(last) = log.last_offset(topic, p).await? {
            ends.insert(p, last);
        }
    }
    Ok(ends)
}

/// Hands every record of `topic` up to and including `ends[partition]` to
/// `each`, in log order per partition; records of other partitions and
/// past the end are skipped. A partition is done at the first record at or
/// past its end, so a gap (compaction, retention) cannot stall the read.
/// `purpose` names the reader (in the lag metric) and the error when the read stalls
/// for a minute.
pub async fn read_history(
    log: &dyn Log,
    topic: &str,
    purpose: &str,
    mut ends: HashMap<u32, u64>,
    mut each: impl FnMut(BusRecord),
) -> Result<(), BusError> {
    if ends.is_empty() {
        return Ok(());
    }
    let mut subscription = log.read_all(topic, purpose).await?;
    let mut last_progress = Instant::now();
    while !ends.is_empty() {
        let records = subscription
            .poll(10_000, Duration::from_millis(500))
            .await?;
        if !records.is_empty() {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > IDLE_LIMIT {
            return Err(BusError::Worker {
                topic: topic.into(),
                message: format!(
                    "{purpose}: no record for {} s before the end of the history ({} partition(s) short)",
                    IDLE_LIMIT.as_secs(),
                    ends.len()
                ),
            });
        }
        for r in records {
            let Some(&end) = ends.get(&r.partition) else {
                continue;
            };
            let partition = r.partition;
            let reached = r.offset >= end;
            if r.offset <= end {
                each(r);
            }
            if reached {
                ends.remove(&partition);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::bus::local::LocalBus;

    #[tokio::test]
    async fn a_history_read_hands_over_records_up_to_the_end_it_was_given_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let bus = LocalBus::open(dir.path()).unwrap();
        let records = (0..5)
            .map(|i| (Bytes::from("k"), Bytes::from(format!("r{i}"))))
            .collect();
        bus.append("t.history", records).await.unwrap();

        let ends = last_offsets(bus.as_ref(), "t.history").await.unwrap();
        assert_eq!(ends, HashMap::from([(0, 4)]));

        let mut seen = Vec::new();
        read_history(
            bus.as_ref(),
            "t.history",
            "test",
            HashMap::from([(0, 2)]),
            |r| seen.push(r.payload),
        )
        .await
        .unwrap();
        assert_eq!(seen, vec!["r0", "r1", "r2"]);

        let mut none = 0;
        read_history(bus.as_ref(), "t.empty", "test", HashMap::new(), |_| {
            none += 1
        })
        .await
        .unwrap();
        assert_eq!(none, 0);
    }
}
