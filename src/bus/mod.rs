//! The bus: an append-only log with consumer groups and committed offsets.
//!
//! Roles talk only through it, so each can run alone or beside the others.
//! [`Log`] is what every bus implementation offers; the embedded on-disk log
//! is the default, so `tollgate serve` needs nothing installed.

pub mod embedded;
pub mod forwarder;
pub mod history;
pub mod kafka;
pub mod local;
pub mod oversize;
pub mod publisher;
pub mod reader;
pub mod records;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

/// Topic the gateway's raw events go to.
pub const EVENTS_TOPIC: &str = "tollgate.events.v1";
/// Topic the accountant's priced events go to; the sink reads it.
pub const COSTED_TOPIC: &str = "tollgate.costed.v1";
/// Compacted topic of budget state (latest per budget and period).
pub const BUDGETS_TOPIC: &str = "tollgate.budgets.v1";
/// Topic of budget threshold alerts; the notifier reads it.
pub const ALERTS_TOPIC: &str = "tollgate.alerts.v1";
/// The control plane's topic (see `control`): one partition, compacted on
/// Kafka by entity, kept whole on the embedded log.
pub const CONTROL_TOPIC: &str = "tollgate.control.v1";
/// Credentials the control topic only references (webhook URLs and
/// secrets created over the admin API): one partition, compacted on Kafka
/// by webhook; never part of the audit log (see `control::secrets`).
pub const CONTROL_SECRETS_TOPIC: &str = "tollgate.control.secrets.v1";

/// One record read from the bus, with where it sits.
#[derive(Debug, Clone)]
pub struct BusRecord {
    pub partition: u32,
    pub offset: u64,
    pub key: Bytes,
    pub payload: Bytes,
}

/// Why a bus operation failed; names the topic involved.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("embedded log, topic {topic}: {source}")]
    Embedded {
        topic: String,
        source: embedded::EmbeddedLogError,
    },
    #[error("bus worker for topic {topic} stopped unexpectedly: {message}")]
    Worker { topic: String, message: String },
    #[error("kafka ({brokers}), topic {topic}: {message}")]
    Kafka {
        brokers: String,
        topic: String,
        message: String,
    },
}

/// Called by a subscription just before partitions are taken from this
/// consumer (a consumer-group rebalance): the consumer makes durable what it
/// holds for them and returns the `(partition, next_offset)` pairs to commit
/// while it still owns them, so the next owner starts exactly after.
pub type RevokeHook = Arc<dyn Fn(&[u32]) -> Vec<(u32, u64)> + Send + Sync>;

/// An append-only log with consumer groups.
#[async_trait::async_trait]
pub trait Log: Send + Sync + 'static {
    /// Appends `(key, payload)` records in order; durable when it returns.
    async fn append(&self, topic: &str, records: Vec<(Bytes, Bytes)>) -> Result<(), BusError>;

    /// Appends records to one chosen partition (a derived topic mirroring
    /// its source's partitions). The embedded log has one partition.
    async fn append_to(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<(Bytes, Bytes)>,
    ) -> Result<(), BusError>;

    /// How many partitions `topic` has (the embedded log: one).
    async fn partitions(&self, topic: &str) -> Result<u32, BusError>;

    /// The last record of one partition of `topic` (none if empty), so a
    /// producer that derives one topic from another can resume exactly.
    async fn last_in(&self, topic: &str, partition: u32) -> Result<Option<BusRecord>, BusError>;

    /// The offset of the last record of one partition of `topic` (none if
    /// empty): where a read to the end stops. Kafka tells it without
    /// reading the record (a consumer of its own costs a connection).
    async fn last_offset(&self, topic: &str, partition: u32) -> Result<Option<u64>, BusError> {
        Ok(self.last_in(topic, partition).await?.map(|r| r.offset))
    }

    /// Joins consumer group `group` on `topic`, resuming after the group's
    /// last committed offsets.
    async fn subscribe(&self, group: &str, topic: &str) -> Result<Box<dyn Subscription>, BusError>;

    /// Reads every partition of `topic` from its first record, outside any
    /// consumer group, for state rebuilt from a whole topic (the control
    /// plane, budget state, history). Its commits are no-ops. No group is
    /// joined, so records come at once: a Kafka group join waits about
    /// half the session timeout, which a gateway would spend before it
    /// serves. `reader` names it in the lag metric. Partitions added to
    /// the topic later are not read.
    async fn read_all(&self, topic: &str, reader: &str) -> Result<Box<dyn Subscription>, BusError>;
}

/// A consumer's view of a topic.
#[async_trait::async_trait]
pub trait Subscription: Send {
    /// Returns up to `max` records, waiting at most `wait` for the first.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<BusRecord>, BusError>;

    /// Records that everything in `partition` before `next_offset` is done,
    /// durably: a restarted consumer resumes there.
    async fn commit(&mut self, partition: u32, next_offset: u64) -> Result<(), BusError>;

    /// Installs the hook run when partitions are revoked. Buses without
    /// rebalances (the embedded log: one consumer per group) never call it.
    fn on_revoke(&mut self, _hook: RevokeHook) {}

    /// Partitions revoked since the last call: whatever the consumer keeps
    /// per partition (dedup state, positions) must be forgotten, because a
    /// later assignment may resume from another consumer's progress.
    fn take_revoked(&mut self) -> Vec<u32> {
        Vec::new()
    }
}

/// Up to `max` records, waiting at most `wait` for the first; when fewer
/// came, waits `linger` more (or until `stop`) and takes what arrived
/// meanwhile too. For consumers whose cost is per batch (an fsync'd
/// append, thread wake-ups), so that moderate load makes batches of many
/// records instead of one or two each.
pub async fn poll_lingering(
    subscription: &mut dyn Subscription,
    max: usize,
    wait: Duration,
    linger: Duration,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<Vec<BusRecord>, BusError> {
    let mut records = subscription.poll(max, wait).await?;
    if records.is_empty() || records.len() >= max {
        return Ok(records);
    }
    tokio::select! {
        () = tokio::time::sleep(linger) => {}
        () = stop.cancelled() => {}
    }
    let more = subscription
        .poll(max - records.len(), Duration::ZERO)
        .await?;
    records.extend(more);
    Ok(records)
}
