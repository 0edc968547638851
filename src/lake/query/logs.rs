//! Log queries: filtered, sorted pages of events, one event, one trace.

use std::str::FromStr;

use base64::Engine;
use chrono::{DateTime, Utc};
use datafusion::functions_nested::expr_fn::{array_element, map_extract};
use datafusion::prelude::*;
use rust_decimal::Decimal;
use serde::Serialize;

use super::{Lake, LakeError, Scope, collect, filtered, rows_as_json, time_range};

/// Filters of a log query; every one present must match.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub trace_id: Option<String>,
    pub session_id: Option<String>,
    pub team: Option<String>,
    pub user: Option<String>,
    pub key_id: Option<String>,
    /// Matches the model asked for or the model served.
    pub model: Option<String>,
    pub provider: Option<String>,
    pub status: Option<u16>,
    /// `metadata[key] = value` for each pair.
    pub metadata: Vec<(String, String)>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl LogFilter {
    /// The filter as DataFusion predicates.
    pub(super) fn exprs(&self) -> Vec<Expr> {
        let mut out = Vec::new();
        let mut eq = |column: &str, v: &Option<String>| {
            if let Some(v) = v {
                out.push(col(column).eq(lit(v.clone())));
            }
        };
        eq("trace_id", &self.trace_id);
        eq("session_id", &self.session_id);
        eq("team", &self.team);
        eq("user", &self.user);
        eq("key_id", &self.key_id);
        eq("provider", &self.provider);
        if let Some(m) = &self.model {
            out.push(
                col("model_requested")
                    .eq(lit(m.clone()))
                    .or(col("model_served").eq(lit(m.clone()))),
            );
        }
        if let Some(s) = self.status {
            out.push(col("status").eq(lit(datafusion::scalar::ScalarValue::UInt16(Some(s)))));
        }
        for (k, v) in &self.metadata {
            out.push(metadata_value(k).eq(lit(v.clone())));
        }
        out.extend(time_range(self.from.as_ref(), self.to.as_ref()));
        out
    }
}

/// `metadata[key]` (null when the event has no such key).
pub(super) fn metadata_value(key: &str) -> Expr {
    array_element(map_extract(col("metadata"), lit(key.to_owned())), lit(1i64))
}

/// What a page of events is ordered by; ties are broken by event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    StartedAt,
    LatencyMs,
    CostUsd,
    TotalTokens,
}

impl SortKey {
    /// Every key by its API name.
    pub const ALL: [(&'static str, SortKey); 4] = [
        ("started_at", SortKey::StartedAt),
        ("latency_ms", SortKey::LatencyMs),
        ("cost_usd", SortKey::CostUsd),
        ("total_tokens", SortKey::TotalTokens),
    ];

    fn name(self) -> &'static str {
        SortKey::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .unwrap_or("started_at")
    }

    /// The sort value as a float: one type for every key keeps the cursor
    /// simple, and pages stay consistent because the order and the cursor
    /// comparison use the very same expression.
    fn expr(self) -> Expr {
        let value = match self {
            SortKey::StartedAt => cast(col("started_at"), arrow::datatypes::DataType::Int64),
            SortKey::LatencyMs => col("latency_ms"),
            SortKey::CostUsd => coalesce(vec![
                cast(col("cost_usd"), arrow::datatypes::DataType::Float64),
                lit(0f64),
            ]),
            SortKey::TotalTokens => {
                col("input_tokens")
                    + col("output_tokens")
                    + col("cache_creation_5m_tokens")
                    + col("cache_creation_1h_tokens")
                    + col("cache_read_tokens")
            }
        };
        cast(value, arrow::datatypes::DataType::Float64)
    }
}

/// Where the previous page ended: the sort it belongs to and its last
/// row's sort value and event id.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub key: SortKey,
    pub descending: bool,
    pub value: f64,
    pub event_id: String,
}

impl Cursor {
    /// The opaque text form handed to clients.
    pub fn encode(&self) -> String {
        let dir = if self.descending { "d" } else { "a" };
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
            "{}|{dir}|{}|{}",
            self.key.name(),
            self.value,
            self.event_id
        ))
    }

    /// Parses what [`Cursor::encode`] produced.
    pub fn decode(text: &str) -> Option<Cursor> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let mut parts = raw.splitn(4, '|');
        let name = parts.next()?;
        let key = SortKey::ALL.iter().find(|(n, _)| *n == name)?.1;
        let descending = match parts.next()? {
            "d" => true,
            "a" => false,
            _ => return None,
        };
        Some(Cursor {
            key,
            descending,
            // NaN or infinity would compare with nothing: not a position.
            value: parts.next()?.parse().ok().filter(|v: &f64| v.is_finite())?,
            event_id: parts.next()?.to_owned(),
        })
    }
}

/// A validated log query.
#[derive(Debug, Clone)]
pub struct LogQuery {
    pub filter: LogFilter,
    pub sort: SortKey,
    pub descending: bool,
    pub limit: usize,
    pub cursor: Option<Cursor>,
}

/// One page of events, as JSON objects shaped like `LlmEvent`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogPage {
    pub data: Vec<serde_json::Value>,
    pub next_cursor: Option<String>,
}

/// Every event of one trace in order, with what they add up to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TraceView {
    pub trace_id: String,
    pub totals: TraceTotals,
    /// The trace's events by Claude Code agent, subagents under their
    /// parents, with spend per agent.
    pub agents: super::sessions::AgentNode,
    pub events: Vec<serde_json::Value>,
}

/// Sums over a trace's events.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct TraceTotals {
    pub requests: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_5m_tokens: u64,
    pub cache_creation_1h_tokens: u64,
    pub cache_read_tokens: u64,
    pub total_tokens: u64,
    /// Spend: list price of API-billed events.
    #[schema(value_type = String)]
    pub spend_usd: Decimal,
    /// List price of subscription-billed events (not spend).
    #[schema(value_type = String)]
    pub subscription_value_usd: Decimal,
    pub unpriced_requests: u64,
    /// Sum of the events' own latencies.
    pub latency_ms: u64,
    /// From the first start to the last end.
    pub wall_ms: i64,
    pub first_started_at: Option<String>,
    pub last_ended_at: Option<String>,
}

impl Lake {
    /// Every event `scope` may see whose `column` equals `value`, oldest
    /// first, as API rows: what a trace and a session view are built from.
    ///
    /// The trace and session IDs are the client's to choose, so one can
    /// hold any number of events: at most `max_events` are read (one more
    /// says there are more), and a view past it is refused by name.
    pub(super) async fn events_where(
        &self,
        scope: &Scope,
        column: &'static str,
        value: &str,
        max_events: usize,
    ) -> Result<Vec<serde_json::Value>, LakeError> {
        let df = self
            .events(scope)
            .await?
            .filter(col(column).eq(lit(value)))?
            .sort(vec![
                col("started_at").sort(true, false),
                col("event_id").sort(true, false),
            ])?
            .limit(0, Some(max_events.saturating_add(1)))?;
        let batches = collect(df, None).await?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if rows > max_events {
            return Err(LakeError::TooManyEvents {
                column,
                value: value.to_owned(),
                limit: max_events,
            });
        }
        Ok(rows_as_json(&batches)?.into_iter().map(shape_row).collect())
    }

    /// Events matching the query, in its order, after its cursor.
    pub async fn logs(&self, scope: &Scope, q: &LogQuery) -> Result<LogPage, LakeError> {
        let mut predicates = q.filter.exprs();
        let sort_value = q.sort.expr();
        if let Some(c) = &q.cursor {
            let (v, id) = (lit(c.value), lit(c.event_id.clone()));
            predicates.push(if q.descending {
                sort_value
                    .clone()
                    .lt(v.clone())
                    .or(sort_value.clone().eq(v).and(col("event_id").lt(id)))
            } else {
                sort_value
                    .clone()
                    .gt(v.clone())
                    .or(sort_value.clone().eq(v).and(col("event_id").gt(id)))
            });
        }
        let asc = !q.descending;
        let df = filtered(self.events(scope).await?, predicates)?
            .with_column("sort_value", sort_value)?
            .sort(vec![
                col("sort_value").sort(asc, false),
                col("event_id").sort(asc, false),
            ])?
            .limit(0, Some(q.limit + 1))?;
        let batches = collect(df, None).await?;
        let mut rows = rows_as_json(&batches)?;
        let more = rows.len() > q.limit;
        rows.truncate(q.limit);
        let next_cursor = more
            .then(|| rows.last())
            .flatten()
            .and_then(|last| {
                Some(Cursor {
                    key: q.sort,
                    descending: q.descending,
                    value: last.get("sort_value")?.as_f64()?,
                    event_id: last.get("event_id")?.as_str()?.to_owned(),
                })
            })
            .map(|c| c.encode());
        Ok(LogPage {
            data: rows.into_iter().map(shape_row).collect(),
            next_cursor,
        })
    }

    /// One event by id, if `scope` may see it.
    pub async fn event(
        &self,
        scope: &Scope,
        event_id: &str,
    ) -> Result<Option<serde_json::Value>, LakeError> {
        let df = self
            .events(scope)
            .await?
            .filter(col("event_id").eq(lit(event_id)))?
            .limit(0, Some(1))?;
        let batches = collect(df, None).await?;
        Ok(rows_as_json(&batches)?.into_iter().next().map(shape_row))
    }

    /// Every event of a trace, oldest first, with totals; `None` when the
    /// trace has no events `scope` may see.
    pub async fn trace(
        &self,
        scope: &Scope,
        trace_id: &str,
        max_events: usize,
    ) -> Result<Option<TraceView>, LakeError> {
        let events = self
            .events_where(scope, "trace_id", trace_id, max_events)
            .await?;
        if events.is_empty() {
            return Ok(None);
        }
        Ok(Some(TraceView {
            trace_id: trace_id.to_owned(),
            totals: totals(&events),
            agents: super::sessions::agent_tree(&events),
            events,
        }))
    }
}

/// Adds up a trace's events.
pub(super) fn totals(events: &[serde_json::Value]) -> TraceTotals {
    let mut t = TraceTotals::default();
    let mut first: Option<DateTime<Utc>> = None;
    let mut last: Option<DateTime<Utc>> = None;
    for e in events {
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        let usage = &e["usage"];
        t.requests += 1;
        if n(&e["status"]) >= 400 {
            t.errors += 1;
        }
        t.input_tokens += n(&usage["input_tokens"]);
        t.output_tokens += n(&usage["output_tokens"]);
        t.cache_creation_5m_tokens += n(&usage["cache_creation_5m_tokens"]);
        t.cache_creation_1h_tokens += n(&usage["cache_creation_1h_tokens"]);
        t.cache_read_tokens += n(&usage["cache_read_tokens"]);
        t.latency_ms += n(&e["latency_ms"]);
        match e["cost_usd"]
            .as_str()
            .and_then(|c| Decimal::from_str(c).ok())
        {
            Some(c) if e["billed_by"] == "subscription" => t.subscription_value_usd += c,
            Some(c) => t.spend_usd += c,
            None => t.unpriced_requests += 1,
        }
        let time = |k: &str| e[k].as_str().and_then(parse_time);
        if let Some(s) = time("started_at") {
            first = Some(first.map_or(s, |f| f.min(s)));
        }
        if let Some(s) = time("ended_at") {
            last = Some(last.map_or(s, |l| l.max(s)));
        }
    }
    t.total_tokens = t.input_tokens
        + t.output_tokens
        + t.cache_creation_5m_tokens
        + t.cache_creation_1h_tokens
        + t.cache_read_tokens;
    if let (Some(f), Some(l)) = (first, last) {
        t.wall_ms = (l - f).num_milliseconds();
    }
    t.first_started_at = first.map(|f| f.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    t.last_ended_at = last.map(|l| l.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    t
}

/// A timestamp as the JSON writer prints it (RFC 3339, or without zone).
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|n| n.and_utc())
        })
}

/// The usage columns of the lake, gathered under `usage` in event rows.
pub(super) const USAGE_COLUMNS: &[&str] = &[
    "input_tokens",
    "output_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
    "cache_read_tokens",
    "web_search_requests",
    "web_fetch_requests",
];

/// A row shaped like `LlmEvent`: usage classes gathered under `usage`,
/// query-only and storage-only columns (`sort_value`, `day`) left out.
pub(super) fn shape_row(mut row: serde_json::Map<String, serde_json::Value>) -> serde_json::Value {
    let mut usage = serde_json::Map::new();
    for c in USAGE_COLUMNS {
        if let Some(v) = row.remove(*c) {
            usage.insert((*c).to_owned(), v);
        }
    }
    row.insert("usage".into(), serde_json::Value::Object(usage));
    row.remove("day");
    row.remove("sort_value");
    serde_json::Value::Object(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let c = Cursor {
            key: SortKey::CostUsd,
            descending: false,
            value: 0.000123,
            event_id: "0194-abc".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("not a cursor"), None);
    }

    #[test]
    fn trace_totals_keep_subscription_value_apart_from_spend() {
        let events = vec![
            serde_json::json!({"status": 200, "cost_usd": "0.010000000000", "billed_by": "api",
                "latency_ms": 10, "usage": {"input_tokens": 5, "output_tokens": 1},
                "started_at": "2026-11-22T10:00:00.000Z", "ended_at": "2026-11-22T10:00:01.000Z"}),
            serde_json::json!({"status": 200, "cost_usd": "0.020000000000", "billed_by": "subscription",
                "latency_ms": 20, "usage": {"cache_read_tokens": 7},
                "started_at": "2026-11-22T10:00:02.000Z", "ended_at": "2026-11-22T10:00:05.500Z"}),
            serde_json::json!({"status": 529, "latency_ms": 3, "usage": {},
                "started_at": "2026-11-22T10:00:03.000Z", "ended_at": "2026-11-22T10:00:03.100Z"}),
        ];
        let t = totals(&events);
        assert_eq!((t.requests, t.errors, t.unpriced_requests), (3, 1, 1));
        assert_eq!(t.spend_usd, Decimal::new(1, 2));
        assert_eq!(t.subscription_value_usd, Decimal::new(2, 2));
        assert_eq!((t.total_tokens, t.latency_ms, t.wall_ms), (13, 33, 5500));
    }
}
