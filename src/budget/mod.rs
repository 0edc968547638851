//! Budgets as the gateway and the accountant both see them: which budgets
//! cover a request, which calendar period an instant falls in, and the
//! budget-state records the accountant publishes and gateways fold.
//!
//! Shared like `event`: the accountant derives ledgers from the log and
//! publishes them; gateways admit requests against them.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub mod config;

use crate::field_caps::{RECORDING, truncate};
pub use config::{BudgetConfig, BudgetPeriod, BudgetScope, OutputEstimate};

/// Who a request is, as far as budgets care.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub key_id: &'a str,
    pub user: &'a str,
    pub team: &'a str,
    pub workspace: &'a str,
    /// Claude Code's session ID, when the request carries one.
    pub session: Option<&'a str>,
    /// The agent that sent it; `None` in a session is the main agent.
    pub agent: Option<&'a str>,
}

/// The agent name of a session's main agent (Claude Code sends no agent
/// ID for it).
pub const MAIN_AGENT: &str = "main";

/// A client-supplied ID as the event records it (cut to the recording
/// cap), so the gateway and the accountant name the same ledger.
pub fn as_recorded(id: &str) -> std::borrow::Cow<'_, str> {
    if id.len() <= RECORDING.text {
        return std::borrow::Cow::Borrowed(id);
    }
    let mut owned = id.to_owned();
    truncate(&mut owned, RECORDING.text);
    std::borrow::Cow::Owned(owned)
}

/// One configured budget, checked and ready to use.
#[derive(Debug, Clone)]
pub struct BudgetSpec {
    pub name: String,
    pub scope: BudgetScope,
    /// The one key/user/team/workspace it limits; `None`: each one
    /// separately (a ledger per subject).
    pub subject: Option<String>,
    pub period: BudgetPeriod,
    pub tz: Tz,
    pub limit_usd: Option<Decimal>,
    pub limit_tokens: Option<u64>,
    /// Alert thresholds in percent of the limit, ascending.
    pub thresholds: Vec<u32>,
    /// How admission reserves a request's output.
    pub output_estimate: OutputEstimate,
    /// Session/agent scopes: most ledgers per key (least recently active
    /// forgotten first).
    pub max_subjects_per_key: usize,
    /// Session/agent scopes: a ledger idle this long is forgotten.
    pub forget_idle: Duration,
}

impl BudgetSpec {
    /// Builds the specs from config; errors name the budget.
    pub fn from_config(configs: &[BudgetConfig]) -> Result<Vec<BudgetSpec>, String> {
        let mut out = Vec::new();
        for c in configs {
            let tz: Tz = c.timezone.parse().map_err(|_| {
                format!(
                    "budgets[{}].timezone {:?} is not an IANA time zone (e.g. \"Europe/Berlin\")",
                    c.name, c.timezone
                )
            })?;
            if c.limit_usd.is_none() && c.limit_tokens.is_none() {
                return Err(format!(
                    "budgets[{}] needs limit_usd or limit_tokens",
                    c.name
                ));
            }
            if c.limit_usd.is_some_and(|l| l <= Decimal::ZERO) {
                return Err(format!("budgets[{}].limit_usd must be positive", c.name));
            }
            if c.scope == BudgetScope::All && c.subject.is_some() {
                return Err(format!(
                    "budgets[{}]: scope \"all\" takes no subject",
                    c.name
                ));
            }
            check_session_scoped(c)?;
            let mut thresholds = c.thresholds.clone();
            thresholds.sort_unstable();
            thresholds.dedup();
            if thresholds.iter().any(|t| *t == 0 || *t > 1000) {
                return Err(format!(
                    "budgets[{}].thresholds are percents between 1 and 1000",
                    c.name
                ));
            }
            out.push(BudgetSpec {
                name: c.name.clone(),
                scope: c.scope,
                subject: c.subject.clone(),
                period: c.period,
                tz,
                limit_usd: c.limit_usd,
                limit_tokens: c.limit_tokens,
                thresholds,
                output_estimate: c.output_estimate,
                max_subjects_per_key: c.max_subjects_per_key,
                forget_idle: Duration::hours(c.forget_idle_hours.into()),
            });
        }
        let mut names: Vec<&str> = out.iter().map(|b| b.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("budgets: name {:?} appears twice", w[0]));
        }
        Ok(out)
    }

    /// The subject this budget keeps a ledger for, if it covers `who`.
    /// Session and agent ledgers are named under the key
    /// (`key/session`, `key/session/agent`): another key sending the same
    /// session ID spends from its own ledger, never from this one. A
    /// request without a session is not covered by them.
    pub fn subject_of(&self, who: Who<'_>) -> Option<String> {
        let value = match self.scope {
            BudgetScope::Key => who.key_id,
            BudgetScope::User => who.user,
            BudgetScope::Team => who.team,
            BudgetScope::Workspace => who.workspace,
            BudgetScope::All => return Some("*".to_owned()),
            BudgetScope::Session | BudgetScope::Agent => return self.session_subject(who),
        };
        match &self.subject {
            Some(s) if s != value => None,
            _ => Some(value.to_owned()),
        }
    }

    /// Whether this budget keeps a ledger per session or agent: subjects
    /// the client invents, so their number is bounded per key.
    pub fn is_session_scoped(&self) -> bool {
        matches!(self.scope, BudgetScope::Session | BudgetScope::Agent)
    }

    /// The ledger subject of a session or agent scope (see [`Self::subject_of`]).
    fn session_subject(&self, who: Who<'_>) -> Option<String> {
        if self.subject.as_deref().is_some_and(|k| k != who.key_id) {
            return None;
        }
        let session = as_recorded(who.session.filter(|s| !s.is_empty())?);
        let key = who.key_id;
        Some(match self.scope {
            BudgetScope::Agent => {
                let agent = as_recorded(who.agent.filter(|a| !a.is_empty()).unwrap_or(MAIN_AGENT));
                format!("{key}/{session}/{agent}")
            }
            _ => format!("{key}/{session}"),
        })
    }

    /// The period `at` falls in: its start and (except `total`) its end,
    /// calendar periods in the budget's time zone.
    pub fn period_of(&self, at: DateTime<Utc>) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
        let local = at.with_timezone(&self.tz).date_naive();
        let (start, end) = match self.period {
            BudgetPeriod::Total => return (DateTime::<Utc>::UNIX_EPOCH, None),
            BudgetPeriod::Daily => (local, local + Duration::days(1)),
            BudgetPeriod::Weekly => {
                let monday = local - Duration::days(local.weekday().num_days_from_monday() as i64);
                (monday, monday + Duration::days(7))
            }
            BudgetPeriod::Monthly => {
                let first = NaiveDate::from_ymd_opt(local.year(), local.month(), 1).expect("valid");
                let next = if local.month() == 12 {
                    NaiveDate::from_ymd_opt(local.year() + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(local.year(), local.month() + 1, 1)
                }
                .expect("valid");
                (first, next)
            }
        };
        (self.midnight(start), Some(self.midnight(end)))
    }

    /// Local midnight of `day` as a UTC instant (the earliest one if a
    /// clock change makes it ambiguous or skips it).
    fn midnight(&self, day: NaiveDate) -> DateTime<Utc> {
        let naive = day.and_hms_opt(0, 0, 0).expect("midnight exists");
        match self.tz.from_local_datetime(&naive) {
            chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
                t.with_timezone(&Utc)
            }
            chrono::LocalResult::None => self
                .tz
                .from_local_datetime(&(naive + Duration::hours(1)))
                .earliest()
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|| naive.and_utc()),
        }
    }
}

/// Session and agent budgets: `subject` names a key (the ledgers are per
/// session of that key); the bound on ledgers per key must be positive.
fn check_session_scoped(c: &BudgetConfig) -> Result<(), String> {
    if !matches!(c.scope, BudgetScope::Session | BudgetScope::Agent) {
        return Ok(());
    }
    if c.max_subjects_per_key == 0 || c.max_subjects_per_key > 1_000_000 {
        return Err(format!(
            "budgets[{}].max_subjects_per_key must be between 1 and 1000000",
            c.name
        ));
    }
    if c.forget_idle_hours == 0 {
        return Err(format!(
            "budgets[{}].forget_idle_hours must be positive",
            c.name
        ));
    }
    Ok(())
}

/// What a runaway guard watches in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardKind {
    /// Spend or requests per minute of one session.
    SessionRate,
    /// The same request body sent again and again in a row.
    Repeat,
}

/// One `[[guards]]` entry of `tollgate.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Named in alerts and refusals; defaults to the kind.
    #[serde(default)]
    pub name: Option<String>,
    pub kind: GuardKind,
    /// `session_rate`: USD per minute (a decimal string or number).
    #[serde(default)]
    pub usd_per_minute: Option<Decimal>,
    /// `session_rate`: requests per minute.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// `repeat`: how many identical bodies in a row trip it.
    #[serde(default)]
    pub same_body: Option<u32>,
    /// Refuse the session's requests once tripped, until resumed.
    #[serde(default)]
    pub block: bool,
}

/// A checked guard.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardSpec {
    pub name: String,
    pub kind: GuardKind,
    pub usd_per_minute: Option<Decimal>,
    pub requests_per_minute: Option<u32>,
    pub same_body: u32,
    pub block: bool,
}

impl GuardSpec {
    /// Checks the `[[guards]]` entries; errors name the guard.
    pub fn from_config(configs: &[GuardConfig]) -> Result<Vec<GuardSpec>, String> {
        let mut out: Vec<GuardSpec> = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let name = c.name.clone().unwrap_or_else(|| match c.kind {
                GuardKind::SessionRate => "session_rate".into(),
                GuardKind::Repeat => "repeat".into(),
            });
            let at = format!("guards[{i}] ({name})");
            check_guard(&at, c)?;
            if out.iter().any(|g| g.name == name) {
                return Err(format!(
                    "{at}: the name appears twice; give each guard its own `name`"
                ));
            }
            out.push(GuardSpec {
                name,
                kind: c.kind,
                usd_per_minute: c.usd_per_minute,
                requests_per_minute: c.requests_per_minute,
                same_body: c.same_body.unwrap_or(0),
                block: c.block,
            });
        }
        Ok(out)
    }
}

/// The fields each kind of guard needs, and no others.
fn check_guard(at: &str, c: &GuardConfig) -> Result<(), String> {
    match c.kind {
        GuardKind::SessionRate => {
            if c.same_body.is_some() {
                return Err(format!("{at}: same_body belongs to kind \"repeat\""));
            }
            let usd_ok = c.usd_per_minute.is_some_and(|u| u > Decimal::ZERO);
            let rpm_ok = c.requests_per_minute.is_some_and(|r| r > 0);
            let any = c.usd_per_minute.is_some() || c.requests_per_minute.is_some();
            if !any
                || (c.usd_per_minute.is_some() && !usd_ok)
                || (c.requests_per_minute.is_some() && !rpm_ok)
            {
                return Err(format!(
                    "{at}: kind \"session_rate\" needs a positive usd_per_minute and/or requests_per_minute"
                ));
            }
        }
        GuardKind::Repeat => {
            if c.usd_per_minute.is_some() || c.requests_per_minute.is_some() {
                return Err(format!(
                    "{at}: usd_per_minute and requests_per_minute belong to kind \"session_rate\""
                ));
            }
            if !c.same_body.is_some_and(|n| (2..=10_000).contains(&n)) {
                return Err(format!(
                    "{at}: kind \"repeat\" needs same_body between 2 and 10000"
                ));
            }
        }
    }
    Ok(())
}

/// Names one ledger: a budget, its subject and the period's start.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LedgerId {
    pub budget: String,
    pub subject: String,
    pub period_start: DateTime<Utc>,
}

impl LedgerId {
    /// The bus key of this ledger's state from one partition (the topic is
    /// compacted on it: the latest state per ledger and partition stays).
    pub fn bus_key(&self, partition: u32) -> String {
        format!(
            "state|{}|{}|{}|p{partition}",
            self.budget,
            self.subject,
            self.period_start.timestamp()
        )
    }
}

/// What the accountant publishes on `tollgate.budgets.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BudgetRecord {
    /// One ledger's spend, as folded from one partition of the events log.
    State(LedgerState),
    /// How far the accountant of a partition has folded each gateway's
    /// events, per team: lets a gateway release the reservations of
    /// requests whose real cost is now in the state.
    Progress(Progress),
    /// A ledger dropped from memory by its accountant.
    Forgotten(LedgerForgotten),
    /// A runaway guard blocked a session (see `accounting::guards`).
    Blocked(SessionBlock),
    /// A person resumed a blocked session (`POST /v1/sessions/{id}/resume`).
    Resumed(SessionBlock),
}

/// One ledger's spend from one partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerState {
    #[serde(flatten)]
    pub id: LedgerId,
    pub period_end: Option<DateTime<Utc>>,
    pub partition: u32,
    /// Last raw offset of the partition folded into this state: a
    /// restarted accountant folds only events after it.
    pub through_offset: u64,
    pub spent_usd: Decimal,
    pub spent_tokens: u64,
    pub limit_usd: Option<Decimal>,
    pub limit_tokens: Option<u64>,
    /// Thresholds (percent) already alerted in this period.
    pub alerted: Vec<u32>,
    /// Session/agent ledgers: the key they belong to and when they last
    /// spent, which bound and prune them (see `accounting::ledger`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at: Option<DateTime<Utc>>,
}

/// A ledger forgotten by the accountant (a session or agent ledger past
/// its key's bound, or idle): gateways drop it too. It has the ledger's
/// bus key, so compaction keeps it instead of the ledger's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerForgotten {
    #[serde(flatten)]
    pub id: LedgerId,
    pub partition: u32,
}

/// A session a runaway guard blocked (`Blocked`) or a person resumed
/// (`Resumed`, the same fields): both under the bus key
/// [`SessionBlock::bus_key`], so the compacted topic keeps the latest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionBlock {
    pub key_id: String,
    /// The session ID as the event recorded it.
    pub session: String,
    /// The guard's name (`guards[].name`, else its kind).
    pub guard: String,
    /// The trip this is about (the guard alert's ID): a block re-published
    /// after an accountant restart does not undo a resume of the same trip.
    pub episode: String,
    /// What the guard saw, for people (in the refusal and the alert).
    pub reason: String,
    pub at: DateTime<Utc>,
}

impl SessionBlock {
    /// The bus key of a session's block state.
    pub fn bus_key(&self) -> String {
        format!("block|{}|{}", self.key_id, self.session)
    }
}

/// Per partition: `"<gateway>|<team>"` → the highest origin sequence of
/// that gateway's events for that team folded into the ledgers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub partition: u32,
    pub folded: BTreeMap<String, u64>,
}

impl Progress {
    /// The bus key of a partition's progress record.
    pub fn bus_key(partition: u32) -> String {
        format!("progress|p{partition}")
    }

    /// The `folded` key of a gateway's events for a team.
    pub fn origin_key(gateway: &str, team: &str) -> String {
        format!("{gateway}|{team}")
    }
}

/// A ledger's totals across partitions.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LedgerTotal {
    pub spent_usd: Decimal,
    pub spent_tokens: u64,
    pub period_end: Option<DateTime<Utc>>,
}

/// Budget state folded from the budgets topic: the latest state of every
/// ledger per partition, summed on demand.
#[derive(Debug, Default)]
pub struct BudgetStates {
    ledgers: HashMap<LedgerId, BTreeMap<u32, LedgerState>>,
}

impl BudgetStates {
    /// Takes one state record (a newer one replaces the partition's).
    pub fn apply(&mut self, state: LedgerState) {
        let parts = self.ledgers.entry(state.id.clone()).or_default();
        let newer = parts
            .get(&state.partition)
            .is_none_or(|old| state.through_offset >= old.through_offset);
        if newer {
            parts.insert(state.partition, state);
        }
    }

    /// A ledger's spend so far (zero if nothing was spent).
    pub fn total(&self, id: &LedgerId) -> LedgerTotal {
        let mut total = LedgerTotal::default();
        for s in self.ledgers.get(id).into_iter().flat_map(|p| p.values()) {
            total.spent_usd += s.spent_usd;
            total.spent_tokens += s.spent_tokens;
            total.period_end = s.period_end;
        }
        total
    }

    /// Every ledger with its totals, for the API.
    pub fn all(&self) -> Vec<(LedgerId, LedgerTotal)> {
        let mut out: Vec<_> = self
            .ledgers
            .keys()
            .map(|id| (id.clone(), self.total(id)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Drops a ledger's state from one partition (the accountant forgot it).
    pub fn forget(&mut self, gone: &LedgerForgotten) {
        if let Some(parts) = self.ledgers.get_mut(&gone.id) {
            parts.remove(&gone.partition);
            if parts.is_empty() {
                self.ledgers.remove(&gone.id);
            }
        }
    }

    /// Forgets ledgers of periods that ended before `now` (memory bound).
    pub fn prune(&mut self, now: DateTime<Utc>) {
        self.ledgers.retain(|_, parts| {
            parts
                .values()
                .any(|s| s.period_end.is_none_or(|end| end > now))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(period: BudgetPeriod, tz: &str) -> BudgetSpec {
        BudgetSpec {
            name: "b".into(),
            scope: BudgetScope::Team,
            subject: None,
            period,
            tz: tz.parse().unwrap(),
            limit_usd: Some(Decimal::ONE),
            limit_tokens: None,
            thresholds: vec![50, 80, 100],
            output_estimate: OutputEstimate::MaxTokens,
            max_subjects_per_key: 10,
            forget_idle: Duration::hours(1),
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn calendar_periods_in_utc() {
        let at = utc("2026-11-23T15:00:00Z"); // a Monday
        assert_eq!(
            spec(BudgetPeriod::Daily, "UTC").period_of(at),
            (
                utc("2026-11-23T00:00:00Z"),
                Some(utc("2026-11-24T00:00:00Z"))
            )
        );
        assert_eq!(
            spec(BudgetPeriod::Weekly, "UTC").period_of(utc("2026-11-29T23:59:59Z")),
            (
                utc("2026-11-23T00:00:00Z"),
                Some(utc("2026-11-30T00:00:00Z"))
            )
        );
        assert_eq!(
            spec(BudgetPeriod::Monthly, "UTC").period_of(utc("2026-12-31T23:59:59Z")),
            (
                utc("2026-12-01T00:00:00Z"),
                Some(utc("2027-01-01T00:00:00Z"))
            )
        );
        assert_eq!(spec(BudgetPeriod::Total, "UTC").period_of(at).1, None);
    }

    #[test]
    fn periods_follow_the_configured_time_zone() {
        // 23:30 UTC on Nov 30 is already Dec 1 in Berlin (UTC+1).
        let at = utc("2026-11-30T23:30:00Z");
        let (start, end) = spec(BudgetPeriod::Monthly, "Europe/Berlin").period_of(at);
        assert_eq!(start, utc("2026-11-30T23:00:00Z"));
        assert_eq!(end, Some(utc("2026-12-31T23:00:00Z")));
        let (start, _) =
            spec(BudgetPeriod::Daily, "America/New_York").period_of(utc("2026-03-08T12:00:00Z"));
        assert_eq!(
            start,
            utc("2026-03-08T05:00:00Z"),
            "midnight before the DST switch is still UTC-5"
        );
    }

    #[test]
    fn budget_with_subject_covers_only_that_subject() {
        let mut s = spec(BudgetPeriod::Daily, "UTC");
        let who = Who {
            key_id: "k",
            user: "u",
            team: "eng",
            workspace: "w",
            session: None,
            agent: None,
        };
        assert_eq!(s.subject_of(who), Some("eng".into()));
        s.subject = Some("data".into());
        assert_eq!(s.subject_of(who), None);
        s.scope = BudgetScope::All;
        s.subject = None;
        assert_eq!(s.subject_of(who), Some("*".into()));
    }

    #[test]
    fn session_and_agent_ledgers_are_per_key_and_need_a_session() {
        let mut s = spec(BudgetPeriod::Total, "UTC");
        s.scope = BudgetScope::Session;
        let mut who = Who {
            key_id: "k",
            user: "u",
            team: "eng",
            workspace: "w",
            session: None,
            agent: Some("a-1"),
        };
        assert_eq!(s.subject_of(who), None, "no session: not covered");
        who.session = Some("s-1");
        assert_eq!(s.subject_of(who), Some("k/s-1".into()));
        s.scope = BudgetScope::Agent;
        assert_eq!(s.subject_of(who), Some("k/s-1/a-1".into()));
        who.agent = None;
        assert_eq!(s.subject_of(who), Some("k/s-1/main".into()));
        s.subject = Some("other-key".into());
        assert_eq!(s.subject_of(who), None, "a subject names the key");
        let long = "x".repeat(5000);
        who.session = Some(&long);
        s.subject = None;
        s.scope = BudgetScope::Session;
        let subject = s.subject_of(who).unwrap();
        assert!(subject.len() <= 2 + RECORDING.text, "cut as the event is");
        let mut recorded = long.clone();
        truncate(&mut recorded, RECORDING.text);
        assert_eq!(subject, format!("k/{recorded}"));
    }

    #[test]
    fn states_sum_partitions_and_keep_the_newest_per_partition() {
        let id = LedgerId {
            budget: "b".into(),
            subject: "*".into(),
            period_start: utc("2026-11-23T00:00:00Z"),
        };
        let st = |partition, through_offset, usd: i64| LedgerState {
            id: id.clone(),
            period_end: None,
            partition,
            through_offset,
            spent_usd: Decimal::new(usd, 2),
            spent_tokens: 1,
            limit_usd: None,
            limit_tokens: None,
            alerted: vec![],
            owner: None,
            last_at: None,
        };
        let mut states = BudgetStates::default();
        states.apply(st(0, 5, 100));
        states.apply(st(1, 2, 50));
        states.apply(st(0, 3, 999)); // older: ignored
        assert_eq!(states.total(&id).spent_usd, Decimal::new(150, 2));
        assert_eq!(states.total(&id).spent_tokens, 2);
    }
}
