//! The bus on one machine: [`Log`] over the embedded on-disk log
//! ([`super::embedded`]), for roles in one process and for the gateway's
//! journal in front of Kafka.
//!
//! The embedded log is blocking storage (segment files, frames, fsync);
//! this is the async bus on top of it: subscriptions with consumer groups
//! and committed offsets, consumer lag, and consumers woken when records
//! land. [`LocalBus`] is to the embedded log what `KafkaBus` is to Kafka.
//!
//! File work runs on tokio's blocking pool (opening the log recovers every
//! topic there, and a topic first used later is opened there too); a watch
//! channel per topic wakes waiting consumers when an append lands, so a
//! consumer never spins. [`Maintenance`] keeps the log's size in check:
//! the budgets topic is compacted (a start reads about one record per
//! ledger, not its history) and other topics lose consumed segments older
//! than `bus.retention_days`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;

use super::embedded::{EmbeddedLog, EmbeddedLogError, LogReader, Record};
use super::handed::Handed;
use super::{BusError, BusRecord, Decoded, Log, Subscription};
use crate::metrics::{ConsumerLag, METRICS};

/// The embedded log, shared by every role of the process.
pub struct LocalBus {
    log: Arc<EmbeddedLog>,
    /// End offset per topic; held only to clone or notify, never across an
    /// await.
    ends: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Whether commits delete the segments every group is past.
    delete_consumed: bool,
    /// Compaction and retention, for [`LocalBus::maintain`].
    maintenance: Maintenance,
    /// Decoded values producers handed over, until their consumer reads.
    handed: Arc<Handed>,
}

/// How the embedded log is kept from growing without bound (see
/// `embedded::maintenance`).
#[derive(Debug, Clone, Default)]
pub struct Maintenance {
    /// Topics where only the newest record of a key matters: compacted.
    pub compacted: Vec<String>,
    /// Other topics' sealed segments last written longer ago than this
    /// are deleted once every consumer group is past them; `None` keeps them.
    pub retention: Option<Duration>,
    /// A compacted topic's active segment is sealed (so it can be
    /// compacted) once it holds more bytes than this.
    pub roll_above: u64,
}

impl LocalBus {
    /// Opens (creating) the log under `dir`, keeping every record: on the
    /// embedded bus the log is the truth that `tollgate replay` rebuilds
    /// ledgers from.
    pub fn open(dir: &Path) -> Result<Arc<LocalBus>, BusError> {
        Self::open_plain(dir, false, Maintenance::default()).map(Arc::new)
    }

    /// Opens a journal in front of another bus: segments every consumer
    /// group has committed past are deleted (Kafka holds them now).
    pub fn open_journal(dir: &Path) -> Result<Arc<LocalBus>, BusError> {
        Self::open_plain(dir, true, Maintenance::default()).map(Arc::new)
    }

    /// Opens the log (blocking) with its retention settings.
    fn open_plain(
        dir: &Path,
        delete_consumed: bool,
        maintenance: Maintenance,
    ) -> Result<LocalBus, BusError> {
        let log = EmbeddedLog::open(dir).map_err(|e| embedded("*", e))?;
        Ok(LocalBus {
            log: Arc::new(log),
            ends: Mutex::new(HashMap::new()),
            delete_consumed,
            maintenance,
            handed: Arc::default(),
        })
    }

    /// [`LocalBus::open`] on a blocking thread that also recovers every
    /// topic on disk and runs `maintenance` once, before any role reads.
    pub async fn open_maintained(
        dir: &Path,
        maintenance: Maintenance,
    ) -> Result<Arc<LocalBus>, BusError> {
        let dir = dir.to_owned();
        let bus = tokio::task::spawn_blocking(move || {
            let bus = Self::open_plain(&dir, false, maintenance)?;
            bus.log.recover_all().map_err(|e| embedded("*", e))?;
            run_maintenance(&bus.log, &bus.maintenance)?;
            Ok::<_, BusError>(Arc::new(bus))
        })
        .await
        .map_err(|e| worker("*", e))??;
        Ok(bus)
    }

    /// [`LocalBus::open_journal`] on a blocking thread, recovering every
    /// topic on disk there.
    pub async fn open_journal_recovered(dir: &Path) -> Result<Arc<LocalBus>, BusError> {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || {
            let bus = Self::open_journal(&dir)?;
            bus.log.recover_all().map_err(|e| embedded("*", e))?;
            Ok(bus)
        })
        .await
        .map_err(|e| worker("*", e))?
    }

    /// Compacts and applies retention once (on a blocking thread).
    pub async fn maintain(&self) -> Result<(), BusError> {
        let (log, maintenance) = (self.log.clone(), self.maintenance.clone());
        tokio::task::spawn_blocking(move || run_maintenance(&log, &maintenance))
            .await
            .map_err(|e| worker("*", e))?
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

    /// The topic's end-offset channel; a topic's first use opens (and
    /// recovers) it on a blocking thread.
    async fn end_watch(&self, topic: &str) -> Result<watch::Sender<u64>, BusError> {
        if let Some(tx) = self
            .ends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
        {
            return Ok(tx.clone());
        }
        let (log, owned) = (self.log.clone(), topic.to_owned());
        let end = tokio::task::spawn_blocking(move || log.end_offset(&owned))
            .await
            .map_err(|e| worker(topic, e))?
            .map_err(|e| embedded(topic, e))?;
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        Ok(ends
            .entry(topic.to_owned())
            .or_insert_with(|| watch::Sender::new(end))
            .clone())
    }
}

/// One pass of compaction (for `maintenance.compacted`) and retention (the
/// other topics), logging what it did; blocking.
fn run_maintenance(log: &EmbeddedLog, maintenance: &Maintenance) -> Result<(), BusError> {
    let topics = log.topics_on_disk().map_err(|e| embedded("*", e))?;
    for topic in topics {
        if maintenance.compacted.contains(&topic) {
            let report = log
                .compact(&topic, maintenance.roll_above)
                .map_err(|e| embedded(&topic, e))?;
            if report.segments > 0 {
                tracing::info!(
                    topic,
                    segments = report.segments,
                    records_read = report.records_read,
                    records_kept = report.records_kept,
                    "embedded log: compacted"
                );
            }
        } else if let Some(retention) = maintenance.retention {
            let cutoff = SystemTime::now()
                .checked_sub(retention)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            log.delete_expired(&topic, cutoff)
                .map_err(|e| embedded(&topic, e))?;
        }
    }
    Ok(())
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
impl Log for LocalBus {
    async fn append(&self, topic: &str, records: Vec<(Bytes, Bytes)>) -> Result<(), BusError> {
        self.append_handing(topic, records, Vec::new()).await
    }

    async fn append_decoded(
        &self,
        topic: &str,
        _partition: Option<u32>,
        records: Vec<(Bytes, Bytes)>,
        decoded: Vec<Option<Decoded>>,
    ) -> Result<(), BusError> {
        self.append_handing(topic, records, decoded).await
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
        Ok(records
            .into_iter()
            .next()
            .map(|r| BusRecord::stored(0, r.offset, r.key, r.payload)))
    }

    async fn subscribe(&self, group: &str, topic: &str) -> Result<Box<dyn Subscription>, BusError> {
        self.consumer(topic, Some(group), group, false).await
    }

    async fn subscribe_decoded(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<Box<dyn Subscription>, BusError> {
        self.consumer(topic, Some(group), group, true).await
    }

    async fn read_all(&self, topic: &str, reader: &str) -> Result<Box<dyn Subscription>, BusError> {
        self.consumer(topic, None, reader, false).await
    }
}

impl LocalBus {
    /// Appends `records` (durable when it returns), then keeps their
    /// `decoded` values for a consumer taking them, before waking
    /// consumers.
    async fn append_handing(
        &self,
        topic: &str,
        records: Vec<(Bytes, Bytes)>,
        decoded: Vec<Option<Decoded>>,
    ) -> Result<(), BusError> {
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
        // Before consumers are woken, so that they find what was handed.
        self.handed.put(topic, first, decoded);
        self.end_watch(topic).await?.send_replace(first + n);
        Ok(())
    }

    /// A subscription to `topic` for `group` (from its committed offset),
    /// or with no group a reader from the start that commits nothing;
    /// `label` names it in the lag metric; `takes_handed`: it takes the
    /// values producers hand over (and from then on they are kept).
    async fn consumer(
        &self,
        topic: &str,
        group: Option<&str>,
        label: &str,
        takes_handed: bool,
    ) -> Result<Box<dyn Subscription>, BusError> {
        if takes_handed {
            self.handed.open(topic);
        }
        let end = self.end_watch(topic).await?.subscribe();
        let log = self.log.clone();
        let (g, t) = (group.map(str::to_owned), topic.to_owned());
        let reader = tokio::task::spawn_blocking(move || {
            let from = match &g {
                Some(g) => log.committed(g, &t)?,
                None => 0,
            };
            log.reader(&t, from)
        })
        .await
        .map_err(|e| worker(topic, e))?
        .map_err(|e| embedded(topic, e))?;
        let lag = ConsumerLag::new(topic, label);
        lag.set(self.end_offset(topic)?.saturating_sub(reader.position()));
        METRICS.bus_consume_errors.with_label_values(&[topic]);
        Ok(Box::new(LocalSubscription {
            log: self.log.clone(),
            handed: takes_handed.then(|| self.handed.clone()),
            group: group.map(str::to_owned),
            topic: topic.to_owned(),
            reader: Some(reader),
            pending: None,
            end,
            delete_consumed: self.delete_consumed,
            lag,
        }))
    }
}

/// A read of the embedded log running in the blocking pool.
type PendingRead = tokio::task::JoinHandle<(LogReader, Result<Vec<Record>, EmbeddedLogError>)>;

/// A consumer of one topic of the embedded log (one partition: 0).
struct LocalSubscription {
    log: Arc<EmbeddedLog>,
    /// Where this subscription takes handed-over values from, if it does.
    handed: Option<Arc<Handed>>,
    /// `None` for a reader ([`Log::read_all`]): its commits are no-ops.
    group: Option<String>,
    topic: String,
    /// Moved into the blocking pool while it reads.
    reader: Option<LogReader>,
    /// A read a cancelled `poll` left running: the next read takes its
    /// records (and the reader back) instead of finding the reader gone,
    /// so `poll` is cancel-safe, as callers racing it against shutdown
    /// need.
    pending: Option<PendingRead>,
    end: watch::Receiver<u64>,
    delete_consumed: bool,
    /// `tollgate_bus_consumer_lag_records`, set after every read.
    lag: ConsumerLag,
}

impl LocalSubscription {
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
        let read = match &mut self.pending {
            Some(read) => read,
            None => {
                let Some(mut reader) = self.reader.take() else {
                    return Err(BusError::Worker {
                        topic: self.topic.clone(),
                        message: "a previous read failed and lost its reader".into(),
                    });
                };
                self.pending.insert(tokio::task::spawn_blocking(move || {
                    let records = reader.read(max);
                    (reader, records)
                }))
            }
        };
        // Awaited in place: if this future is dropped, the read stays
        // pending for the next call.
        let joined = read.await;
        self.pending = None;
        let (reader, records) = joined.map_err(|e| worker(&self.topic, e))?;
        self.reader = Some(reader);
        let records = records.map_err(|e| embedded(&self.topic, e))?;
        let mut records: Vec<BusRecord> = records
            .into_iter()
            .map(|r| BusRecord::stored(0, r.offset, r.key, r.payload))
            .collect();
        if let Some(handed) = &self.handed {
            handed.attach(&self.topic, &mut records);
        }
        Ok(records)
    }
}

#[async_trait::async_trait]
impl Subscription for LocalSubscription {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<BusRecord>, BusError> {
        // Mark the current end as seen first: an append landing after the
        // read below then wakes the wait instead of being missed.
        self.end.borrow_and_update();
        let mut records = self.read(max).await?;
        if records.is_empty()
            && !wait.is_zero()
            && tokio::time::timeout(wait, self.end.changed()).await.is_ok()
        {
            records = self.read(max).await?;
        }
        Ok(records)
    }

    async fn commit(&mut self, _partition: u32, next_offset: u64) -> Result<(), BusError> {
        let Some(g) = self.group.clone() else {
            return Ok(());
        };
        let log = self.log.clone();
        let t = self.topic.clone();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{history, poll_lingering};
    use tokio_util::sync::CancellationToken;

    fn one(i: u32) -> Vec<(Bytes, Bytes)> {
        vec![(Bytes::from(format!("k{i}")), Bytes::from(format!("v{i}")))]
    }

    #[tokio::test]
    async fn a_lingering_poll_takes_what_arrives_while_it_waits_and_a_stop_cuts_the_wait_short() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Arc::new(LocalBus::open(dir.path()).unwrap());
        let mut sub = bus.subscribe("g", "t").await.unwrap();
        let stop = CancellationToken::new();
        bus.append("t", one(0)).await.unwrap();
        let late = {
            let bus = bus.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                bus.append("t", one(1)).await.unwrap();
            })
        };
        let wait = Duration::from_secs(1);
        let linger = Duration::from_secs(2);
        let got = poll_lingering(&mut *sub, 10, wait, linger, &stop).await;
        late.await.unwrap();
        assert_eq!(got.unwrap().len(), 2, "the record appended meanwhile too");

        bus.append("t", one(2)).await.unwrap();
        stop.cancel();
        let linger = Duration::from_secs(3600);
        let got = tokio::time::timeout(
            Duration::from_secs(60),
            poll_lingering(&mut *sub, 10, wait, linger, &stop),
        )
        .await
        .expect("the stop ended the hour's linger");
        assert_eq!(got.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_poll_cancelled_mid_read_loses_nothing_and_the_next_poll_reads_on() {
        let dir = tempfile::tempdir().unwrap();
        let bus = LocalBus::open(dir.path()).unwrap();
        let records: Vec<_> = (0..100)
            .map(|i| (Bytes::from(format!("k{i}")), Bytes::from(format!("v{i}"))))
            .collect();
        bus.append("t", records).await.unwrap();
        let mut sub = bus.subscribe("g", "t").await.unwrap();
        // Dropped after its first step, with its read in the blocking pool,
        // as a shutdown racing it against a stop signal drops it.
        let cancelled = tokio::time::timeout(Duration::ZERO, sub.poll(10, Duration::ZERO)).await;
        let mut offsets: Vec<u64> = cancelled
            .map(|r| r.unwrap())
            .unwrap_or_default()
            .iter()
            .map(|r| r.offset)
            .collect();
        while offsets.len() < 100 {
            let got = sub
                .poll(10, Duration::from_millis(100))
                .await
                .expect("reads on");
            assert!(!got.is_empty(), "stuck at {} records", offsets.len());
            offsets.extend(got.iter().map(|r| r.offset));
        }
        assert_eq!(
            offsets,
            (0..100).collect::<Vec<u64>>(),
            "each once, in order"
        );
    }

    #[tokio::test]
    async fn topics_are_opened_and_recovered_off_the_async_runtime_thread() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = EmbeddedLog::open(dir.path()).unwrap();
            log.append("t.old", &[(b"k", b"v")]).unwrap();
        }
        let bus = LocalBus::open_maintained(dir.path(), Maintenance::default())
            .await
            .unwrap();
        bus.subscribe("g", "t.old").await.unwrap();
        bus.subscribe("g", "t.new").await.unwrap();
        bus.append("t.appended", vec![(Bytes::from("k"), Bytes::from("v"))])
            .await
            .unwrap();
        let journal = LocalBus::open_journal_recovered(&dir.path().join("j"))
            .await
            .unwrap();
        journal.subscribe("g", "t.j").await.unwrap();
        // This test runs on a current-thread runtime: its own thread.
        let me = std::thread::current().id();
        for log in [&bus.log, &journal.log] {
            let threads = log.recovered_on.lock().unwrap().clone();
            assert!(!threads.is_empty());
            assert!(
                !threads.contains(&me),
                "a topic was recovered on the runtime thread"
            );
        }
    }

    /// A reader starts at the first record whatever a group of the same
    /// name committed, and its own commits are no-ops.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_reads_from_the_start_and_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let bus = LocalBus::open(dir.path()).unwrap();
        let records = (0..5)
            .map(|i| (Bytes::from("k"), Bytes::from(format!("v{i}"))))
            .collect();
        bus.append("t", records).await.unwrap();
        let mut group = bus.subscribe("r", "t").await.unwrap();
        group.commit(0, 3).await.unwrap();
        for _ in 0..2 {
            let mut reader = bus.read_all("t", "r").await.unwrap();
            let read = reader.poll(10, Duration::from_secs(5)).await.unwrap();
            let offsets: Vec<u64> = read.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, [0, 1, 2, 3, 4]);
            reader.commit(0, 5).await.unwrap();
        }
        assert_eq!(bus.committed("r", "t").await.unwrap(), 3);
        assert_eq!(bus.last_offset("t", 0).await.unwrap(), Some(4));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_compaction_a_start_reads_the_budgets_topic_in_about_one_record_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let maintenance = Maintenance {
            compacted: vec!["t.state".into()],
            retention: None,
            roll_above: 0,
        };
        let bus = LocalBus::open_maintained(dir.path(), maintenance.clone())
            .await
            .unwrap();
        for batch in 0..20u32 {
            let records = (0..50u32)
                .map(|i| {
                    let n = batch * 50 + i;
                    (
                        Bytes::from(format!("ledger-{}", n % 4)),
                        Bytes::from(format!("{n}")),
                    )
                })
                .collect();
            bus.append("t.state", records).await.unwrap();
        }
        bus.maintain().await.unwrap();
        drop(bus);
        // The next start: a history read as the accountant's restore does.
        let bus = LocalBus::open_maintained(dir.path(), maintenance)
            .await
            .unwrap();
        let ends = history::last_offsets(bus.as_ref(), "t.state")
            .await
            .unwrap();
        let mut latest = std::collections::BTreeMap::new();
        let mut read = 0;
        history::read_history(bus.as_ref(), "t.state", "test", ends, |r| {
            read += 1;
            latest.insert(r.key, r.payload);
        })
        .await
        .unwrap();
        assert_eq!(read, 4, "1000 records over 4 keys read as 4");
        assert_eq!(latest[&Bytes::from("ledger-3")], Bytes::from("999"));
        assert_eq!(latest[&Bytes::from("ledger-0")], Bytes::from("996"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn maintenance_deletes_consumed_segments_older_than_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = EmbeddedLog::open_with(
                dir.path(),
                crate::bus::embedded::LogOptions { segment_bytes: 200 },
            )
            .unwrap();
            for i in 0..50u32 {
                log.append("t.events", &[(b"", format!("e{i}").as_bytes())])
                    .unwrap();
            }
            log.commit("consumer", "t.events", 50).unwrap();
        }
        let segments = || {
            std::fs::read_dir(dir.path().join("t.events"))
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".log")
                })
                .count()
        };
        assert!(segments() > 2);
        let keep_all = Maintenance {
            retention: Some(Duration::from_secs(3600)),
            ..Maintenance::default()
        };
        drop(
            LocalBus::open_maintained(dir.path(), keep_all)
                .await
                .unwrap(),
        );
        assert!(segments() > 2, "nothing is an hour old");
        let expire = Maintenance {
            retention: Some(Duration::ZERO),
            ..Maintenance::default()
        };
        drop(LocalBus::open_maintained(dir.path(), expire).await.unwrap());
        assert_eq!(
            segments(),
            1,
            "consumed and old: only the active segment stays"
        );
    }

    /// How long a start's read of a budgets-like topic takes before and
    /// after compaction (printed; run by hand with `--ignored --nocapture`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement run by hand"]
    async fn state_topic_start_up_read_by_hand() {
        let dir = tempfile::tempdir().unwrap();
        let maintenance = Maintenance {
            compacted: vec!["t.state".into()],
            retention: None,
            roll_above: 4 * 1024 * 1024,
        };
        let bus = LocalBus::open(dir.path()).unwrap();
        let payload = "x".repeat(150);
        for batch in 0..200u32 {
            let records = (0..1000u32)
                .map(|i| {
                    (
                        Bytes::from(format!("ledger-{}", (batch * 1000 + i) % 200)),
                        Bytes::from(payload.clone()),
                    )
                })
                .collect();
            bus.append("t.state", records).await.unwrap();
        }
        drop(bus);
        for label in ["before compaction", "after compaction"] {
            let started = std::time::Instant::now();
            let bus = if label.starts_with("before") {
                LocalBus::open(dir.path()).unwrap()
            } else {
                LocalBus::open_maintained(dir.path(), maintenance.clone())
                    .await
                    .unwrap()
            };
            let opened = started.elapsed();
            let started = std::time::Instant::now();
            let ends = history::last_offsets(bus.as_ref(), "t.state")
                .await
                .unwrap();
            let mut read = 0u64;
            history::read_history(bus.as_ref(), "t.state", "m", ends, |_| read += 1)
                .await
                .unwrap();
            println!(
                "{label}: open {opened:?}, read {read} records in {:?}",
                started.elapsed()
            );
        }
    }
}
