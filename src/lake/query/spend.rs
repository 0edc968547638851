//! Spend queries: cost and tokens per token class grouped by what a
//! platform team asks about, the costliest sessions, and what prompt
//! caching saved.
//!
//! Spend is the list price of API-billed events only. Events billed to the
//! client's own subscription carry a list-price *value* that is summed
//! apart (`subscription_value_usd`) and never added to spend.

use datafusion::functions_aggregate::expr_fn::{count, max, min, sum};
use datafusion::prelude::*;
use datafusion::scalar::ScalarValue;
use serde::Serialize;

use super::logs::{LogFilter, USAGE_COLUMNS as TOKEN_COLUMNS, metadata_value};
use super::{Lake, LakeError, Scope, collect, filtered, rows_as_json};
use crate::event::{USD_PRECISION, USD_SCALE};

/// One dimension a spend query can group by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    Team,
    User,
    Key,
    Model,
    Provider,
    Day,
    Hour,
    Session,
    /// Claude Code's agent (`x-claude-code-agent-id`); the main agent,
    /// which sends none, is the null group.
    Agent,
    BilledBy,
    /// A metadata key: events without it form their own (null) group.
    Metadata(String),
}

impl GroupBy {
    /// Parses an API name (`team`, `metadata.repo`, …).
    pub fn parse(name: &str) -> Option<GroupBy> {
        Some(match name {
            "team" => GroupBy::Team,
            "user" => GroupBy::User,
            "key" => GroupBy::Key,
            "model" => GroupBy::Model,
            "provider" => GroupBy::Provider,
            "day" => GroupBy::Day,
            "hour" => GroupBy::Hour,
            "session" => GroupBy::Session,
            "agent" => GroupBy::Agent,
            "billed_by" => GroupBy::BilledBy,
            other => {
                let key = other.strip_prefix("metadata.")?;
                if key.is_empty() {
                    return None;
                }
                GroupBy::Metadata(key.to_owned())
            }
        })
    }

    /// The API names, for error messages and the OpenAPI description.
    pub const NAMES: &'static str =
        "team, user, key, model, provider, day, hour, session, agent, billed_by, metadata.<key>";

    /// The column name in results.
    pub(super) fn name(&self) -> String {
        match self {
            GroupBy::Team => "team".into(),
            GroupBy::User => "user".into(),
            GroupBy::Key => "key".into(),
            GroupBy::Model => "model".into(),
            GroupBy::Provider => "provider".into(),
            GroupBy::Day => "day".into(),
            GroupBy::Hour => "hour".into(),
            GroupBy::Session => "session".into(),
            GroupBy::Agent => "agent".into(),
            GroupBy::BilledBy => "billed_by".into(),
            GroupBy::Metadata(k) => format!("metadata.{k}"),
        }
    }

    fn expr(&self) -> Expr {
        let e = match self {
            GroupBy::Team => col("team"),
            GroupBy::User => col("user"),
            GroupBy::Key => col("key_id"),
            GroupBy::Model => coalesce(vec![col("model_served"), col("model_requested")]),
            GroupBy::Provider => col("provider"),
            // The partition column: the UTC day, and free to group by.
            GroupBy::Day => col("day"),
            GroupBy::Hour => date_trunc(lit("hour"), col("started_at")),
            GroupBy::Session => col("session_id"),
            GroupBy::Agent => col("agent_id"),
            GroupBy::BilledBy => coalesce(vec![col("billed_by"), lit("api")]),
            GroupBy::Metadata(k) => metadata_value(k),
        };
        e.alias(self.name())
    }
}

/// A spend query: groups, filters (time range included), a row cap.
#[derive(Debug, Clone, Default)]
pub struct SpendQuery {
    pub group_by: Vec<GroupBy>,
    pub filter: LogFilter,
    pub limit: usize,
}

/// The costliest sessions.
#[derive(Debug, Clone)]
pub struct TopSessionsQuery {
    pub filter: LogFilter,
    pub limit: usize,
    /// `spend_usd`, `subscription_value_usd` or `total_tokens`.
    pub order_by: &'static str,
}

/// Rows of a spend-like query.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SpendResult {
    pub data: Vec<serde_json::Value>,
    /// More groups matched than the limit returned.
    pub truncated: bool,
}

/// Cost lines: `(lake column, result name)`.
pub(super) const COST_LINES: &[(&str, &str)] = &[
    ("cost_input_usd", "input_usd"),
    ("cost_output_usd", "output_usd"),
    ("cost_cache_write_5m_usd", "cache_write_5m_usd"),
    ("cost_cache_write_1h_usd", "cache_write_1h_usd"),
    ("cost_cache_read_usd", "cache_read_usd"),
    ("cost_web_search_usd", "web_search_usd"),
];

pub(super) fn is_subscription() -> Expr {
    col("billed_by").eq(lit("subscription"))
}

pub(super) fn usd_null() -> Expr {
    lit(ScalarValue::Decimal128(None, USD_PRECISION, USD_SCALE))
}

/// `column` where the event is API-billed, else null (not summed).
pub(super) fn spend_of(column: &str) -> Expr {
    when(is_subscription(), usd_null())
        .otherwise(col(column))
        .expect("a complete CASE expression")
}

/// `column` where the event is subscription-billed, else null.
pub(super) fn value_of(column: &str) -> Expr {
    when(is_subscription(), col(column))
        .otherwise(usd_null())
        .expect("a complete CASE expression")
}

pub(super) fn total_tokens() -> Expr {
    col("input_tokens")
        + col("output_tokens")
        + col("cache_creation_5m_tokens")
        + col("cache_creation_1h_tokens")
        + col("cache_read_tokens")
}

pub(super) fn unpriced() -> Expr {
    when(col("cost_usd").is_null(), lit(1i64))
        .otherwise(lit(0i64))
        .expect("a complete CASE expression")
}

/// Events priced provisionally (no table entry matched their model).
pub(super) fn provisional() -> Expr {
    when(col("pricing_basis").eq(lit("provisional")), lit(1i64))
        .otherwise(lit(0i64))
        .expect("a complete CASE expression")
}

pub(super) fn errors() -> Expr {
    when(col("status").gt_eq(lit(400u16)), lit(1i64))
        .otherwise(lit(0i64))
        .expect("a complete CASE expression")
}

/// The aggregates of a spend row.
fn spend_aggregates() -> Vec<Expr> {
    let mut out = vec![
        count(lit(1i64)).alias("requests"),
        sum(errors()).alias("errors"),
    ];
    for c in TOKEN_COLUMNS {
        out.push(sum(col(*c)).alias(*c));
    }
    out.push(sum(total_tokens()).alias("total_tokens"));
    out.push(sum(spend_of("cost_usd")).alias("spend_usd"));
    for (column, name) in COST_LINES {
        out.push(sum(spend_of(column)).alias(*name));
    }
    out.push(sum(value_of("cost_usd")).alias("subscription_value_usd"));
    out.push(sum(spend_of("cost_cache_savings_usd")).alias("cache_savings_usd"));
    out.push(sum(unpriced()).alias("unpriced_requests"));
    out.push(sum(provisional()).alias("provisional_requests"));
    out
}

/// Result fields that are sums: a group with nothing to sum reads 0
/// rather than missing.
fn fill_zeros(row: &mut serde_json::Map<String, serde_json::Value>, names: &[&str]) {
    for name in names {
        if !row.contains_key(*name) {
            let zero = if name.ends_with("_usd") {
                serde_json::Value::from("0")
            } else {
                serde_json::Value::from(0)
            };
            row.insert((*name).to_owned(), zero);
        }
    }
}

pub(super) fn spend_fields() -> Vec<&'static str> {
    let mut names = vec!["requests", "errors", "total_tokens", "spend_usd"];
    names.extend(TOKEN_COLUMNS);
    names.extend(COST_LINES.iter().map(|(_, n)| *n));
    names.extend([
        "subscription_value_usd",
        "cache_savings_usd",
        "unpriced_requests",
        "provisional_requests",
    ]);
    names
}

impl Lake {
    /// Spend and tokens per group, costliest first (time groups in order):
    /// from hourly rollups for whole hours and raw events for the rest
    /// when the query allows it (see [`super::hourly`]), else from raw
    /// events alone. Both give the same rows to the last decimal place.
    pub async fn spend(&self, scope: &Scope, q: &SpendQuery) -> Result<SpendResult, LakeError> {
        match self
            .spend_by_hour(scope, q, super::hourly::spend_aggregates())
            .await?
        {
            Some(df) => self.finish_spend(df, q).await,
            None => self.spend_raw(scope, q).await,
        }
    }

    /// [`Lake::spend`] from raw events only.
    pub async fn spend_raw(&self, scope: &Scope, q: &SpendQuery) -> Result<SpendResult, LakeError> {
        let groups: Vec<Expr> = q.group_by.iter().map(GroupBy::expr).collect();
        let df = filtered(self.events(scope).await?, q.filter.exprs())?
            .aggregate(groups, spend_aggregates())?;
        self.finish_spend(df, q).await
    }

    /// Orders, caps and encodes aggregated spend rows.
    async fn finish_spend(&self, df: DataFrame, q: &SpendQuery) -> Result<SpendResult, LakeError> {
        let timeline = q
            .group_by
            .iter()
            .any(|g| matches!(g, GroupBy::Day | GroupBy::Hour));
        let mut order: Vec<_> = if timeline {
            q.group_by
                .iter()
                .map(|g| col(g.name()).sort(true, true))
                .collect()
        } else {
            vec![col("spend_usd").sort(false, false)]
        };
        order.push(col("requests").sort(false, false));
        let df = df.sort(order)?.limit(0, Some(q.limit + 1))?;
        self.finish_rows(df, q.limit, &spend_fields()).await
    }

    /// The sessions with the most spend (or value, or tokens).
    pub async fn top_sessions(
        &self,
        scope: &Scope,
        q: &TopSessionsQuery,
    ) -> Result<SpendResult, LakeError> {
        let mut predicates = q.filter.exprs();
        predicates.push(col("session_id").is_not_null());
        let aggregates = vec![
            min(col("team")).alias("team"),
            min(col("user")).alias("user"),
            count(lit(1i64)).alias("requests"),
            sum(errors()).alias("errors"),
            sum(total_tokens()).alias("total_tokens"),
            sum(spend_of("cost_usd")).alias("spend_usd"),
            sum(value_of("cost_usd")).alias("subscription_value_usd"),
            min(col("started_at")).alias("first_started_at"),
            max(col("ended_at")).alias("last_ended_at"),
        ];
        let df = filtered(self.events(scope).await?, predicates)?
            .aggregate(vec![col("session_id")], aggregates)?
            .sort(vec![
                col(q.order_by).sort(false, false),
                col("session_id").sort(true, false),
            ])?
            .limit(0, Some(q.limit))?;
        let fields = [
            "requests",
            "errors",
            "total_tokens",
            "spend_usd",
            "subscription_value_usd",
        ];
        self.finish_rows(df, q.limit, &fields).await
    }

    /// What cache reads saved against full input price, per group: from
    /// rollups for whole hours where the query allows (as [`Lake::spend`]).
    pub async fn cache_savings(
        &self,
        scope: &Scope,
        q: &SpendQuery,
    ) -> Result<SpendResult, LakeError> {
        let aggregates = super::hourly::savings_aggregates();
        match self.spend_by_hour(scope, q, aggregates).await? {
            Some(df) => self.finish_savings(df, q).await,
            None => self.cache_savings_raw(scope, q).await,
        }
    }

    /// [`Lake::cache_savings`] from raw events only.
    pub async fn cache_savings_raw(
        &self,
        scope: &Scope,
        q: &SpendQuery,
    ) -> Result<SpendResult, LakeError> {
        let groups: Vec<Expr> = q.group_by.iter().map(GroupBy::expr).collect();
        let aggregates = vec![
            count(lit(1i64)).alias("requests"),
            sum(col("cache_read_tokens")).alias("cache_read_tokens"),
            sum(col("input_tokens")).alias("input_tokens"),
            sum(spend_of("cost_cache_read_usd")).alias("cache_read_usd"),
            sum(spend_of("cost_cache_savings_usd")).alias("savings_usd"),
            sum(value_of("cost_cache_savings_usd")).alias("subscription_savings_value_usd"),
        ];
        let df =
            filtered(self.events(scope).await?, q.filter.exprs())?.aggregate(groups, aggregates)?;
        self.finish_savings(df, q).await
    }

    /// Orders, caps and encodes aggregated savings rows, adding what the
    /// reads would have cost at full price.
    async fn finish_savings(
        &self,
        df: DataFrame,
        q: &SpendQuery,
    ) -> Result<SpendResult, LakeError> {
        let df = df
            .sort(vec![col("savings_usd").sort(false, false)])?
            .limit(0, Some(q.limit + 1))?;
        let fields = [
            "requests",
            "cache_read_tokens",
            "input_tokens",
            "cache_read_usd",
            "savings_usd",
            "subscription_savings_value_usd",
        ];
        let mut result = self.finish_rows(df, q.limit, &fields).await?;
        // Full price is what the reads would have cost as plain input.
        for row in &mut result.data {
            let usd = |k: &str| {
                row[k]
                    .as_str()
                    .and_then(|v| v.parse::<rust_decimal::Decimal>().ok())
                    .unwrap_or_default()
            };
            let full = usd("cache_read_usd") + usd("savings_usd");
            row["full_price_usd"] = serde_json::Value::from(full.to_string());
        }
        Ok(result)
    }

    /// Collects at most `limit` rows as JSON with zero-filled sums.
    async fn finish_rows(
        &self,
        df: DataFrame,
        limit: usize,
        sums: &[&str],
    ) -> Result<SpendResult, LakeError> {
        let batches = collect(df, None).await?;
        let mut rows = rows_as_json(&batches)?;
        let truncated = rows.len() > limit;
        rows.truncate(limit);
        let data = rows
            .into_iter()
            .map(|mut row| {
                fill_zeros(&mut row, sums);
                serde_json::Value::Object(row)
            })
            .collect();
        Ok(SpendResult { data, truncated })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_parse_including_metadata_keys() {
        assert_eq!(GroupBy::parse("team"), Some(GroupBy::Team));
        assert_eq!(GroupBy::parse("agent"), Some(GroupBy::Agent));
        assert_eq!(
            GroupBy::parse("metadata.repo"),
            Some(GroupBy::Metadata("repo".into()))
        );
        assert_eq!(GroupBy::parse("metadata."), None);
        assert_eq!(GroupBy::parse("trace"), None);
    }
}
