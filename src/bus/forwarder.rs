//! Moves events from a gateway's local journal to Kafka.
//!
//! In Kafka mode the publisher appends every event to a journal on the
//! gateway's disk (the embedded log) and this task produces it to Kafka in
//! order, committing its journal offset only once Kafka acknowledged the
//! batch. While the broker is unreachable events simply wait in the journal
//! (the spill), bounded by disk rather than memory, and a gateway restarted
//! meanwhile picks up where it left off.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::kafka::KafkaBus;
use super::local::LocalBus;
use super::{BusError, EVENTS_TOPIC, Log, Subscription, poll_lingering};
use crate::backoff::Backoff;
use crate::metrics::METRICS;

/// The journal's consumer group: the forwarder's progress into Kafka.
pub const FORWARDER_GROUP: &str = "tollgate-forwarder";
/// Most events produced per batch.
const BATCH: usize = 5000;
/// A batch unacknowledged for this long means the broker is not taking
/// events: the journal is now holding them (spilling).
const STALL: Duration = Duration::from_secs(2);
/// How long a batch smaller than [`BATCH`] waits for more events before it
/// is produced. The events are durable in the journal already; each batch
/// costs a produce, an acknowledgement and their thread wake-ups, which at
/// moderate load (a journal append every 5 ms) were a large part of a
/// gateway's CPU time per request.
const LINGER: Duration = Duration::from_millis(50);
/// Longest time between journal commits while events keep coming (and a
/// commit whenever the journal runs dry or the forwarder stops). A commit
/// is a file written, two fsyncs and a rename; one per delivered batch (every
/// 5 ms at moderate load) was a large part of a gateway's CPU time per
/// request. What it records is only where a restart resumes: a crash
/// re-sends at most this long's events, which the accountant drops by
/// event ID, as it did a re-sent batch before.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// Runs until `stop` is cancelled and the journal is empty, or until
/// `deadline` after `stop` if Kafka does not take the rest; what is left
/// stays in the journal for the next start.
pub async fn run(
    journal: Arc<LocalBus>,
    kafka: Arc<KafkaBus>,
    stop: CancellationToken,
    deadline: Duration,
) -> Result<(), BusError> {
    let delivered = Arc::new(AtomicU64::new(0));
    let gauge = tokio::spawn(report_backlog(
        journal.clone(),
        delivered.clone(),
        stop.clone(),
    ));
    let drained = async {
        ensure_topics(&kafka).await;
        forward(&journal, &kafka, &delivered, &stop).await
    };
    let _stop_gauge = DropAbort(gauge);
    tokio::select! {
        result = drained => result,
        _ = async { stop.cancelled().await; tokio::time::sleep(deadline).await } => {
            let left = backlog(&journal, &delivered).await.unwrap_or(0);
            tracing::warn!(events = left, "shutdown deadline passed with events still in the journal; they are sent on the next start");
            Ok(())
        }
    }
}

/// Creates the topics, retrying while the broker is unreachable: the
/// gateway keeps serving (into the journal) meanwhile.
async fn ensure_topics(kafka: &KafkaBus) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match kafka.ensure_topics().await {
            Ok(()) => return,
            Err(e) => {
                METRICS.bus_broker_up.set(0);
                tracing::error!(error = %e, retry_in_ms = backoff.peek().as_millis() as u64,
                    "cannot set up Kafka topics; events wait in the journal");
                tokio::time::sleep(backoff.next_wait()).await;
            }
        }
    }
}

/// Produces the journal to Kafka in order; `delivered` follows the journal
/// offset after the last batch Kafka acknowledged.
async fn forward(
    journal: &LocalBus,
    kafka: &KafkaBus,
    delivered: &AtomicU64,
    stop: &CancellationToken,
) -> Result<(), BusError> {
    let mut subscription = journal.subscribe(FORWARDER_GROUP, EVENTS_TOPIC).await?;
    let mut commits = Commits {
        pending: None,
        last: Instant::now(),
    };
    // True from a failed delivery until the journal is empty again: events
    // forwarded meanwhile were spilled (they waited out an outage).
    let mut in_outage = false;
    loop {
        let wait = if stop.is_cancelled() {
            Duration::ZERO
        } else {
            Duration::from_millis(250)
        };
        let records = poll_lingering(subscription.as_mut(), BATCH, wait, LINGER, stop).await?;
        let Some(last) = records.last().map(|r| r.offset) else {
            commits.flush(subscription.as_mut()).await?;
            if stop.is_cancelled() {
                tracing::info!("journal forwarded to Kafka; forwarder stopped");
                return Ok(());
            }
            in_outage = false;
            continue;
        };
        let n = records.len() as u64;
        let batch: Vec<_> = records.into_iter().map(|r| (r.key, r.payload)).collect();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let delivered = kafka.append(EVENTS_TOPIC, batch.clone());
            tokio::pin!(delivered);
            let result = tokio::select! {
                result = &mut delivered => result,
                _ = tokio::time::sleep(STALL) => {
                    if !in_outage {
                        tracing::warn!(events = n, "Kafka has not acknowledged events for {STALL:?}; new events wait in the journal");
                    }
                    in_outage = true;
                    METRICS.bus_broker_up.set(0);
                    delivered.await
                }
            };
            match result {
                Ok(()) => break,
                Err(e) => {
                    in_outage = true;
                    METRICS.bus_broker_up.set(0);
                    tracing::error!(error = %e, events = n, retry_in_ms = backoff.peek().as_millis() as u64,
                        "events not delivered to Kafka; they stay in the journal and are retried");
                    tokio::time::sleep(backoff.next_wait()).await;
                }
            }
        }
        METRICS.bus_broker_up.set(1);
        if in_outage {
            METRICS.bus_spilled.inc_by(n);
        }
        delivered.store(last + 1, Ordering::Release);
        commits.pending = Some(last + 1);
        if commits.last.elapsed() >= COMMIT_INTERVAL {
            commits.flush(subscription.as_mut()).await?;
        }
    }
}

/// The forwarder's journal commits, at most one per [`COMMIT_INTERVAL`]
/// while events keep coming.
struct Commits {
    /// Journal offset delivered but not yet committed.
    pending: Option<u64>,
    /// When the last commit was made.
    last: Instant,
}

impl Commits {
    /// Commits what was delivered, if anything is pending.
    async fn flush(&mut self, subscription: &mut dyn Subscription) -> Result<(), BusError> {
        if let Some(next) = self.pending.take() {
            subscription.commit(0, next).await?;
            self.last = Instant::now();
        }
        Ok(())
    }
}

/// Events in the journal that Kafka has not acknowledged yet: past the
/// commit, or past what this forwarder has delivered since it started,
/// whichever is further.
async fn backlog(journal: &LocalBus, delivered: &AtomicU64) -> Result<u64, BusError> {
    let committed = journal.committed(FORWARDER_GROUP, EVENTS_TOPIC).await?;
    backlog_past(journal, committed, delivered)
}

/// [`backlog`] with the committed offset already known.
fn backlog_past(
    journal: &LocalBus,
    committed: u64,
    delivered: &AtomicU64,
) -> Result<u64, BusError> {
    let end = journal.end_offset(EVENTS_TOPIC)?;
    let done = committed.max(delivered.load(Ordering::Acquire));
    Ok(end.saturating_sub(done))
}

/// Keeps `tollgate_bus_journal_backlog_events` current, also while a
/// delivery is stuck (which is exactly when it matters).
///
/// The committed offset is read from disk once: after that this forwarder
/// commits only what it delivered, which `delivered` counts. Reading it on
/// every tick was a file read on a blocking thread twice a second in every
/// idle gateway.
async fn report_backlog(
    journal: Arc<LocalBus>,
    delivered: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut committed_at_start = None;
    loop {
        if committed_at_start.is_none() {
            committed_at_start = journal.committed(FORWARDER_GROUP, EVENTS_TOPIC).await.ok();
        }
        let left = committed_at_start.map(|c| backlog_past(&journal, c, &delivered));
        if let Some(Ok(left)) = left {
            METRICS.bus_journal_backlog.set(left as i64);
            if left == 0 && stop.is_cancelled() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Aborts a helper task when the forwarder returns.
struct DropAbort(tokio::task::JoinHandle<()>);

impl Drop for DropAbort {
    fn drop(&mut self) {
        self.0.abort();
    }
}
