//! `tollgate replay`: budget ledgers rebuilt from the event log alone.
//!
//! Reads every raw event the bus holds (from the start, with a reader
//! outside any consumer group, up to what was last when it began), prices it with the
//! same tables and folds it exactly as the accountant does, so its numbers
//! are the ones the running accountant publishes.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use super::accountant::RecentIds;
use super::ledger::{Alert, Ledgers};
use crate::budget::{BudgetSpec, LedgerId};
use crate::bus::{BusError, EVENTS_TOPIC, Log, history};
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
    let ends = history::last_offsets(log, EVENTS_TOPIC).await?;
    let mut ledgers = Ledgers::new(specs);
    let mut seen: HashMap<u32, RecentIds> = HashMap::new();
    let mut alerts: Vec<Alert> = Vec::new();
    history::read_history(log, EVENTS_TOPIC, "replay", ends, |r| {
        let Ok(mut event) = LlmEvent::from_json(&r.payload) else {
            return;
        };
        if !seen.entry(r.partition).or_default().insert(event.event_id) {
            return;
        }
        event.cost = Some(price_event(book, &event));
        ledgers.fold(r.partition, r.offset, &event, &mut alerts);
    })
    .await?;
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
