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
use rdkafka::producer::future_producer::FutureProducerContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::oversize::{self, Fitted};
use super::{
    ALERTS_TOPIC, BUDGETS_TOPIC, BusError, BusRecord, CONTROL_SECRETS_TOPIC, CONTROL_TOPIC,
    COSTED_TOPIC, EVENTS_TOPIC, Log, RevokeHook, Subscription,
};
use crate::config::KafkaConfig;
use crate::metrics::{ConsumerLag, METRICS};

/// How long metadata and admin calls may take before they count as failed.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a group consumer's librdkafka statistics (its consumer lag)
/// arrive, unless `statistics.interval.ms` is among the extra properties.
const STATS_INTERVAL_MS: &str = "5000";

/// Kafka behind the [`Log`] trait: one producer shared by every role of the
/// process, and one consumer per subscription.
pub struct KafkaBus {
    cfg: KafkaConfig,
    producer: FutureProducer,
    /// Records above this are cut down before they are sent.
    max_record_bytes: usize,
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
            max_record_bytes: max_record_bytes(cfg),
        }))
    }

    /// Creates tollgate's topics if they are missing: events and costed with
    /// the configured partitions, budget state compacted, alerts plain.
    /// An existing topic is left as it is; any other refusal is an error
    /// naming the topic and the broker's reason.
    pub async fn ensure_topics(&self) -> Result<(), BusError> {
        let missing = self.missing_topics().await?;
        if !missing.is_empty() {
            self.create_topics(&missing).await?;
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

    /// Which of tollgate's topics ([`KafkaBus::topics`]) the broker does
    /// not list: one metadata request, so a process joining a running fleet
    /// needs no admin client.
    async fn missing_topics(&self) -> Result<Vec<NewTopic<'static>>, BusError> {
        let cfg = self.cfg.clone();
        let listed: HashSet<String> = self
            .on_producer_client("*", move |client| {
                let metadata = client
                    .fetch_metadata(None, ADMIN_TIMEOUT)
                    .map_err(|e| kafka_err(&cfg, "*", format!("cannot read metadata: {e}")))?;
                Ok(metadata
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                    .map(|t| t.name().to_owned())
                    .collect())
            })
            .await?;
        Ok(self
            .topics()
            .into_iter()
            .filter(|t| !listed.contains(t.name))
            .collect())
    }

    /// Every topic tollgate uses, as it is created: events and costed with
    /// the configured partitions, budget state and control compacted.
    fn topics(&self) -> Vec<NewTopic<'static>> {
        let partitions = self.cfg.partitions as i32;
        let replication = || TopicReplication::Fixed(self.cfg.replication as i32);
        vec![
            NewTopic::new(EVENTS_TOPIC, partitions, replication()),
            NewTopic::new(COSTED_TOPIC, partitions, replication()),
            NewTopic::new(BUDGETS_TOPIC, 1, replication()).set("cleanup.policy", "compact"),
            NewTopic::new(ALERTS_TOPIC, 1, replication()),
            NewTopic::new(CONTROL_TOPIC, 1, replication()).set("cleanup.policy", "compact"),
            NewTopic::new(CONTROL_SECRETS_TOPIC, 1, replication()).set("cleanup.policy", "compact"),
        ]
    }

    /// Creates `topics`; one that exists meanwhile (another process
    /// created it) is fine.
    async fn create_topics(&self, topics: &[NewTopic<'_>]) -> Result<(), BusError> {
        let admin: AdminClient<DefaultClientContext> = client_config(&self.cfg)
            .create()
            .map_err(|e| kafka_err(&self.cfg, "*", format!("cannot create admin client: {e}")))?;
        let options = AdminOptions::new()
            .operation_timeout(Some(ADMIN_TIMEOUT))
            .request_timeout(Some(ADMIN_TIMEOUT));
        let results = admin
            .create_topics(topics, &options)
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
        Ok(())
    }

    /// Partitions of `topic` as the broker reports them.
    pub async fn partition_count(&self, topic: &str) -> Result<u32, BusError> {
        let owned = topic.to_owned();
        let cfg = self.cfg.clone();
        self.on_producer_client(topic, move |client| {
            let metadata = client
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
    }

    /// The (low, high) watermarks of one partition: its first offset and
    /// the offset after its last record.
    async fn watermarks(&self, topic: &str, partition: u32) -> Result<(i64, i64), BusError> {
        let owned = topic.to_owned();
        let cfg = self.cfg.clone();
        self.on_producer_client(topic, move |client| {
            client
                .fetch_watermarks(&owned, partition as i32, ADMIN_TIMEOUT)
                .map_err(|e| {
                    kafka_err(
                        &cfg,
                        &owned,
                        format!("cannot read offsets of partition {partition}: {e}"),
                    )
                })
        })
        .await
    }

    /// Runs a blocking metadata request on the producer's client, already
    /// connected: a client of its own per request cost ~100 ms to connect,
    /// several times over before a gateway could serve.
    async fn on_producer_client<R: Send + 'static>(
        &self,
        topic: &str,
        request: impl FnOnce(
            &rdkafka::client::Client<FutureProducerContext<DefaultClientContext>>,
        ) -> Result<R, BusError>
        + Send
        + 'static,
    ) -> Result<R, BusError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || request(producer.client()))
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
    /// A record too big for the producer's limit is cut down before it is
    /// sent; one the broker refuses for its size (a lower topic limit) is
    /// cut down and sent again, after the rest of its batch: never retried
    /// as it is (see [`super::oversize`]).
    async fn produce(
        &self,
        topic: &str,
        partition: Option<u32>,
        records: Vec<(Bytes, Bytes)>,
    ) -> Result<(), BusError> {
        let records = self.fit_records(topic, records);
        let refused = self.produce_batch(topic, partition, &records).await?;
        if refused.is_empty() {
            return Ok(());
        }
        let retry: Vec<(Bytes, Bytes)> = refused
            .into_iter()
            .filter_map(|i| {
                let (key, payload) = &records[i];
                let small = oversize::shrink(payload);
                if small.is_none() {
                    oversize::lose(topic, payload.len(), self.max_record_bytes);
                }
                small.map(|s| (key.clone(), s))
            })
            .collect();
        tracing::warn!(
            topic,
            records = retry.len(),
            "the broker refused records for their size; sending them cut down"
        );
        for i in self.produce_batch(topic, partition, &retry).await? {
            oversize::lose(topic, retry[i].1.len(), self.max_record_bytes);
        }
        Ok(())
    }

    /// Cuts down (or drops, counted) records over the producer's limit.
    fn fit_records(&self, topic: &str, records: Vec<(Bytes, Bytes)>) -> Vec<(Bytes, Bytes)> {
        records
            .into_iter()
            .filter_map(|(key, payload)| {
                match oversize::fit(topic, &key, &payload, self.max_record_bytes) {
                    Fitted::AsIs => Some((key, payload)),
                    Fitted::Shrunk(small) => Some((key, small)),
                    Fitted::Lost => None,
                }
            })
            .collect()
    }

    /// Produces `records` and waits for every acknowledgement. Returns the
    /// indices of records refused for their size; any other failure is
    /// returned (after all settle) as the error.
    async fn produce_batch(
        &self,
        topic: &str,
        partition: Option<u32>,
        records: &[(Bytes, Bytes)],
    ) -> Result<Vec<usize>, BusError> {
        let mut refused = Vec::new();
        let mut deliveries = Vec::with_capacity(records.len());
        for (i, (key, payload)) in records.iter().enumerate() {
            let mut record = FutureRecord::to(topic)
                .key(key.as_ref())
                .payload(payload.as_ref());
            if let Some(p) = partition {
                record = record.partition(p as i32);
            }
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push((i, delivery));
                        break;
                    }
                    // librdkafka's own queue is full: wait for it to drain.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) if is_size_refusal(&e) => {
                        refused.push(i);
                        break;
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
        for (i, delivery) in deliveries {
            let failure = match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) if is_size_refusal(&e) => {
                    refused.push(i);
                    continue;
                }
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
                    .inc_by((records.len() - refused.len()) as u64);
                Ok(refused)
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

/// Whether Kafka refused a record for its size (the producer's
/// `message.max.bytes` or the broker's limit): sending it again as it is
/// can never succeed.
fn is_size_refusal(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge)
    )
}

/// The most key + payload bytes one record may have: the producer's
/// `message.max.bytes` (librdkafka's default unless set) less room for the
/// record's framing.
fn max_record_bytes(cfg: &KafkaConfig) -> usize {
    const FRAMING: usize = 256;
    cfg.properties
        .get("message.max.bytes")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1_000_000)
        .saturating_sub(FRAMING)
}

/// Settings every client shares: brokers, then the operator's extras.
///
/// `reconnect.backoff.ms` is lowered from librdkafka's 100 ms: once the
/// first metadata answer names the broker, librdkafka drops the bootstrap
/// connection (and the request in flight on it) and may open the next
/// connection only after half that backoff. At 100 ms this was 50 of the
/// gateway's first 54 ms of start-up; at 10 ms it is 11. The backoff still
/// doubles on every failure up to `reconnect.backoff.max.ms` (10 s), so a
/// down broker is not hammered.
///
/// `enable.metrics.push` is off: librdkafka's client telemetry (KIP-714,
/// metrics pushed to brokers that ask for them) keeps latency histograms
/// per broker connection of every client whether or not a broker asks;
/// off, a gateway idles in ~0.9 MiB less. tollgate's own metrics are on
/// `/metrics`; an operator can turn it back on in `[bus.kafka.properties]`.
fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("client.id", "tollgate")
        .set("log_level", "4")
        .set("reconnect.backoff.ms", "10")
        .set("enable.metrics.push", "false");
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

    async fn last_offset(&self, topic: &str, partition: u32) -> Result<Option<u64>, BusError> {
        let (low, high) = self.watermarks(topic, partition).await?;
        // Without transactions every offset below the high watermark is a
        // record, and compaction never removes the last one.
        Ok((high > low).then(|| (high - 1) as u64))
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
        let consumer = self.consumer(topic, group, group)?;
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
            grouped: true,
        }))
    }

    async fn read_all(&self, topic: &str, reader: &str) -> Result<Box<dyn Subscription>, BusError> {
        let partitions = self.partition_count(topic).await?;
        let consumer = self.consumer(topic, &format!("tollgate-reader-{reader}"), reader)?;
        let consumer = Arc::new(consumer);
        let firsts = self.first_offsets(topic, partitions).await?;
        let mut tpl = TopicPartitionList::new();
        for (p, first) in firsts.into_iter().enumerate() {
            tpl.add_partition_offset(topic, p as i32, Offset::Offset(first))
                .map_err(|e| kafka_err(&self.cfg, topic, e.to_string()))?;
        }
        consumer.assign(&tpl).map_err(|e| {
            kafka_err(
                &self.cfg,
                topic,
                format!("cannot assign partitions to reader {reader}: {e}"),
            )
        })?;
        consumer
            .context()
            .assigned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(0..partitions);
        Ok(Box::new(KafkaSubscription {
            consumer,
            topic: topic.to_owned(),
            brokers: self.cfg.brokers.clone(),
            grouped: false,
        }))
    }
}

impl KafkaBus {
    /// The first offset of each of `topic`'s partitions: a reader
    /// assigned these explicit offsets fetches at once, where
    /// `Offset::Beginning` cost about half a second before its first fetch.
    async fn first_offsets(&self, topic: &str, partitions: u32) -> Result<Vec<i64>, BusError> {
        let mut firsts = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            firsts.push(self.watermarks(topic, p).await?.0);
        }
        Ok(firsts)
    }

    /// A consumer of `topic` with `group.id` `group`, committing only by
    /// hand, its lag labelled `label`.
    fn consumer(
        &self,
        topic: &str,
        group: &str,
        label: &str,
    ) -> Result<StreamConsumer<GroupContext>, BusError> {
        let context = GroupContext::new(topic, label);
        METRICS.bus_consume_errors.with_label_values(&[topic]);
        let mut config = client_config(&self.cfg);
        if !self.cfg.properties.contains_key("statistics.interval.ms") {
            config.set("statistics.interval.ms", STATS_INTERVAL_MS);
        }
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
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
            })
    }
}

fn to_record<M: Message>(m: &M) -> BusRecord {
    BusRecord::stored(
        m.partition() as u32,
        m.offset() as u64,
        Bytes::copy_from_slice(m.key().unwrap_or_default()),
        Bytes::copy_from_slice(m.payload().unwrap_or_default()),
    )
}

/// Tracks which partitions this consumer owns and runs the revoke hook.
/// Rebalance callbacks run inside `recv`, on the task that polls, so the
/// consumer's own work is never in the middle of a batch when they do.
struct GroupContext {
    topic: String,
    assigned: Mutex<HashSet<u32>>,
    revoked: Mutex<Vec<u32>>,
    hook: Mutex<Option<RevokeHook>>,
    /// `tollgate_bus_consumer_lag_records`, set from librdkafka's statistics.
    lag: ConsumerLag,
}

impl ClientContext for GroupContext {
    /// librdkafka's periodic statistics (they arrive on the polling task):
    /// the lag of the partitions this consumer owns, as end offset (last
    /// stable, else high watermark) minus the position the application has
    /// read to (else the committed offset). Read from the JSON directly:
    /// only six numbers are needed.
    fn stats_raw(&self, statistics: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(statistics) else {
            return;
        };
        let Some(partitions) = v
            .get("topics")
            .and_then(|t| t.get(&self.topic))
            .and_then(|t| t.get("partitions"))
            .and_then(|p| p.as_object())
        else {
            return;
        };
        let assigned = self
            .assigned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut lag = 0u64;
        for (id, p) in partitions {
            let Ok(id) = id.parse::<u32>() else { continue };
            if !assigned.contains(&id) {
                continue;
            }
            let offset = |name: &str| p.get(name).and_then(|o| o.as_i64()).filter(|o| *o >= 0);
            let end = offset("ls_offset").or_else(|| offset("hi_offset"));
            let position = offset("app_offset").or_else(|| offset("committed_offset"));
            if let (Some(end), Some(position)) = (end, position) {
                lag += end.saturating_sub(position).max(0) as u64;
            }
        }
        tracing::debug!(topic = %self.topic, lag, "consumer lag from librdkafka statistics");
        self.lag.set(lag);
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
        self.revoke(&partitions, |tpl| consumer.commit(tpl, CommitMode::Sync));
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

impl GroupContext {
    /// A context owning no partitions yet, with no hook.
    fn new(topic: &str, group: &str) -> GroupContext {
        GroupContext {
            topic: topic.to_owned(),
            assigned: Mutex::new(HashSet::new()),
            revoked: Mutex::new(Vec::new()),
            hook: Mutex::new(None),
            lag: ConsumerLag::new(topic, group),
        }
    }

    /// Gives up `partitions`: forgets them, runs the consumer's hook (it
    /// writes what it buffered for them) and commits what it returns, all
    /// before returning, so the next owner starts exactly after. The hook's
    /// file writes and fsyncs and the synchronous commit block, and this
    /// runs inside librdkafka's callback on the task polling the consumer,
    /// so it runs through [`off_runtime`].
    fn revoke(
        &self,
        partitions: &[u32],
        commit: impl FnOnce(&TopicPartitionList) -> rdkafka::error::KafkaResult<()>,
    ) {
        {
            let mut assigned = self.assigned.lock().unwrap_or_else(|p| p.into_inner());
            for p in partitions {
                assigned.remove(p);
            }
        }
        self.revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(partitions);
        let hook = self.hook.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(hook) = hook else { return };
        off_runtime(|| {
            let commits = hook(partitions);
            if commits.is_empty() {
                return;
            }
            let mut tpl = TopicPartitionList::new();
            for (p, next) in &commits {
                let _ =
                    tpl.add_partition_offset(&self.topic, *p as i32, Offset::Offset(*next as i64));
            }
            match commit(&tpl) {
                Ok(()) => {
                    tracing::info!(topic = %self.topic, ?commits, "flushed and committed partitions before giving them up")
                }
                Err(e) => {
                    tracing::error!(topic = %self.topic, error = %e, "commit before revocation failed; the next owner re-reads (the lake skips what it holds)")
                }
            }
        });
    }
}

/// Runs blocking work that must finish before a librdkafka callback
/// returns. The callback runs on whichever thread polls the consumer, a
/// runtime worker: on a multi-thread runtime `block_in_place` first hands
/// that worker's other tasks to another thread, so they keep running;
/// elsewhere (a current-thread runtime, no runtime) it runs in place.
fn off_runtime<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// One group member's view of a topic, or a reader of all of it.
struct KafkaSubscription {
    consumer: Arc<StreamConsumer<GroupContext>>,
    topic: String,
    brokers: String,
    /// False for a reader ([`Log::read_all`]): it has no group, so its
    /// commits are no-ops.
    grouped: bool,
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
        if !self.grouped {
            return Ok(());
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The revoke hook runs inside librdkafka's callback on a runtime
    /// worker; here its blocking work needs another task of the same
    /// runtime to make progress, which it can only if the worker was handed
    /// off first.
    #[test]
    fn a_blocking_revoke_hook_does_not_stall_the_runtime() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let committed = runtime.block_on(async {
            tokio::spawn(async {
                let (tx, rx) = std::sync::mpsc::channel::<()>();
                let rx = Mutex::new(rx);
                let context = GroupContext::new("test.revoke.v1", "test-revoke");
                let hook: RevokeHook = Arc::new(move |partitions: &[u32]| {
                    let rx = rx.lock().unwrap();
                    match rx.recv_timeout(Duration::from_secs(10)) {
                        Ok(()) => partitions.iter().map(|p| (*p, 42)).collect(),
                        Err(_) => Vec::new(),
                    }
                });
                *context.hook.lock().unwrap() = Some(hook);
                let _other = tokio::spawn(async move { tx.send(()) });
                let mut committed = Vec::new();
                context.revoke(&[3], |tpl| {
                    committed = tpl
                        .elements()
                        .iter()
                        .map(|e| (e.partition(), e.offset()))
                        .collect();
                    Ok(())
                });
                committed
            })
            .await
            .unwrap()
        });
        assert_eq!(committed, vec![(3, Offset::Offset(42))]);
    }
}
