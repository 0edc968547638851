//! [`Log`] over Kafka through rdkafka, for roles on several machines.
//!
//! Topics are created at start-up when missing. The producer is idempotent
//! with `acks=all`; an append returns once every record of the batch is
//! acknowledged, so callers commit their own input only after their output
//! is durable. Consumers never auto-commit: offsets move only through
//! [`Subscription::commit`], and a rebalance first runs the consumer's
//! [`RevokeHook`] so it can make its buffered work durable while it still
//! owns the partitions.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::{
    ALERTS_TOPIC, BUDGETS_TOPIC, BusError, BusRecord, COSTED_TOPIC, EVENTS_TOPIC, Log, RevokeHook,
    Subscription,
};
use crate::config::KafkaConfig;
use crate::metrics::METRICS;

/// How long metadata and admin calls may take before they count as failed.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Kafka behind the [`Log`] trait: one producer shared by every role of the
/// process, and one consumer per subscription.
pub struct KafkaBus {
    cfg: KafkaConfig,
    producer: FutureProducer,
}

impl KafkaBus {
    /// Creates the producer. Nothing is contacted yet: a broker that is down
    /// shows up later as appends that wait (and journal backlog).
    pub fn new(cfg: &KafkaConfig) -> Result<Arc<KafkaBus>, BusError> {
        let producer: FutureProducer = client_config(cfg)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", &cfg.compression)
            .set("linger.ms", cfg.linger_ms.to_string())
            .set("message.timeout.ms", cfg.delivery_timeout_ms.to_string())
            .create()
            .map_err(|e| kafka_err(cfg, "*", format!("cannot create producer: {e}")))?;
        Ok(Arc::new(KafkaBus {
            cfg: cfg.clone(),
            producer,
        }))
    }

    /// Creates tollgate's topics if they are missing: events and costed with
    /// the configured partitions, budget state compacted, alerts plain.
    /// An existing topic is left as it is; any other refusal is an error
    /// naming the topic and the broker's reason.
    pub async fn ensure_topics(&self) -> Result<(), BusError> {
        let admin: AdminClient<DefaultClientContext> = client_config(&self.cfg)
            .create()
            .map_err(|e| kafka_err(&self.cfg, "*", format!("cannot create admin client: {e}")))?;
        let partitions = self.cfg.partitions as i32;
        let replication = || TopicReplication::Fixed(self.cfg.replication as i32);
        let topics = [
            NewTopic::new(EVENTS_TOPIC, partitions, replication()),
            NewTopic::new(COSTED_TOPIC, partitions, replication()),
            NewTopic::new(BUDGETS_TOPIC, 1, replication()).set("cleanup.policy", "compact"),
            NewTopic::new(ALERTS_TOPIC, 1, replication()),
        ];
        let options = AdminOptions::new()
            .operation_timeout(Some(ADMIN_TIMEOUT))
            .request_timeout(Some(ADMIN_TIMEOUT));
        let results = admin
            .create_topics(&topics, &options)
            .await
            .map_err(|e| kafka_err(&self.cfg, "*", format!("cannot create topics: {e}")))?;
        for result in results {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(kafka_err(
                        &self.cfg,
                        &topic,
                        format!("the broker refused to create it: {code}"),
                    ));
                }
            }
        }
        // Derived topics mirror their source's partitions; fewer would
        // break the accountant's exactly-once resume.
        let events = self.partition_count(EVENTS_TOPIC).await?;
        let costed = self.partition_count(COSTED_TOPIC).await?;
        if costed < events {
            return Err(kafka_err(
                &self.cfg,
                COSTED_TOPIC,
                format!(
                    "has {costed} partitions but {EVENTS_TOPIC} has {events}; it needs at least as many"
                ),
            ));
        }
        Ok(())
    }

    /// Partitions of `topic` as the broker reports them.
    pub async fn partition_count(&self, topic: &str) -> Result<u32, BusError> {
        let consumer = self.plain_consumer()?;
        let owned = topic.to_owned();
        let cfg = self.cfg.clone();
        tokio::task::spawn_blocking(move || {
            let metadata = consumer
                .fetch_metadata(Some(&owned), ADMIN_TIMEOUT)
                .map_err(|e| kafka_err(&cfg, &owned, format!("cannot read metadata: {e}")))?;
            let t = metadata
                .topics()
                .first()
                .ok_or_else(|| kafka_err(&cfg, &owned, "no metadata".into()))?;
            if let Some(e) = t.error() {
                return Err(kafka_err(
                    &cfg,
                    &owned,
                    format!("metadata error: {}", RDKafkaErrorCode::from(e)),
                ));
            }
            Ok(t.partitions().len() as u32)
        })
        .await
        .map_err(|e| BusError::Worker {
            topic: topic.to_owned(),
            message: e.to_string(),
        })?
    }

    /// A consumer outside any group, for metadata and one-off reads.
    fn plain_consumer(&self) -> Result<BaseConsumer, BusError> {
        client_config(&self.cfg)
            .set("enable.auto.commit", "false")
            .set("group.id", "tollgate-probe")
            .create()
            .map_err(|e| kafka_err(&self.cfg, "*", format!("cannot create consumer: {e}")))
    }

    /// Produces `records` (to `partition` if given) and waits for every
    /// acknowledgement; the first failure is returned after all settle.
    async fn produce(
        &self,
        topic: &str,
        partition: Option<u32>,
        records: Vec<(Bytes, Bytes)>,
    ) -> Result<(), BusError> {
        let mut deliveries = Vec::with_capacity(records.len());
        for (key, payload) in &records {
            let mut record = FutureRecord::to(topic)
                .key(key.as_ref())
                .payload(payload.as_ref());
            if let Some(p) = partition {
                record = record.partition(p as i32);
            }
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    // librdkafka's own queue is full: wait for it to drain.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        METRICS.bus_delivery_failures.inc();
                        return Err(kafka_err(
                            &self.cfg,
                            topic,
                            format!("cannot enqueue a record: {e}"),
                        ));
                    }
                }
            }
        }
        let mut first_error = None;
        for delivery in deliveries {
            let failure = match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => e.to_string(),
                Err(_) => "the producer dropped the delivery report".to_owned(),
            };
            METRICS.bus_delivery_failures.inc();
            first_error.get_or_insert(failure);
        }
        match first_error {
            None => {
                METRICS
                    .bus_appended
                    .with_label_values(&[topic])
                    .inc_by(records.len() as u64);
                Ok(())
            }
            Some(message) => Err(kafka_err(
                &self.cfg,
                topic,
                format!("delivery failed: {message}"),
            )),
        }
    }

    /// Waits up to `timeout` for queued records to be delivered (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "kafka producer did not flush before shutdown");
        }
    }
}

/// Settings every client shares: brokers, then the operator's extras.
fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("client.id", "tollgate")
        .set("log_level", "4");
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

fn kafka_err(cfg: &KafkaConfig, topic: &str, message: String) -> BusError {
    BusError::Kafka {
        brokers: cfg.brokers.clone(),
        topic: topic.to_owned(),
        message,
    }
}

#[async_trait::async_trait]
impl Log for KafkaBus {
    async fn append(&self, topic: &str, records: Vec<(Bytes, Bytes)>) -> Result<(), BusError> {
        self.produce(topic, None, records).await
    }

    async fn append_to(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<(Bytes, Bytes)>,
    ) -> Result<(), BusError> {
        self.produce(topic, Some(partition), records).await
    }

    async fn partitions(&self, topic: &str) -> Result<u32, BusError> {
        self.partition_count(topic).await
    }

    async fn last_in(&self, topic: &str, partition: u32) -> Result<Option<BusRecord>, BusError> {
        let consumer = self.plain_consumer()?;
        let owned = topic.to_owned();
        let cfg = self.cfg.clone();
        tokio::task::spawn_blocking(move || {
            let err = |m: String| kafka_err(&cfg, &owned, m);
            let (low, high) = consumer
                .fetch_watermarks(&owned, partition as i32, ADMIN_TIMEOUT)
                .map_err(|e| err(format!("cannot read offsets of partition {partition}: {e}")))?;
            if high <= low {
                return Ok(None);
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&owned, partition as i32, Offset::Offset(high - 1))
                .map_err(|e| err(e.to_string()))?;
            consumer.assign(&tpl).map_err(|e| err(e.to_string()))?;
            let deadline = std::time::Instant::now() + ADMIN_TIMEOUT;
            while std::time::Instant::now() < deadline {
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) => return Ok(Some(to_record(&m))),
                    Some(Err(e)) => {
                        return Err(err(format!(
                            "cannot read the last record of partition {partition}: {e}"
                        )));
                    }
                    None => {}
                }
            }
            Err(err(format!(
                "timed out reading the last record of partition {partition}"
            )))
        })
        .await
        .map_err(|e| BusError::Worker {
            topic: topic.to_owned(),
            message: e.to_string(),
        })?
    }

    async fn subscribe(&self, group: &str, topic: &str) -> Result<Box<dyn Subscription>, BusError> {
        let context = GroupContext {
            group: group.to_owned(),
            topic: topic.to_owned(),
            assigned: Mutex::new(HashSet::new()),
            revoked: Mutex::new(Vec::new()),
            hook: Mutex::new(None),
        };
        let consumer: StreamConsumer<GroupContext> = client_config(&self.cfg)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // librdkafka reports per-partition consumer lag in its
            // statistics: read off the callback, no broker round-trip.
            .set("statistics.interval.ms", "5000")
            .set(
                "session.timeout.ms",
                self.cfg.session_timeout_ms.to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (self.cfg.session_timeout_ms / 4).max(100).to_string(),
            )
            .create_with_context(context)
            .map_err(|e| {
                kafka_err(
                    &self.cfg,
                    topic,
                    format!("cannot create consumer for group {group}: {e}"),
                )
            })?;
        consumer.subscribe(&[topic]).map_err(|e| {
            kafka_err(
                &self.cfg,
                topic,
                format!("cannot subscribe group {group}: {e}"),
            )
        })?;
        Ok(Box::new(KafkaSubscription {
            consumer: Arc::new(consumer),
            topic: topic.to_owned(),
            brokers: self.cfg.brokers.clone(),
        }))
    }
}

fn to_record<M: Message>(m: &M) -> BusRecord {
    BusRecord {
        partition: m.partition() as u32,
        offset: m.offset() as u64,
        key: Bytes::copy_from_slice(m.key().unwrap_or_default()),
        payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
    }
}

/// Tracks which partitions this consumer owns and runs the revoke hook.
/// Rebalance callbacks run inside `recv`, on the task that polls, so the
/// consumer's own work is never in the middle of a batch when they do.
struct GroupContext {
    group: String,
    topic: String,
    assigned: Mutex<HashSet<u32>>,
    revoked: Mutex<Vec<u32>>,
    hook: Mutex<Option<RevokeHook>>,
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        // Partition -1 is librdkafka's internal one; unknown lag is -1.
        let lag: i64 = topic
            .partitions
            .iter()
            .filter(|(p, part)| **p >= 0 && part.consumer_lag >= 0)
            .map(|(_, part)| part.consumer_lag)
            .sum();
        crate::metrics::METRICS
            .consumer_lag
            .with_label_values(&[&self.topic, &self.group])
            .set(lag);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let partitions: Vec<u32> = tpl
            .elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition() as u32)
            .collect();
        {
            let mut assigned = self.assigned.lock().unwrap_or_else(|p| p.into_inner());
            for p in &partitions {
                assigned.remove(p);
            }
        }
        self.revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(&partitions);
        let hook = self.hook.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(hook) = hook else { return };
        let commits = hook(&partitions);
        if commits.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, next) in &commits {
            let _ = tpl.add_partition_offset(&self.topic, *p as i32, Offset::Offset(*next as i64));
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                tracing::info!(topic = %self.topic, ?commits, "flushed and committed partitions before giving them up")
            }
            Err(e) => {
                tracing::error!(topic = %self.topic, error = %e, "commit before revocation failed; the next owner re-reads (the lake skips what it holds)")
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut assigned = self.assigned.lock().unwrap_or_else(|p| p.into_inner());
            for e in tpl.elements().iter().filter(|e| e.topic() == self.topic) {
                assigned.insert(e.partition() as u32);
            }
            tracing::info!(topic = %self.topic, partitions = ?assigned, "partitions assigned");
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        if let Err(e) = result {
            tracing::warn!(topic = %self.topic, error = %e, "offset commit failed");
        }
    }
}

/// One group member's view of a topic.
struct KafkaSubscription {
    consumer: Arc<StreamConsumer<GroupContext>>,
    topic: String,
    brokers: String,
}

impl KafkaSubscription {
    fn err(&self, message: String) -> BusError {
        BusError::Kafka {
            brokers: self.brokers.clone(),
            topic: self.topic.clone(),
            message,
        }
    }

    /// Turns one receive into a record, logging (not failing on) transient
    /// errors such as a broker that is briefly unreachable.
    fn take(
        &self,
        received: Result<rdkafka::message::BorrowedMessage<'_>, KafkaError>,
        out: &mut Vec<BusRecord>,
    ) -> bool {
        match received {
            Ok(m) => {
                out.push(to_record(&m));
                true
            }
            Err(KafkaError::PartitionEOF(_)) => false,
            Err(e) => {
                METRICS
                    .bus_consume_errors
                    .with_label_values(&[&self.topic])
                    .inc();
                tracing::warn!(topic = %self.topic, error = %e, "kafka consumer error; retrying");
                false
            }
        }
    }
}

#[async_trait::async_trait]
impl Subscription for KafkaSubscription {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<BusRecord>, BusError> {
        let mut out = Vec::new();
        let first = if wait.is_zero() {
            self.consumer.recv().now_or_never()
        } else {
            tokio::time::timeout(wait, self.consumer.recv()).await.ok()
        };
        if let Some(received) = first {
            if self.take(received, &mut out) {
                while out.len() < max {
                    match self.consumer.recv().now_or_never() {
                        Some(received) => {
                            if !self.take(received, &mut out) {
                                break;
                            }
                        }
                        None => break,
                    }
                }
            } else if !wait.is_zero() {
                // An error, not data: don't spin on a broker that is down.
                tokio::time::sleep(wait.min(Duration::from_millis(200))).await;
            }
        }
        // A rebalance during this poll may have taken partitions whose
        // records are already in `out`; they now belong to another member.
        let assigned = self
            .consumer
            .context()
            .assigned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        out.retain(|r| assigned.contains(&r.partition));
        Ok(out)
    }

    async fn commit(&mut self, partition: u32, next_offset: u64) -> Result<(), BusError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.topic,
            partition as i32,
            Offset::Offset(next_offset as i64),
        )
        .map_err(|e| self.err(e.to_string()))?;
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|e| self.err(e.to_string()))?
            .map_err(|e| {
                METRICS
                    .bus_consume_errors
                    .with_label_values(&[&self.topic])
                    .inc();
                self.err(format!(
                    "cannot commit partition {partition} at {next_offset}: {e}"
                ))
            })
    }

    fn on_revoke(&mut self, hook: RevokeHook) {
        *self
            .consumer
            .context()
            .hook
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    fn take_revoked(&mut self) -> Vec<u32> {
        std::mem::take(
            &mut *self
                .consumer
                .context()
                .revoked
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }
}
