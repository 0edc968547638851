//! The `[[budgets]]` section of `tollgate.toml` (and the body of a
//! `budget.set` control event): beside the budgets that use it, so a new
//! budget setting is one edit here plus its use in `budget`. `config`
//! re-exports it and checks it with the other sections.

use serde::{Deserialize, Serialize};

/// Who a budget or rate limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetScope {
    Key,
    User,
    Team,
    Workspace,
    All,
    /// Each Claude Code session (`x-claude-code-session-id`) of each key
    /// separately; requests without a session are not covered.
    Session,
    /// Each agent of each session (`x-claude-code-agent-id`; the main
    /// agent, which sends none, is `main`); requests without a session are
    /// not covered.
    Agent,
}

/// How admission estimates a request's output when it reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutputEstimate {
    /// All of `max_tokens`: the reservation is never below the real cost.
    #[default]
    MaxTokens,
    /// A high percentile of what this key and model really produced
    /// recently, capped by `max_tokens` (`max_tokens` until there are
    /// enough samples): small caps are not refused while far from spent.
    Observed,
}

/// The period a budget resets on (calendar periods in its time zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    Daily,
    Weekly,
    Monthly,
    Total,
}

/// One spend limit (also the body of a `budget.set` control event).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Unique; named in refusals and alerts.
    pub name: String,
    pub scope: BudgetScope,
    /// The key id, user, team or workspace it limits; absent: each one
    /// separately.
    #[serde(default)]
    pub subject: Option<String>,
    pub period: BudgetPeriod,
    /// IANA time zone of the calendar periods.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// USD limit (a decimal string or number).
    #[serde(default)]
    pub limit_usd: Option<rust_decimal::Decimal>,
    /// Token limit (input of every class + output).
    #[serde(default)]
    pub limit_tokens: Option<u64>,
    /// Alert thresholds in percent of the limit.
    #[serde(default = "default_thresholds")]
    pub thresholds: Vec<u32>,
    /// How the output of a request is reserved.
    #[serde(default)]
    pub output_estimate: OutputEstimate,
    /// Session and agent scopes: the most ledgers one key may hold in a
    /// budget (clients invent session IDs; the least recently active
    /// ledger past this is forgotten).
    #[serde(default = "default_max_subjects_per_key")]
    pub max_subjects_per_key: usize,
    /// Session and agent scopes: a ledger idle this long is forgotten
    /// (its session starts again from zero if it comes back).
    #[serde(default = "default_forget_idle_hours")]
    pub forget_idle_hours: u32,
}

/// The default bound on session/agent ledgers per key and budget.
pub fn default_max_subjects_per_key() -> usize {
    1000
}

/// The default idle time after which a session/agent ledger is forgotten.
pub fn default_forget_idle_hours() -> u32 {
    72
}

fn default_timezone() -> String {
    "UTC".into()
}

fn default_thresholds() -> Vec<u32> {
    vec![50, 80, 100]
}
