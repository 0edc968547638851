//! The accountant role: prices raw events and publishes them as costed.
//!
//! It reads `tollgate.events.v1`, adds each event's cost, appends the
//! batch to `tollgate.costed.v1`, and only then commits. Every costed event
//! names the raw event it came from, so after a crash between append and
//! commit the restarted accountant skips what it already published: each
//! event is costed exactly once. Costed events go to the same partition
//! number as their raw event, so "what did I already publish" is one look
//! at the last costed record of that partition. A raw event that appears
//! twice (a journal batch re-sent after a gateway crash) is priced once.
//! Subscription-billed events are priced too (what they would have cost
//! on the API) but counted as subscription value, never as spend.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rust_decimal::prelude::ToPrimitive;
use tokio_util::sync::CancellationToken;

use super::costed;
use super::guards::Guards;
use super::ledger::{Alert, Ledgers};
use crate::budget::{BudgetRecord, BudgetSpec, GuardSpec};
use crate::bus::{
    ALERTS_TOPIC, BUDGETS_TOPIC, BusError, BusRecord, COSTED_TOPIC, Decoded, EVENTS_TOPIC, Log,
    Subscription, history, poll_lingering, records::RecordBuf,
};
use crate::event::{BilledBy, BusPosition, LlmEvent};
use crate::metrics::{METRICS, model_label};
use crate::pricing::SharedBook;
use crate::pricing::cost::{BASIS_PROVISIONAL, price_event};

/// Consumer group of the accountant.
pub const ACCOUNTANT_GROUP: &str = "tollgate-accountant";
/// Most events priced per batch.
const BATCH: usize = 4096;
/// Longest time between offset commits while events keep coming. A commit
/// is two fsyncs and a rename; what it records is only where a restart
/// resumes, and a restart re-reads from there without re-publishing or
/// re-folding anything (see the module doc), so one per interval is enough.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a batch that is not full waits for more records: only the
/// pipeline waits (admission holds reservations of its own). Longer than
/// the publisher's 5 ms: each batch costs the accountant two fsync'd
/// appends and several thread wake-ups, and at 500 requests/s one batch per
/// publisher append made those a large part of `tollgate serve`'s CPU time
/// per request (0.32–0.35 → 0.28–0.29 ms with the sink's linger). Raw events are
/// durable before the accountant reads them, so waiting loses nothing.
const LINGER: Duration = Duration::from_millis(50);
/// Event IDs remembered per partition to drop re-sent duplicates; a
/// gateway's forwarder re-sends at most the events it delivered since its
/// last journal commit (at most a second's worth, or one batch), far fewer.
const RECENT_IDS: usize = 65_536;

/// Per raw partition: what is already published, and recent event IDs.
#[derive(Default)]
struct PartitionState {
    /// Highest raw offset already published as costed.
    published: Option<u64>,
    recent: RecentIds,
}

/// A bounded set of the most recent event IDs.
#[derive(Default)]
pub(crate) struct RecentIds {
    set: HashSet<uuid::Uuid>,
    order: VecDeque<uuid::Uuid>,
}

impl RecentIds {
    /// Remembers `id`; false if it was already there.
    pub(crate) fn insert(&mut self, id: uuid::Uuid) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > RECENT_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// The running accountant.
pub struct Accountant {
    /// The price tables, replaced on reload; each event is priced by
    /// the book current when it is handled.
    book: SharedBook,
    log: Arc<dyn Log>,
    subscription: Box<dyn Subscription>,
    /// Partitions this accountant has seen since it got them.
    partitions: HashMap<u32, PartitionState>,
    /// Models already warned about, so the log names each once.
    warned: HashSet<String>,
    /// Budget ledgers of the partitions this accountant owns.
    ledgers: Ledgers,
    /// Runaway guards over the sessions of those partitions.
    guards: Guards,
    /// Next offsets handled but not yet committed, per partition.
    uncommitted: HashMap<u32, u64>,
    /// When offsets were last committed.
    last_commit: std::time::Instant,
    /// Budget specs the control plane changes; checked before every batch.
    live_specs: Option<Arc<arc_swap::ArcSwap<Vec<BudgetSpec>>>>,
    /// The specs last put into the ledgers (compared by pointer).
    specs_in_use: Option<Arc<Vec<BudgetSpec>>>,
    /// Where costed records are written, a batch at a time.
    records: RecordBuf,
}

impl Accountant {
    /// Joins the accountant group.
    pub async fn new(
        book: SharedBook,
        budgets: Vec<BudgetSpec>,
        log: Arc<dyn Log>,
    ) -> Result<Accountant, BusError> {
        Ok(Accountant {
            subscription: log
                .subscribe_decoded(ACCOUNTANT_GROUP, EVENTS_TOPIC)
                .await?,
            book,
            log,
            partitions: HashMap::new(),
            warned: HashSet::new(),
            ledgers: Ledgers::new(budgets),
            guards: Guards::new(Vec::new()),
            uncommitted: HashMap::new(),
            last_commit: std::time::Instant::now(),
            live_specs: None,
            specs_in_use: None,
            records: RecordBuf::new(),
        })
    }

    /// Follows budget specs the control plane swaps in `live`.
    pub fn follow_specs(mut self, live: Arc<arc_swap::ArcSwap<Vec<BudgetSpec>>>) -> Accountant {
        self.live_specs = Some(live);
        self
    }

    /// Takes the control plane's current specs if they changed.
    fn refresh_specs(&mut self) {
        let Some(live) = &self.live_specs else { return };
        let now = live.load_full();
        if self
            .specs_in_use
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &now))
        {
            return;
        }
        self.ledgers.set_specs(Vec::clone(&now));
        self.specs_in_use = Some(now);
    }

    /// Watches sessions with these runaway guards.
    pub fn with_guards(mut self, guards: Vec<GuardSpec>) -> Accountant {
        self.guards = Guards::new(guards);
        self
    }

    /// State of a partition, learning on first sight (start-up or a new
    /// assignment) how far the costed topic already got.
    async fn partition(&mut self, p: u32) -> Result<&mut PartitionState, BusError> {
        if !self.partitions.contains_key(&p) {
            let mut state = PartitionState::default();
            if let Some(record) = self.log.last_in(COSTED_TOPIC, p).await?
                && let Ok(e) = LlmEvent::from_json(&record.payload)
            {
                state.published = e
                    .cost
                    .and_then(|c| c.source)
                    .filter(|s| s.partition == p)
                    .map(|s| s.offset);
            }
            self.partitions.insert(p, state);
        }
        if !self.ledgers.is_empty() && !self.ledgers.knows(p) {
            let records = read_budget_records(self.log.as_ref()).await?;
            self.ledgers.restore(p, &records);
        }
        Ok(self.partitions.get_mut(&p).expect("inserted above"))
    }

    /// Runs until `stop` is cancelled, then prices what the bus still holds.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), BusError> {
        while !stop.is_cancelled() {
            let records = self.poll_batch(&stop).await?;
            let idle = records.is_empty();
            self.handle(records).await?;
            if idle || self.last_commit.elapsed() >= COMMIT_INTERVAL {
                self.commit().await?;
            }
        }
        loop {
            let records = self.subscription.poll(BATCH, Duration::ZERO).await?;
            if records.is_empty() {
                break;
            }
            self.handle(records).await?;
        }
        self.commit().await?;
        tracing::info!("accountant priced everything on the bus and stopped");
        Ok(())
    }

    /// Waits for records; when fewer than a batch came, lingers for more
    /// ([`LINGER`]), so that one costed append (an fsync on the embedded
    /// log) covers many events, not two or three.
    async fn poll_batch(&mut self, stop: &CancellationToken) -> Result<Vec<BusRecord>, BusError> {
        let wait = Duration::from_millis(250);
        poll_lingering(&mut *self.subscription, BATCH, wait, LINGER, stop).await
    }

    async fn handle(&mut self, records: Vec<BusRecord>) -> Result<(), BusError> {
        if records.is_empty() {
            return Ok(());
        }
        self.forget_revoked();
        self.refresh_specs();
        let mut out: HashMap<u32, Costed> = HashMap::new();
        let mut alerts: Vec<Alert> = Vec::new();
        let mut blocks: Vec<(Bytes, Bytes)> = Vec::new();
        for mut record in records {
            self.uncommitted.insert(record.partition, record.offset + 1);
            let state = self.partition(record.partition).await?;
            // Priced again after a crash (pricing is deterministic) so the
            // ledgers can fold what their published state lacks; published
            // to the costed topic only once.
            let already_costed = state.published.is_some_and(|o| record.offset <= o);
            let Some(event) = self.price(&mut record) else {
                continue;
            };
            self.ledgers
                .fold(record.partition, record.offset, &event, &mut alerts);
            for trip in self.guards.observe(&event, spend_of(&event)) {
                alerts.push(trip.alert);
                if let Some(b) = trip.block {
                    let record = BudgetRecord::Blocked(b.clone());
                    if let Ok(json) = serde_json::to_vec(&record) {
                        blocks.push((Bytes::from(b.bus_key()), Bytes::from(json)));
                    }
                }
            }
            if already_costed {
                continue;
            }
            match costed::encode(&mut self.records, &record.payload, &event) {
                Ok(payload) => {
                    let costed = out.entry(record.partition).or_default();
                    costed.records.push((record.key, payload));
                    costed.decoded.push(Some(Decoded::new(event)));
                }
                Err(e) => {
                    tracing::error!(event_id = %event.event_id, error = %e, "costed event could not be encoded")
                }
            }
        }
        for (partition, costed) in out {
            let Costed { records, decoded } = costed;
            self.log
                .append_decoded(COSTED_TOPIC, Some(partition), records, decoded)
                .await?;
        }
        // Alerts before the state that records them: a crash in between
        // re-raises an alert with the same ID (the notifier drops it),
        // never loses one.
        if !alerts.is_empty() {
            let records = alerts
                .iter()
                .filter_map(|a| {
                    Some((
                        Bytes::from(a.alert_id.clone()),
                        Bytes::from(serde_json::to_vec(a).ok()?),
                    ))
                })
                .collect();
            self.log.append(ALERTS_TOPIC, records).await?;
            for a in &alerts {
                match &a.guard {
                    Some(g) => {
                        tracing::warn!(guard = %a.budget, key = %g.key_id, session = %g.session, reason = %g.reason, blocked = g.blocked,
                        "runaway guard tripped")
                    }
                    None => {
                        tracing::warn!(budget = %a.budget, subject = %a.subject, threshold = a.threshold, spent_usd = %a.spent_usd,
                        "budget threshold crossed")
                    }
                }
            }
        }
        if !blocks.is_empty() {
            self.log.append(BUDGETS_TOPIC, blocks).await?;
        }
        let states: Vec<(Bytes, Bytes)> = self
            .ledgers
            .drain(chrono::Utc::now())
            .into_iter()
            .filter_map(|(key, r)| {
                Some((Bytes::from(key), Bytes::from(serde_json::to_vec(&r).ok()?)))
            })
            .collect();
        if !states.is_empty() {
            self.log.append(BUDGETS_TOPIC, states).await?;
        }
        Ok(())
    }

    /// Drops what this accountant kept for partitions taken from it: their
    /// next owner resumes from what was committed before, and restores
    /// their ledgers itself.
    fn forget_revoked(&mut self) {
        for p in self.subscription.take_revoked() {
            self.partitions.remove(&p);
            self.ledgers.forget(p);
            self.uncommitted.remove(&p);
        }
    }

    /// Commits the offsets of everything handled so far: called at most
    /// once per [`COMMIT_INTERVAL`] under load, when the bus goes quiet,
    /// and at shutdown.
    async fn commit(&mut self) -> Result<(), BusError> {
        self.forget_revoked();
        for (partition, offset) in self.uncommitted.drain() {
            self.subscription.commit(partition, offset).await?;
        }
        self.last_commit = std::time::Instant::now();
        Ok(())
    }

    /// Prices one raw record into a costed event; `None` for a record that
    /// is not an event or one seen before.
    fn price(&mut self, record: &mut BusRecord) -> Option<LlmEvent> {
        let mut event = match record.event() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(partition = record.partition, offset = record.offset, error = %e,
                    "raw bus record is not an LlmEvent; not priced");
                return None;
            }
        };
        let state = self.partitions.entry(record.partition).or_default();
        if !state.recent.insert(event.event_id) {
            METRICS.accountant_duplicates.inc();
            tracing::info!(event_id = %event.event_id, partition = record.partition, offset = record.offset,
                "event seen twice on the bus (re-sent); priced once");
            return None;
        }
        let mut cost = price_event(&self.book.current(), &event);
        cost.source = Some(BusPosition {
            partition: record.partition,
            offset: record.offset,
        });
        let model = model_label(event.model_served.as_deref()).to_owned();
        if cost.basis.as_deref() == Some(BASIS_PROVISIONAL) {
            self.note_provisional(&event, &cost, &model);
        }
        match &cost.lines {
            // The client's subscription pays: the list price is a value
            // figure, kept apart from spend.
            Some(lines) if event.billed_by == BilledBy::Subscription => METRICS
                .subscription_value_usd
                .with_label_values(&[&event.team, &event.user])
                .inc_by(lines.total_usd.to_f64().unwrap_or(0.0)),
            Some(lines) => METRICS
                .cost_usd
                .with_label_values(&[&event.team, &model])
                .inc_by(lines.total_usd.to_f64().unwrap_or(0.0)),
            None => {}
        }
        METRICS.accountant_events.inc();
        event.cost = Some(cost);
        Some(event)
    }
}

impl Accountant {
    /// Counts a provisionally priced event and logs its model once.
    fn note_provisional(&mut self, event: &LlmEvent, cost: &crate::event::Cost, model: &str) {
        METRICS.provisional.with_label_values(&[model]).inc();
        let name = event
            .model_served
            .clone()
            .or(event.model_requested.clone())
            .unwrap_or_default();
        if self.warned.insert(name.clone()) {
            tracing::warn!(model = %name, provider = %event.provider,
                priced_as = cost.family.as_deref().unwrap_or("?"),
                "no price table matches this model: its events are priced provisionally and counted in budgets; add it to the tables and run `tollgate reprice`");
        }
    }
}

/// The costed records of one partition and the priced events they hold,
/// handed to the sink when it runs in this process.
#[derive(Default)]
struct Costed {
    records: Vec<(Bytes, Bytes)>,
    decoded: Vec<Option<Decoded>>,
}

/// What an event spent in USD (nothing when a subscription paid).
fn spend_of(event: &LlmEvent) -> rust_decimal::Decimal {
    event
        .cost
        .as_ref()
        .and_then(|c| c.lines.as_ref())
        .filter(|_| event.billed_by != BilledBy::Subscription)
        .map(|l| l.total_usd)
        .unwrap_or_default()
}

/// Every record of the budgets topic from its start (compacted on Kafka),
/// to restore ledgers: up to the record that was last when the read began.
pub async fn read_budget_records(log: &dyn Log) -> Result<Vec<BudgetRecord>, BusError> {
    let ends = history::last_offsets(log, BUDGETS_TOPIC).await?;
    let mut out = Vec::new();
    history::read_history(
        log,
        BUDGETS_TOPIC,
        "restore",
        ends,
        |r| match serde_json::from_slice::<BudgetRecord>(&r.payload) {
            Ok(record) => out.push(record),
            Err(e) => {
                tracing::error!(offset = r.offset, error = %e, "budget record unreadable; skipped")
            }
        },
    )
    .await?;
    Ok(out)
}
