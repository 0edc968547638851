//! Reading a topic's history: from its start up to the records that were
//! last when the read began.
//!
//! State derived from the log is rebuilt this way (the accountant's ledgers,
//! `tollgate replay`, the notifier's delivered alerts), always with a
//! throwaway consumer group so no real group's offsets move.

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
        if let Some(last) = log.last_in(topic, p).await? {
            ends.insert(p, last.offset);
        }
    }
    Ok(ends)
}

/// Hands every record of `topic` up to and including `ends[partition]` to
/// `each`, in log order per partition; records of other partitions and
/// past the end are skipped. `purpose` names the throwaway group and the
/// error when the read stalls for a minute.
pub async fn read_history(
    log: &dyn Log,
    topic: &str,
    purpose: &str,
    ends: HashMap<u32, u64>,
    mut each: impl FnMut(BusRecord),
) -> Result<(), BusError> {
    let mut remaining = ends.len();
    if remaining == 0 {
        return Ok(());
    }
    let group = format!("tollgate-{purpose}-{}", uuid::Uuid::new_v4().simple());
    let mut subscription = log.subscribe(&group, topic).await?;
    let mut last_progress = Instant::now();
    while remaining > 0 {
        let records = subscription
            .poll(10_000, Duration::from_millis(500))
            .await?;
        if !records.is_empty() {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > IDLE_LIMIT {
            return Err(BusError::Worker {
                topic: topic.into(),
                message: format!(
                    "{purpose}: no record for {} s before the end of the history ({remaining} partition(s) short)",
                    IDLE_LIMIT.as_secs()
                ),
            });
        }
        for r in records {
            let Some(&end) = ends.get(&r.partition) else {
                continue;
            };
            if r.offset > end {
                continue;
            }
            if r.offset == end {
                remaining -= 1;
            }
            each(r);
        }
    }
    Ok(())
}
