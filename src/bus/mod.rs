//! The bus: an append-only log with consumer groups and committed offsets.
//!
//! Roles talk only through it, so each can run alone or beside the others.
//! [`Log`] is what every bus implementation offers; the embedded on-disk log
//! is the default, so `tollgate serve` needs nothing installed.

pub mod embedded;
pub mod forwarder;
mod handed;
pub mod history;
pub mod kafka;
pub mod local;
pub mod oversize;
pub mod publisher;
pub mod reader;
pub mod records;

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::event::LlmEvent;

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
    /// What the payload decodes to, handed over by its producer in this
    /// process (see [`Decoded`]); `None` means: decode the payload.
    pub decoded: Option<Decoded>,
}

impl BusRecord {
    /// A record read from storage (nothing handed over).
    pub fn stored(partition: u32, offset: u64, key: Bytes, payload: Bytes) -> BusRecord {
        BusRecord {
            partition,
            offset,
            key,
            payload,
            decoded: None,
        }
    }

    /// The value its producer handed over, if it is a `T` no one else
    /// holds; the caller decodes the payload otherwise.
    pub fn take_decoded<T: Any + Send + Sync>(&mut self) -> Option<T> {
        self.decoded.take()?.take()
    }

    /// The event the record holds: the one its producer handed over, or
    /// its payload decoded.
    pub fn event(&mut self) -> Result<LlmEvent, serde_json::Error> {
        match self.take_decoded::<LlmEvent>() {
            Some(event) => {
                // Tests run debug builds: there every handed event is
                // checked against its bytes, so the two cannot drift apart.
                debug_assert_eq!(
                    Some(&event),
                    LlmEvent::from_json(&self.payload).ok().as_ref(),
                    "a handed-over event differs from its record"
                );
                Ok(event)
            }
            None => LlmEvent::from_json(&self.payload),
        }
    }
}

/// A record's payload as its producer held it in memory, handed to a
/// consumer in the same process. In `tollgate serve` the publisher, the
/// accountant and the sink share one process: decoding each event's JSON
/// again in the accountant and in the sink was a third of the pipeline's
/// CPU time, although the value was in memory all along. The bytes are
/// still what is stored and what every other reader (a restart, another
/// process, Kafka) decodes; this only spares the decode, and a consumer
/// that finds nothing handed over decodes as before. Opaque to the bus.
#[derive(Clone)]
pub struct Decoded(Arc<dyn Any + Send + Sync>);

impl Decoded {
    /// Wraps what a record's payload decodes to.
    pub fn new<T: Any + Send + Sync>(value: T) -> Decoded {
        Decoded(Arc::new(value))
    }

    /// The value, if it is a `T` and this is its only holder.
    pub fn take<T: Any + Send + Sync>(self) -> Option<T> {
        Arc::downcast::<T>(self.0)
            .ok()
            .and_then(|v| Arc::try_unwrap(v).ok())
    }
}

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decoded(..)")
    }
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

    /// [`Log::append`] (`partition` `None`) or [`Log::append_to`], handing
    /// each record's decoded value (one per record, `None` where there is
    /// none) to a consumer in this process that subscribed with
    /// [`Log::subscribe_decoded`]. Buses between processes store the
    /// bytes only.
    async fn append_decoded(
        &self,
        topic: &str,
        partition: Option<u32>,
        records: Vec<(Bytes, Bytes)>,
        _decoded: Vec<Option<Decoded>>,
    ) -> Result<(), BusError> {
        match partition {
            Some(p) => self.append_to(topic, p, records).await,
            None => self.append(topic, records).await,
        }
    }

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

    /// [`Log::subscribe`], taking the values producers in this process
    /// handed over with [`Log::append_decoded`] ([`BusRecord::decoded`]).
    /// One consumer group per topic should: the first to read a record
    /// takes its value.
    async fn subscribe_decoded(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<Box<dyn Subscription>, BusError> {
        self.subscribe(group, topic).await
    }

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
