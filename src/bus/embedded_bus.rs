//! [`Log`] over the embedded on-disk log, for roles in one process.
//!
//! File work runs on tokio's blocking pool; a watch channel per topic wakes
//! waiting consumers when an append lands, so a consumer never spins.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::embedded::{EmbeddedLog, LogReader};
use super::{BusError, BusRecord, Log, Subscription};
use crate::metrics::{ConsumerLag, METRICS};

/// The embedded log, shared by every role of the process.
pub struct EmbeddedBus {
    log: Arc<EmbeddedLog>,
    /// End offset per topic; held only to clone or notify, never across an
    /// await.
    ends: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Whether commits delete the segments every group is past.
    delete_consumed: bool,
}

impl EmbeddedBus {
    /// Opens (creating) the log under `dir`, keeping every record: on the
    /// embedded bus the log is the truth that `tollgate replay` rebuilds
    /// ledgers from.
    pub fn open(dir: &Path) -> Result<Arc<EmbeddedBus>, BusError> {
        Self::open_with_retention(dir, false)
    }

    /// Opens a journal in front of another bus: segments every consumer
    /// group has committed past are deleted (Kafka holds them now).
    pub fn open_journal(dir: &Path) -> Result<Arc<EmbeddedBus>, BusError> {
        Self::open_with_retention(dir, true)
    }

    fn open_with_retention(
        dir: &Path,
        delete_consumed: bool,
    ) -> Result<Arc<EmbeddedBus>, BusError> {
        let log = EmbeddedLog::open(dir).map_err(|source| BusError::Embedded {
            topic: "*".into(),
            source,
        })?;
        Ok(Arc::new(EmbeddedBus {
            log: Arc::new(log),
            ends: Mutex::new(HashMap::new()),
            delete_consumed,
        }))
    }

    /// Records ever appended to `topic` (its next offset); cheap.
    pub fn end_offset(&self, topic: &str) -> Result<u64, BusError> {
        self.log.end_offset(topic).map_err(|e| embedded(topic, e))
    }

    /// The next offset `group` will read from `topic` (what it committed).
    pub async fn committed(&self, group: &str, topic: &str) -> Result<u64, BusError> {
        let log = self.log.clone();
        let (g, t) = (group.to_owned(), topic.to_owned());
        tokio::task::spawn_blocking(move || log.committed(&g, &t))
            .await
            .map_err(|e| worker(topic, e))?
            .map_err(|e| embedded(topic, e))
    }

    fn end_watch(&self, topic: &str) -> Result<watch::Sender<u64>, BusError> {
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = ends.get(topic) {
            return Ok(tx.clone());
        }
        let end = self.log.end_offset(topic).map_err(|e| embedded(topic, e))?;
        let tx = watch::Sender::new(end);
        ends.insert(topic.to_owned(), tx.clone());
        Ok(tx)
    }
}

fn embedded(topic: &str, source: super::embedded::EmbeddedLogError) -> BusError {
    BusError::Embedded {
        topic: topic.to_owned(),
        source,
    }
}

fn worker(topic: &str, e: tokio::task::JoinError) -> BusError {
    BusError::Worker {
        topic: topic.to_owned(),
        message: e.to_string(),
    }
}

#[async_trait::async_trait]
impl Log for EmbeddedBus {
    async fn append(&self, topic: &str, records: Vec<(Bytes, Bytes)>) -> Result<(), BusError> {
        if records.is_empty() {
            return Ok(());
        }
        let n = records.len() as u64;
        let log = self.log.clone();
        let owned_topic = topic.to_owned();
        let first = tokio::task::spawn_blocking(move || {
            let refs: Vec<(&[u8], &[u8])> = records
                .iter()
                .map(|(k, v)| (k.as_ref(), v.as_ref()))
                .collect();
            log.append(&owned_topic, &refs)
        })
        .await
        .map_err(|e| worker(topic, e))?
        .map_err(|e| embedded(topic, e))?;
        METRICS.bus_appended.with_label_values(&[topic]).inc_by(n);
        self.end_watch(topic)?.send_replace(first + n);
        Ok(())
    }

    async fn append_to(
        &self,
        topic: &str,
        _partition: u32,
        records: Vec<(Bytes, Bytes)>,
    ) -> Result<(), BusError> {
        self.append(topic, records).await
    }

    async fn partitions(&self, _topic: &str) -> Result<u32, BusError> {
        Ok(1)
    }

    async fn last_in(&self, topic: &str, partition: u32) -> Result<Option<BusRecord>, BusError> {
        if partition != 0 {
            return Ok(None);
        }
        let log = self.log.clone();
        let owned = topic.to_owned();
        let records = tokio::task::spawn_blocking(move || {
            let end = log.end_offset(&owned)?;
            if end == 0 {
                return Ok(Vec::new());
            }
            log.reader(&owned, end - 1)?.read(1)
        })
        .await
        .map_err(|e| worker(topic, e))?
        .map_err(|e| embedded(topic, e))?;
        Ok(records.into_iter().next().map(|r| BusRecord {
            partition: 0,
            offset: r.offset,
            key: r.key,
            payload: r.payload,
        }))
    }

    async fn subscribe(&self, group: &str, topic: &str) -> Result<Box<dyn Subscription>, BusError> {
        let end = self.end_watch(topic)?.subscribe();
        let log = self.log.clone();
        let (g, t) = (group.to_owned(), topic.to_owned());
        let reader = tokio::task::spawn_blocking(move || {
            let from = log.committed(&g, &t)?;
            log.reader(&t, from)
        })
        .await
        .map_err(|e| worker(topic, e))?
        .map_err(|e| embedded(topic, e))?;
        let lag = ConsumerLag::new(topic, group);
        lag.set(self.end_offset(topic)?.saturating_sub(reader.position()));
        METRICS.bus_consume_errors.with_label_values(&[topic]);
        Ok(Box::new(EmbeddedSubscription {
            log: self.log.clone(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            reader: Some(reader),
            end,
            delete_consumed: self.delete_consumed,
            lag,
        }))
    }
}

/// A consumer of one topic of the embedded log (one partition: 0).
struct EmbeddedSubscription {
    log: Arc<EmbeddedLog>,
    group: String,
    topic: String,
    /// Moved into the blocking pool while it reads.
    reader: Option<LogReader>,
    end: watch::Receiver<u64>,
    delete_consumed: bool,
    /// `tollgate_bus_consumer_lag_records`, set after every read.
    lag: ConsumerLag,
}

impl EmbeddedSubscription {
    async fn read(&mut self, max: usize) -> Result<Vec<BusRecord>, BusError> {
        let read = self.read_records(max).await;
        match &read {
            Ok(_) => {
                if let (Some(reader), Ok(end)) = (&self.reader, self.log.end_offset(&self.topic)) {
                    self.lag.set(end.saturating_sub(reader.position()));
                }
            }
            Err(_) => self.count_error(),
        }
        read
    }

    fn count_error(&self) {
        METRICS
            .bus_consume_errors
            .with_label_values(&[&self.topic])
            .inc();
    }

    async fn read_records(&mut self, max: usize) -> Result<Vec<BusRecord>, BusError> {
        let Some(mut reader) = self.reader.take() else {
            return Err(BusError::Worker {
                topic: self.topic.clone(),
                message: "a previous read did not finish".into(),
            });
        };
        let (reader, records) = tokio::task::spawn_blocking(move || {
            let records = reader.read(max);
            (reader, records)
        })
        .await
        .map_err(|e| worker(&self.topic, e))?;
        self.reader = Some(reader);
        let records = records.map_err(|e| embedded(&self.topic, e))?;
        Ok(records
            .into_iter()
            .map(|r| BusRecord {
                partition: 0,
                offset: r.offset,
                key: r.key,
                payload: r.payload,
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl Subscription for EmbeddedSubscription {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<BusRecord>, BusError> {
        // Mark the current end as seen first: an append landing after the
        // read below then wakes the wait instead of being missed.
        self.end.borrow_and_update();
        let mut records = self.read(max).await?;
        if records.is_empty() && !wait.is_zero() {
            if tokio::time::timeout(wait, self.end.changed()).await.is_ok() {
                records = self.read(max).await?;
            }
        }
        Ok(records)
    }

    async fn commit(&mut self, _partition: u32, next_offset: u64) -> Result<(), BusError> {
        let log = self.log.clone();
        let (g, t) = (self.group.clone(), self.topic.clone());
        let delete = self.delete_consumed;
        tokio::task::spawn_blocking(move || {
            log.commit(&g, &t, next_offset)?;
            // Retention rides on commits: segments every group is past go.
            if delete {
                log.delete_consumed(&t)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| worker(&self.topic, e))
        .and_then(|r| r.map_err(|e| embedded(&self.topic, e)))
        .inspect_err(|_| self.count_error())
    }
}
