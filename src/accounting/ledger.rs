//! Budget ledgers: every costed event folded into (budget × subject ×
//! period), per bus partition, and the threshold alerts that folding
//! crosses.
//!
//! Ledgers are a pure fold over the event log in log order: the same log
//! gives the same numbers and the same alerts (a restart, `tollgate
//! replay`). Each ledger's state records the last raw offset it folded, so
//! a restarted accountant folds exactly the events after it; each state
//! also carries the thresholds already alerted, so an alert is raised once
//! per (budget, subject, period, threshold), and its ID is derived from
//! those, so a re-published duplicate is recognisable downstream.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::budget::{
    BudgetRecord, BudgetSpec, LedgerForgotten, LedgerId, LedgerState, Progress, Who,
};
use crate::event::{BilledBy, LlmEvent};
use crate::metrics::METRICS;

/// A budget threshold crossed: what the notifier delivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Derived from budget, subject, period and threshold: the same
    /// crossing always has the same ID.
    pub alert_id: String,
    pub budget: String,
    pub subject: String,
    pub period_start: DateTime<Utc>,
    pub period_end: Option<DateTime<Utc>>,
    /// Percent of the limit.
    pub threshold: u32,
    pub spent_usd: Decimal,
    pub limit_usd: Option<Decimal>,
    pub spent_tokens: u64,
    pub limit_tokens: Option<u64>,
    /// When the event that crossed it started.
    pub crossed_at: DateTime<Utc>,
    /// Set when a runaway guard raised it (not a budget): `budget` is
    /// then the guard's name and `subject` the `key/session`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardTrip>,
}

/// What a runaway guard saw in a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardTrip {
    pub key_id: String,
    pub session: String,
    pub reason: String,
    /// Whether the session is refused until a person resumes it.
    pub blocked: bool,
}

impl Alert {
    /// The deterministic ID of a crossing.
    pub fn id_for(id: &LedgerId, threshold: u32) -> String {
        let digest = Sha256::digest(format!(
            "{}|{}|{}|{threshold}",
            id.budget,
            id.subject,
            id.period_start.timestamp()
        ));
        hex::encode(&digest[..16])
    }
}

/// One partition's ledgers and fold progress.
#[derive(Default)]
struct PartitionLedgers {
    ledgers: HashMap<LedgerId, LedgerState>,
    progress: Progress,
    /// Ledgers changed since the last [`Ledgers::drain`].
    changed: HashSet<LedgerId>,
    progress_changed: bool,
    /// Session/agent ledgers by (budget, key): what bounds them per key.
    owned: HashMap<(String, String), HashSet<LedgerId>>,
    /// Ledgers forgotten since the last drain, to announce.
    forgotten: Vec<LedgerId>,
}

impl PartitionLedgers {
    /// Keeps `state`, indexing it under its key if it is session-scoped.
    fn insert(&mut self, state: LedgerState) {
        if let Some(owner) = &state.owner {
            self.owned
                .entry((state.id.budget.clone(), owner.clone()))
                .or_default()
                .insert(state.id.clone());
        }
        self.ledgers.insert(state.id.clone(), state);
    }

    /// Drops a ledger (and its index entry); true if it was there.
    fn remove(&mut self, id: &LedgerId) -> bool {
        let Some(state) = self.ledgers.remove(id) else {
            return false;
        };
        self.changed.remove(id);
        if let Some(owner) = state.owner {
            let slot = (id.budget.clone(), owner);
            if let Some(set) = self.owned.get_mut(&slot) {
                set.remove(id);
                if set.is_empty() {
                    self.owned.remove(&slot);
                }
            }
        }
        true
    }

    /// Past `max` ledgers of one key in a budget: forgets the least
    /// recently active ones other than `keep` (a client inventing session
    /// IDs costs memory and topic records only up to the bound).
    fn bound(&mut self, budget: &str, owner: &str, max: usize, keep: &LedgerId) {
        let slot = (budget.to_owned(), owner.to_owned());
        while self.owned.get(&slot).is_some_and(|s| s.len() > max) {
            let oldest = self.owned[&slot]
                .iter()
                .filter(|id| *id != keep)
                .min_by_key(|id| (self.ledgers.get(*id).and_then(|s| s.last_at), (*id).clone()))
                .cloned();
            let Some(oldest) = oldest else { break };
            if self.remove(&oldest) {
                METRICS.budget_ledgers_forgotten.inc();
                self.forgotten.push(oldest);
            }
        }
    }
}

/// Every ledger this accountant keeps, by partition.
pub struct Ledgers {
    specs: Vec<BudgetSpec>,
    partitions: HashMap<u32, PartitionLedgers>,
}

/// Gives each budget its alert series at 0 from the moment it exists, so a
/// dashboard shows "no alerts" rather than "No data".
fn announce_alerts(specs: &[BudgetSpec]) {
    for spec in specs {
        METRICS.budget_alerts.with_label_values(&[&spec.name]);
    }
}

impl Ledgers {
    pub fn new(specs: Vec<BudgetSpec>) -> Ledgers {
        announce_alerts(&specs);
        Ledgers {
            specs,
            partitions: HashMap::new(),
        }
    }

    /// Puts new specs in use (the control plane changed them). When the
    /// first budget appears, the partitions seen so far are forgotten so
    /// each is restored from the budgets topic before its next fold.
    pub fn set_specs(&mut self, specs: Vec<BudgetSpec>) {
        announce_alerts(&specs);
        if self.specs.is_empty() && !specs.is_empty() {
            self.partitions.clear();
        }
        self.specs = specs;
    }

    /// Whether any budget is configured (nothing to fold otherwise).
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Whether a partition's state was restored already.
    pub fn knows(&self, partition: u32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// Restores a partition from budget records read from the start of the
    /// budgets topic (later records win).
    pub fn restore<'a>(
        &mut self,
        partition: u32,
        records: impl IntoIterator<Item = &'a BudgetRecord>,
    ) {
        let mut part = PartitionLedgers::default();
        part.progress.partition = partition;
        for record in records {
            match record {
                BudgetRecord::State(s) if s.partition == partition => {
                    let newer = part
                        .ledgers
                        .get(&s.id)
                        .is_none_or(|old| s.through_offset >= old.through_offset);
                    if newer {
                        part.insert(s.clone());
                    }
                }
                BudgetRecord::Forgotten(f) if f.partition == partition => {
                    part.remove(&f.id);
                }
                BudgetRecord::Progress(p) if p.partition == partition => part.progress = p.clone(),
                _ => {}
            }
        }
        self.partitions.insert(partition, part);
    }

    /// Forgets a partition (it was revoked; the next owner restores it).
    pub fn forget(&mut self, partition: u32) {
        self.partitions.remove(&partition);
    }

    /// Folds one costed event that sat at raw `(partition, offset)` into
    /// every ledger covering it, pushing the alerts it crosses.
    pub fn fold(&mut self, partition: u32, offset: u64, event: &LlmEvent, alerts: &mut Vec<Alert>) {
        let part = self
            .partitions
            .entry(partition)
            .or_insert_with(|| PartitionLedgers {
                progress: Progress {
                    partition,
                    ..Progress::default()
                },
                ..PartitionLedgers::default()
            });
        if let Some(origin) = &event.origin {
            let key = Progress::origin_key(&origin.gateway, &event.team);
            let folded = part.progress.folded.entry(key).or_default();
            if origin.seq > *folded {
                *folded = origin.seq;
                part.progress_changed = true;
            }
        }
        // A subscription-billed event's list price is not spend: USD
        // budgets do not count it; token budgets count its tokens.
        let usd = event
            .cost
            .as_ref()
            .and_then(|c| c.lines.as_ref())
            .filter(|_| event.billed_by != BilledBy::Subscription)
            .map(|l| l.total_usd)
            .unwrap_or_default();
        let tokens = event.usage.total_tokens();
        let who = Who {
            key_id: &event.key_id,
            user: &event.user,
            team: &event.team,
            workspace: &event.workspace,
            session: event.session_id.as_deref(),
            agent: event.agent_id.as_deref(),
        };
        for spec in &self.specs {
            let Some(subject) = spec.subject_of(who) else {
                continue;
            };
            let (period_start, period_end) = spec.period_of(event.started_at);
            let id = LedgerId {
                budget: spec.name.clone(),
                subject,
                period_start,
            };
            if !part.ledgers.contains_key(&id) {
                let owner = spec.is_session_scoped().then(|| event.key_id.clone());
                part.insert(LedgerState {
                    id: id.clone(),
                    period_end,
                    partition,
                    through_offset: 0,
                    spent_usd: Decimal::ZERO,
                    spent_tokens: 0,
                    limit_usd: spec.limit_usd,
                    limit_tokens: spec.limit_tokens,
                    alerted: Vec::new(),
                    owner: owner.clone(),
                    last_at: None,
                });
                if let Some(owner) = owner {
                    part.bound(&spec.name, &owner, spec.max_subjects_per_key, &id);
                }
            }
            let state = part.ledgers.get_mut(&id).expect("inserted above");
            if state.owner.is_some() {
                state.last_at = state.last_at.max(Some(event.started_at));
            }
            let fresh =
                state.spent_tokens == 0 && state.spent_usd.is_zero() && state.through_offset == 0;
            if !fresh && offset <= state.through_offset {
                continue; // already in this ledger's published state
            }
            state.through_offset = offset;
            state.spent_usd += usd;
            state.spent_tokens += tokens;
            part.changed.insert(id.clone());
            let used = utilisation(state);
            // Session and agent IDs are the client's: never label values.
            if state.owner.is_none() {
                METRICS
                    .budget_utilisation
                    .with_label_values(&[&id.budget, &id.subject])
                    .set(used);
            }
            for &threshold in &spec.thresholds {
                if used * 100.0 >= threshold as f64 && !state.alerted.contains(&threshold) {
                    state.alerted.push(threshold);
                    METRICS.budget_alerts.with_label_values(&[&id.budget]).inc();
                    alerts.push(Alert {
                        alert_id: Alert::id_for(&id, threshold),
                        budget: id.budget.clone(),
                        subject: id.subject.clone(),
                        period_start: id.period_start,
                        period_end,
                        threshold,
                        spent_usd: state.spent_usd,
                        limit_usd: state.limit_usd,
                        spent_tokens: state.spent_tokens,
                        limit_tokens: state.limit_tokens,
                        crossed_at: event.started_at,
                        guard: None,
                    });
                }
            }
        }
    }

    /// The budget records to publish for what changed since the last call
    /// (ledger states first, then progress), as `(bus key, record)`.
    pub fn drain(&mut self, now: DateTime<Utc>) -> Vec<(String, BudgetRecord)> {
        let mut out = Vec::new();
        for (p, part) in self.partitions.iter_mut() {
            forget_idle(&self.specs, part, now);
            for id in part.forgotten.drain(..) {
                out.push((
                    id.bus_key(*p),
                    BudgetRecord::Forgotten(LedgerForgotten { id, partition: *p }),
                ));
            }
            for id in part.changed.drain() {
                if let Some(state) = part.ledgers.get(&id) {
                    out.push((id.bus_key(*p), BudgetRecord::State(state.clone())));
                }
            }
            if std::mem::take(&mut part.progress_changed) {
                out.push((
                    Progress::bus_key(*p),
                    BudgetRecord::Progress(part.progress.clone()),
                ));
            }
            // Periods long over are no longer needed in memory.
            let over: Vec<LedgerId> = part
                .ledgers
                .values()
                .filter(|s| {
                    s.period_end
                        .is_some_and(|end| end + chrono::Duration::days(2) <= now)
                })
                .map(|s| s.id.clone())
                .collect();
            for id in over {
                part.remove(&id);
            }
        }
        out
    }

    /// Every ledger's state, ordered (for `tollgate replay` and tests).
    pub fn states(&self) -> Vec<LedgerState> {
        let mut out: Vec<LedgerState> = self
            .partitions
            .values()
            .flat_map(|p| p.ledgers.values().cloned())
            .collect();
        out.sort_by(|a, b| (&a.id, a.partition).cmp(&(&b.id, b.partition)));
        out
    }
}

/// Forgets the session/agent ledgers of `part` idle longer than their
/// budget's `forget_idle` (announced on the next drain).
fn forget_idle(specs: &[BudgetSpec], part: &mut PartitionLedgers, now: DateTime<Utc>) {
    let idle: Vec<LedgerId> = part
        .owned
        .values()
        .flatten()
        .filter(|id| {
            let Some(spec) = specs.iter().find(|s| s.name == id.budget) else {
                return true; // its budget is no longer configured
            };
            part.ledgers
                .get(*id)
                .and_then(|s| s.last_at)
                .is_some_and(|at| at + spec.forget_idle < now)
        })
        .cloned()
        .collect();
    for id in idle {
        if part.remove(&id) {
            METRICS.budget_ledgers_forgotten.inc();
            part.forgotten.push(id);
        }
    }
}

/// Fraction of the limit used: the larger of USD and tokens.
fn utilisation(state: &LedgerState) -> f64 {
    let usd = state
        .limit_usd
        .filter(|l| !l.is_zero())
        .map(|l| (state.spent_usd / l).to_f64().unwrap_or(0.0))
        .unwrap_or(0.0);
    let tokens = state
        .limit_tokens
        .filter(|l| *l > 0)
        .map(|l| state.spent_tokens as f64 / l as f64)
        .unwrap_or(0.0);
    usd.max(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BudgetPeriod, BudgetScope};
    use crate::event::{Cost, CostLines};

    fn spec(limit: i64) -> BudgetSpec {
        BudgetSpec {
            name: "eng-daily".into(),
            scope: BudgetScope::Team,
            subject: Some("eng".into()),
            period: BudgetPeriod::Daily,
            tz: chrono_tz::UTC,
            limit_usd: Some(Decimal::new(limit, 0)),
            limit_tokens: None,
            thresholds: vec![50, 80, 100],
            output_estimate: crate::config::OutputEstimate::MaxTokens,
            max_subjects_per_key: 3,
            forget_idle: chrono::Duration::hours(1),
        }
    }

    fn event(at: &str, usd: i64) -> LlmEvent {
        let mut e = crate::event::tests::sample_event();
        e.team = "eng".into();
        e.started_at = DateTime::parse_from_rfc3339(at)
            .unwrap()
            .with_timezone(&Utc);
        e.usage.input_tokens = 10;
        e.cost = Some(Cost {
            price_table_version: "v".into(),
            lines: Some(CostLines {
                total_usd: Decimal::new(usd, 0),
                ..CostLines::default()
            }),
            family: None,
            tier: None,
            source: None,
            basis: None,
            notes: Vec::new(),
        });
        e
    }

    #[test]
    fn each_threshold_alerts_once_and_a_new_period_starts_from_zero() {
        let mut ledgers = Ledgers::new(vec![spec(10)]);
        let mut alerts = Vec::new();
        for (offset, usd) in [(1, 4), (2, 2), (3, 3), (4, 5), (5, 1)] {
            ledgers.fold(0, offset, &event("2026-11-23T10:00:00Z", usd), &mut alerts);
        }
        let thresholds: Vec<u32> = alerts.iter().map(|a| a.threshold).collect();
        assert_eq!(
            thresholds,
            vec![50, 80, 100],
            "4+2 crosses 50, +3 crosses 80, +5 crosses 100; nothing twice"
        );
        assert_eq!(alerts[0].spent_usd, Decimal::new(6, 0));
        // The next day (a controllable clock: the event's own time) is a
        // new ledger that starts at zero.
        alerts.clear();
        ledgers.fold(0, 6, &event("2026-11-24T00:00:00Z", 4), &mut alerts);
        assert!(alerts.is_empty());
        let states = ledgers.states();
        assert_eq!(states.len(), 2);
        assert_eq!(states[0].spent_usd, Decimal::new(15, 0));
        assert_eq!(states[1].spent_usd, Decimal::new(4, 0));
        assert_eq!(
            states[1].id.period_start.to_rfc3339(),
            "2026-11-24T00:00:00+00:00"
        );
    }

    #[test]
    fn restored_state_skips_events_it_already_holds_and_keeps_alerted_thresholds() {
        let mut first = Ledgers::new(vec![spec(10)]);
        let mut alerts = Vec::new();
        first.fold(0, 1, &event("2026-11-23T10:00:00Z", 6), &mut alerts);
        let published: Vec<BudgetRecord> = first
            .drain(Utc::now())
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        assert_eq!(alerts.len(), 1);

        let mut second = Ledgers::new(vec![spec(10)]);
        second.restore(0, &published);
        let mut again = Vec::new();
        // A crash before the commit: offset 1 comes again, then offset 2.
        second.fold(0, 1, &event("2026-11-23T10:00:00Z", 6), &mut again);
        second.fold(0, 2, &event("2026-11-23T10:00:00Z", 1), &mut again);
        assert!(
            again.is_empty(),
            "the 50% alert is not raised twice: {again:?}"
        );
        assert_eq!(second.states()[0].spent_usd, Decimal::new(7, 0));
    }

    #[test]
    fn invented_sessions_keep_at_most_the_bound_per_key_and_idle_ones_are_forgotten() {
        let mut session = spec(100);
        session.scope = BudgetScope::Session;
        session.subject = None;
        session.thresholds.clear();
        let mut ledgers = Ledgers::new(vec![session]);
        let mut alerts = Vec::new();
        for (offset, minute) in (1..=5).zip(0..) {
            let mut e = event(&format!("2026-11-23T10:0{minute}:00Z"), 1);
            e.key_id = "k1".into();
            e.session_id = Some(format!("s{offset}"));
            ledgers.fold(0, offset, &e, &mut alerts);
        }
        let mut other = event("2026-11-23T10:09:00Z", 1);
        other.key_id = "k2".into();
        other.session_id = Some("s1".into());
        ledgers.fold(0, 6, &other, &mut alerts);
        let subjects =
            |l: &Ledgers| -> Vec<String> { l.states().into_iter().map(|s| s.id.subject).collect() };
        assert_eq!(
            subjects(&ledgers),
            vec!["k1/s3", "k1/s4", "k1/s5", "k2/s1"],
            "3 per key, least recently active forgotten; k2's own session kept"
        );
        let records = ledgers.drain(utc("2026-11-23T10:10:00Z"));
        let forgotten: Vec<&str> = records
            .iter()
            .filter_map(|(_, r)| match r {
                BudgetRecord::Forgotten(f) => Some(f.id.subject.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(forgotten, vec!["k1/s1", "k1/s2"], "announced to gateways");
        // A later drain, past the idle time of all but k2's.
        ledgers.drain(utc("2026-11-23T11:08:00Z"));
        assert_eq!(subjects(&ledgers), vec!["k2/s1"]);
        let mut restored = Ledgers::new(vec![spec(100)]);
        restored.restore(0, records.iter().map(|(_, r)| r));
        assert!(
            restored.states().iter().all(|s| s.id.subject != "k1/s1"),
            "a restore drops forgotten ledgers"
        );
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn alert_ids_are_derived_from_what_was_crossed() {
        let id = LedgerId {
            budget: "b".into(),
            subject: "eng".into(),
            period_start: DateTime::<Utc>::UNIX_EPOCH,
        };
        assert_eq!(Alert::id_for(&id, 80), Alert::id_for(&id.clone(), 80));
        assert_ne!(Alert::id_for(&id, 80), Alert::id_for(&id, 100));
    }

    #[test]
    fn subscription_events_count_tokens_but_no_spend() {
        let mut both = spec(10);
        both.limit_tokens = Some(1000);
        let mut ledgers = Ledgers::new(vec![both]);
        let mut alerts = Vec::new();
        let mut sub = event("2026-11-23T10:00:00Z", 9);
        sub.billed_by = BilledBy::Subscription;
        ledgers.fold(0, 1, &sub, &mut alerts);
        ledgers.fold(0, 2, &event("2026-11-23T10:00:00Z", 1), &mut alerts);
        let state = &ledgers.states()[0];
        assert_eq!(
            state.spent_usd,
            Decimal::new(1, 0),
            "only the api event is spend"
        );
        assert_eq!(state.spent_tokens, 30, "both events' tokens count");
        assert!(alerts.is_empty(), "$9 of subscription value alerts nothing");
    }
}
