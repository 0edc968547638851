//! The accountant role: prices raw events and publishes them as costed.
//!
//! It reads `tollgate.events.v1`, adds each event's cost, appends the
//! batch to `tollgate.costed.v1`, and only then commits. Every costed event
//! names the raw event it came from, so after a crash between append and
//! commit the restarted accountant skips what it already published: each
//! event is costed exactly once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rust_decimal::prelude::ToPrimitive;
use tokio_util::sync::CancellationToken;

use super::cost::price_event;
use super::pricing::PriceBook;
use crate::bus::{BusError, BusRecord, COSTED_TOPIC, EVENTS_TOPIC, Log, Subscription};
use crate::event::{BusPosition, LlmEvent};
use crate::metrics::{METRICS, model_label};

/// Consumer group of the accountant.
pub const ACCOUNTANT_GROUP: &str = "tollgate-accountant";
/// Most events priced per batch.
const BATCH: usize = 4096;

/// The running accountant.
pub struct Accountant {
    book: PriceBook,
    log: Arc<dyn Log>,
    subscription: Box<dyn Subscription>,
    /// Highest raw offset per partition already published as costed.
    published: HashMap<u32, u64>,
    /// Models already warned about, so the log names each once.
    warned: HashSet<String>,
}

impl Accountant {
    /// Joins the accountant group and learns where the costed topic ends.
    pub async fn new(book: PriceBook, log: Arc<dyn Log>) -> Result<Accountant, BusError> {
        let mut published = HashMap::new();
        for record in log.last(COSTED_TOPIC).await? {
            if let Ok(e) = serde_json::from_slice::<LlmEvent>(&record.payload) {
                if let Some(src) = e.cost.and_then(|c| c.source) {
                    published.insert(src.partition, src.offset);
                }
            }
        }
        Ok(Accountant {
            subscription: log.subscribe(ACCOUNTANT_GROUP, EVENTS_TOPIC).await?,
            book,
            log,
            published,
            warned: HashSet::new(),
        })
    }

    /// Runs until `stop` is cancelled, then prices what the bus still holds.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), BusError> {
        while !stop.is_cancelled() {
            let records = self.subscription.poll(BATCH, Duration::from_millis(250)).await?;
            self.handle(records).await?;
        }
        loop {
            let records = self.subscription.poll(BATCH, Duration::ZERO).await?;
            if records.is_empty() {
                break;
            }
            self.handle(records).await?;
        }
        tracing::info!("accountant priced everything on the bus and stopped");
        Ok(())
    }

    async fn handle(&mut self, records: Vec<BusRecord>) -> Result<(), BusError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(records.len());
        let mut next: HashMap<u32, u64> = HashMap::new();
        for record in records {
            next.insert(record.partition, record.offset + 1);
            if self.published.get(&record.partition).is_some_and(|o| record.offset <= *o) {
                continue;
            }
            if let Some(priced) = self.price(&record) {
                out.push(priced);
            }
        }
        self.log.append(COSTED_TOPIC, out).await?;
        for (partition, offset) in next {
            self.subscription.commit(partition, offset).await?;
        }
        Ok(())
    }

    /// Prices one raw record into a costed one.
    fn price(&mut self, record: &BusRecord) -> Option<(Bytes, Bytes)> {
        let mut event: LlmEvent = match serde_json::from_slice(&record.payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(partition = record.partition, offset = record.offset, error = %e,
                    "raw bus record is not an LlmEvent; not priced");
                return None;
            }
        };
        let mut cost = price_event(&self.book, &event);
        cost.source = Some(BusPosition {
            partition: record.partition,
            offset: record.offset,
        });
        let model = model_label(event.model_served.as_deref()).to_owned();
        match &cost.lines {
            Some(lines) => METRICS
                .cost_usd
                .with_label_values(&[&event.team, &model])
                .inc_by(lines.total_usd.to_f64().unwrap_or(0.0)),
            None => {
                METRICS.unpriced.with_label_values(&[&model]).inc();
                let name = event.model_served.clone().or(event.model_requested.clone()).unwrap_or_default();
                if self.warned.insert(name.clone()) {
                    tracing::warn!(model = %name, provider = %event.provider,
                        "no price table matches this model: its events are marked unpriced");
                }
            }
        }
        METRICS.accountant_events.inc();
        event.cost = Some(cost);
        let payload = serde_json::to_vec(&event).ok()?;
        Some((record.key.clone(), Bytes::from(payload)))
    }
}
