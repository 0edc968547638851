//! The bus: an append-only log with consumer groups and committed offsets.
//!
//! Roles talk only through it, so each can run alone or beside the others.
//! [`Log`] is what every bus implementation offers; the embedded on-disk log
//! is the default, so `tollgate serve` needs nothing installed.

pub mod embedded;
pub mod embedded_bus;
pub mod publisher;

use std::time::Duration;

use bytes::Bytes;

/// Topic the gateway's raw events go to.
pub const EVENTS_TOPIC: &str = "tollgate.events.v1";
/// Topic the accountant's priced events go to; the sink reads it.
pub const COSTED_TOPIC: &str = "tollgate.costed.v1";

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
}

/// An append-only log with consumer groups.
#[async_trait::async_trait]
pub trait Log: Send + Sync + 'static {
    /// Appends `(key, payload)` records in order; durable when it returns.
    async fn append(&self, topic: &str, records: Vec<(Bytes, Bytes)>) -> Result<(), BusError>;

    /// The last record of each partition of `topic` (none if empty), so a
    /// producer that derives one topic from another can resume exactly.
    async fn last(&self, topic: &str) -> Result<Vec<BusRecord>, BusError>;

    /// Joins consumer group `group` on `topic`, resuming after the group's
    /// last committed offsets.
    async fn subscribe(&self, group: &str, topic: &str)
    -> Result<Box<dyn Subscription>, BusError>;
}

/// A consumer's view of a topic.
#[async_trait::async_trait]
pub trait Subscription: Send {
    /// Returns up to `max` records, waiting at most `wait` for the first.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<BusRecord>, BusError>;

    /// Records that everything in `partition` before `next_offset` is done,
    /// durably: a restarted consumer resumes there.
    async fn commit(&mut self, partition: u32, next_offset: u64) -> Result<(), BusError>;
}
