//! `tollgate replay`: budget ledgers rebuilt from the event log alone.
//!
//! Reads every raw event the bus holds (from the start, with a throwaway
//! consumer group, up to what was last when it began), prices it with the
//! same tables and folds it exactly as the accountant does, so its numbers
//! are the ones the running accountant publishes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use super::accountant::RecentIds;
use super::ledger::{Alert, Ledgers};
use crate::budget::{BudgetSpec, LedgerId};
use crate::bus::{BusError, EVENTS_TOPIC, Log};
use crate::event::LlmEvent;
use crate::pricing::PriceBook;
use crate::pricing::cost::price_event;

/// One ledger's totals across partitions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerSummary {
    pub budget: String,
    pub subject: String,
    pub period_start: DateTime<Utc>,
    pub period_end: Option<DateTime<Utc>>,
    pub spent_usd: Decimal,
    pub spent_tokens: u64,
    /// Thresholds crossed in the period (percent).
    pub alerted: Vec<u32>,
}

/// Rebuilds every ledger from the events log.
pub async fn replay(
    log: &dyn Log,
    book: &PriceBook,
    specs: Vec<BudgetSpec>,
) -> Result<Vec<LedgerSummary>, BusError> {
    let mut ends = HashMap::new();
    for p in 0..log.partitions(EVENTS_TOPIC).await? {
        if let Some(last) = log.last_in(EVENTS_TOPIC, p).await? {
            ends.insert(p, last.offset);
        }
    }
    let mut ledgers = Ledgers::new(specs);
    let mut remaining = ends.len();
    if remaining > 0 {
        let group = format!("tollgate-replay-{}", uuid::Uuid::new_v4().simple());
        let mut subscription = log.subscribe(&group, EVENTS_TOPIC).await?;
        let mut seen: HashMap<u32, RecentIds> = HashMap::new();
        let mut alerts: Vec<Alert> = Vec::new();
        let mut idle = 0;
        while remaining > 0 {
            let records = subscription
                .poll(10_000, Duration::from_millis(500))
                .await?;
            idle = if records.is_empty() { idle + 1 } else { 0 };
            if idle > 120 {
                return Err(BusError::Worker {
                    topic: EVENTS_TOPIC.into(),
                    message: "replay stopped receiving events before the end of the log".into(),
                });
            }
            for r in records {
                let Some(end) = ends.get(&r.partition).copied() else {
                    continue;
                };
                if r.offset > end {
                    continue;
                }
                if r.offset == end {
                    remaining -= 1;
                }
                let Ok(mut event) = serde_json::from_slice::<LlmEvent>(&r.payload) else {
                    continue;
                };
                if !seen.entry(r.partition).or_default().insert(event.event_id) {
                    continue;
                }
                event.cost = Some(price_event(book, &event));
                ledgers.fold(r.partition, r.offset, &event, &mut alerts);
            }
        }
    }
    let mut totals: BTreeMap<LedgerId, LedgerSummary> = BTreeMap::new();
    for s in ledgers.states() {
        let t = totals.entry(s.id.clone()).or_insert_with(|| LedgerSummary {
            budget: s.id.budget.clone(),
            subject: s.id.subject.clone(),
            period_start: s.id.period_start,
            period_end: s.period_end,
            spent_usd: Decimal::ZERO,
            spent_tokens: 0,
            alerted: Vec::new(),
        });
        t.spent_usd += s.spent_usd;
        t.spent_tokens += s.spent_tokens;
        for a in s.alerted {
            if !t.alerted.contains(&a) {
                t.alerted.push(a);
            }
        }
        t.alerted.sort_unstable();
    }
    Ok(totals.into_values().collect())
}
