//! Spend from hourly rollups (`events_hourly`, see [`crate::lake::rollup`]).
//!
//! A spend query over `[from, to)` is split at whole hours: the hours in
//! between are read from rollups, the minutes before the first whole hour
//! and after the last from raw events. Unless the query groups by hour,
//! the whole days among those hours are read from the daily rollups and
//! only the hours around them from hourly ones. Raw rows are shaped like
//! rollup rows (one request each) and the two are summed together, so
//! every group gets the same sums, of the same types, as from raw events
//! alone.
//!
//! Only what rollups can answer goes this way: groupings and filters by
//! team, user, key, model, provider, billed_by, day and hour. A filter by
//! trace, session, status or metadata, or a grouping by session, agent or
//! metadata, reads raw events. So does a query whose hours include a raw
//! file that has no rollup yet (the moment between a file and its rollup,
//! or a crash between the two until the sink or compaction repairs it).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use arrow::datatypes::{DataType, TimeUnit};
use chrono::{DateTime, NaiveDate, Utc};
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::prelude::*;

use super::spend::{COST_LINES, errors, provisional, spend_of, total_tokens, unpriced, value_of};
use super::{GroupBy, Lake, LakeError, Scope, SpendQuery, filtered, ts_lit};
use crate::lake::rollup::{DAY_MS, HOUR_MS, TOKEN_COLUMNS, USD_COLUMNS};

/// How a time range splits: whole hours `[hours.0, hours.1)` from
/// rollups (an open end is unbounded), the `edges` from raw events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourSplit {
    pub hours: (Option<i64>, Option<i64>),
    pub edges: Vec<(i64, i64)>,
}

/// Splits `[from, to)` (milliseconds) at whole hours; `None` when it
/// holds no whole hour.
pub fn split(from: Option<i64>, to: Option<i64>) -> Option<HourSplit> {
    let h0 = from.map(|f| (f + HOUR_MS - 1).div_euclid(HOUR_MS) * HOUR_MS);
    let h1 = to.map(|t| t.div_euclid(HOUR_MS) * HOUR_MS);
    if let (Some(a), Some(b)) = (h0, h1)
        && a >= b
    {
        return None;
    }
    let mut edges = Vec::new();
    if let (Some(f), Some(a)) = (from, h0)
        && f < a
    {
        edges.push((f, a));
    }
    if let (Some(t), Some(b)) = (to, h1)
        && b < t
    {
        edges.push((b, t));
    }
    Some(HourSplit {
        hours: (h0, h1),
        edges,
    })
}

/// A time range in milliseconds, either end open.
type Range = (Option<i64>, Option<i64>);

/// Which rollup table answers which part of whole hours `hours`: with
/// `days` allowed, the whole days among them from `events_daily` and the
/// hours before and after from `events_hourly`; else all hourly.
fn rollup_reads(hours: Range, days: bool) -> Vec<(&'static str, Range)> {
    let (h0, h1) = hours;
    let d0 = h0.map(|h| (h + DAY_MS - 1).div_euclid(DAY_MS) * DAY_MS);
    let d1 = h1.map(|h| h.div_euclid(DAY_MS) * DAY_MS);
    let no_whole_day = matches!((d0, d1), (Some(a), Some(b)) if a >= b);
    if !days || no_whole_day {
        return vec![("events_hourly", hours)];
    }
    let mut out = Vec::new();
    if let (Some(h), Some(d)) = (h0, d0)
        && h < d
    {
        out.push(("events_hourly", (Some(h), Some(d))));
    }
    out.push((super::DAILY_TABLE, (d0, d1)));
    if let (Some(d), Some(h)) = (d1, h1)
        && d < h
    {
        out.push(("events_hourly", (Some(d), Some(h))));
    }
    out
}

/// The days whose raw files rollups do not cover: without an hourly
/// rollup (spend over them reads raw events) and with an hourly but
/// without a daily one (spend over them reads hourly rollups).
#[derive(Debug, Clone, Default)]
struct DayGaps {
    no_hourly: Vec<NaiveDate>,
    no_daily: Vec<NaiveDate>,
}

impl DayGaps {
    /// The days of the lake's rollup gaps.
    fn of(gaps: &crate::lake::rollup::Gaps) -> DayGaps {
        let days = |files: &[crate::lake::files::ListedFile]| {
            let mut days: Vec<NaiveDate> = files
                .iter()
                .filter_map(|f| crate::lake::rollup::day_of_path(&f.path))
                .collect();
            days.sort_unstable();
            days.dedup();
            days
        };
        DayGaps {
            no_hourly: days(&gaps.no_hourly),
            no_daily: days(&gaps.no_daily),
        }
    }
}

/// The lake's [`DayGaps`], remembered for the lake's listing TTL (a
/// bucket) or not at all (local disk, where listing is cheap and a stale
/// answer would only cost speed).
pub struct UnrolledDays {
    ttl: Option<Duration>,
    seen: Mutex<Option<(Instant, DayGaps)>>,
}

impl UnrolledDays {
    /// Remembers answers for `ttl` (`None`: never).
    pub fn new(ttl: Option<Duration>) -> UnrolledDays {
        UnrolledDays {
            ttl,
            seen: Mutex::new(None),
        }
    }

    /// A remembered answer still fresh, if any.
    fn fresh(&self) -> Option<DayGaps> {
        let ttl = self.ttl?;
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.as_ref()
            .filter(|(at, _)| at.elapsed() < ttl)
            .map(|(_, gaps)| gaps.clone())
    }

    /// Remembers an answer (when answers are kept at all).
    fn remember(&self, gaps: &DayGaps) {
        if self.ttl.is_some() {
            *self.seen.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((Instant::now(), gaps.clone()));
        }
    }
}

/// Which rollups can answer a split's whole hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rolled {
    /// None: a raw file of their days has no hourly rollup.
    No,
    /// Hourly ones: a raw file of their days has no daily rollup.
    HourlyOnly,
    /// Daily and hourly ones.
    Both,
}

/// Whether rollups can answer the grouping and filters of `q`.
fn answerable(q: &SpendQuery) -> bool {
    let f = &q.filter;
    let by_row = f.trace_id.is_some() || f.session_id.is_some() || f.status.is_some();
    !by_row && f.metadata.is_empty() && q.group_by.iter().all(|g| group_expr(g).is_some())
}

/// A grouping over rollup-shaped rows (`None`: rollups lack it).
fn group_expr(g: &GroupBy) -> Option<Expr> {
    let e = match g {
        GroupBy::Team => col("team"),
        GroupBy::User => col("user"),
        GroupBy::Key => col("key_id"),
        GroupBy::Model => coalesce(vec![col("model_served"), col("model_requested")]),
        GroupBy::Provider => col("provider"),
        GroupBy::Day => col("day"),
        GroupBy::Hour => col("hour"),
        GroupBy::BilledBy => col("billed_by"),
        GroupBy::Session | GroupBy::Agent | GroupBy::Metadata(_) => return None,
    };
    Some(e.alias(g.name()))
}

/// The UTC day of a millisecond timestamp, as the `day` partition names it.
fn day_of(ms: i64) -> String {
    date(ms).to_string()
}

/// The UTC date of a millisecond timestamp.
fn date(ms: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .date_naive()
}

/// A millisecond timestamp as a literal comparable with timestamps.
fn ms_lit(ms: i64) -> Expr {
    ts_lit(&DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default())
}

/// Predicates on `column` (and the `day` partition) for `[from, to)`.
fn between(column: &str, from: Option<i64>, to: Option<i64>) -> Vec<Expr> {
    let mut out = Vec::new();
    if let Some(f) = from {
        out.push(col(column).gt_eq(ms_lit(f)));
        out.push(col("day").gt_eq(lit(day_of(f))));
    }
    if let Some(t) = to {
        out.push(col(column).lt(ms_lit(t)));
        out.push(col("day").lt_eq(lit(day_of(t - 1))));
    }
    out
}

/// The filters of `q` other than time, which apply alike to raw and
/// rollup rows (the model filter matches requested or served model).
fn non_time_filters(q: &SpendQuery) -> Vec<Expr> {
    let mut f = q.filter.clone();
    f.from = None;
    f.to = None;
    f.exprs()
}

/// The columns both shapes are summed from, in one order.
fn shape_columns() -> Vec<&'static str> {
    let mut out = vec![
        "hour",
        "day",
        "team",
        "user",
        "key_id",
        "model_requested",
        "model_served",
        "provider",
        "billed_by",
        "requests",
        "errors",
    ];
    out.extend(TOKEN_COLUMNS);
    out.extend(USD_COLUMNS);
    out.extend(["unpriced_requests", "provisional_requests"]);
    out
}

/// Raw event rows shaped like rollup rows: one request each.
fn raw_as_rollup(df: DataFrame) -> Result<DataFrame, LakeError> {
    let hour_type = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let mut exprs = vec![
        cast(date_trunc(lit("hour"), col("started_at")), hour_type).alias("hour"),
        col("day"),
        col("team"),
        col("user"),
        col("key_id"),
        col("model_requested"),
        col("model_served"),
        col("provider"),
        coalesce(vec![col("billed_by"), lit("api")]).alias("billed_by"),
        lit(1i64).alias("requests"),
        errors().alias("errors"),
    ];
    exprs.extend(TOKEN_COLUMNS.iter().map(|c| col(*c)));
    exprs.extend(USD_COLUMNS.iter().map(|c| col(*c)));
    exprs.push(unpriced().alias("unpriced_requests"));
    exprs.push(provisional().alias("provisional_requests"));
    Ok(df.select(exprs)?)
}

/// The cache-savings aggregates over rollup-shaped rows.
pub(super) fn savings_aggregates() -> Vec<Expr> {
    vec![
        sum(col("requests")).alias("requests"),
        sum(col("cache_read_tokens")).alias("cache_read_tokens"),
        sum(col("input_tokens")).alias("input_tokens"),
        sum(spend_of("cost_cache_read_usd")).alias("cache_read_usd"),
        sum(spend_of("cost_cache_savings_usd")).alias("savings_usd"),
        sum(value_of("cost_cache_savings_usd")).alias("subscription_savings_value_usd"),
    ]
}

/// The spend aggregates over rollup-shaped rows: the raw path's sums,
/// summed once more.
pub(super) fn spend_aggregates() -> Vec<Expr> {
    let mut out = vec![
        sum(col("requests")).alias("requests"),
        sum(col("errors")).alias("errors"),
    ];
    for c in TOKEN_COLUMNS {
        out.push(sum(col(c)).alias(c));
    }
    out.push(sum(total_tokens()).alias("total_tokens"));
    out.push(sum(spend_of("cost_usd")).alias("spend_usd"));
    for (column, name) in COST_LINES {
        out.push(sum(spend_of(column)).alias(*name));
    }
    out.push(sum(value_of("cost_usd")).alias("subscription_value_usd"));
    out.push(sum(spend_of("cost_cache_savings_usd")).alias("cache_savings_usd"));
    out.push(sum(col("unpriced_requests")).alias("unpriced_requests"));
    out.push(sum(col("provisional_requests")).alias("provisional_requests"));
    out
}

impl Lake {
    /// `aggregates` (over rollup-shaped rows) of `q`'s groups from rollups
    /// and raw edges, or `None` when rollups cannot answer it (see the
    /// module docs).
    pub(super) async fn spend_by_hour(
        &self,
        scope: &Scope,
        q: &SpendQuery,
        aggregates: Vec<Expr>,
    ) -> Result<Option<DataFrame>, LakeError> {
        let millis = |t: &Option<DateTime<Utc>>| t.map(|t| t.timestamp_millis());
        let Some(split) = split(millis(&q.filter.from), millis(&q.filter.to)) else {
            return Ok(None);
        };
        if !answerable(q) {
            return Ok(None);
        }
        let days_allowed = match self.rolled_up(&split).await? {
            Rolled::No => return Ok(None),
            Rolled::HourlyOnly => false,
            Rolled::Both => true,
        };
        let mut preds = non_time_filters(q);
        preds.extend(scope.predicate());
        let by_hour = q.group_by.contains(&GroupBy::Hour);
        let mut df: Option<DataFrame> = None;
        for (table, (a, b)) in rollup_reads(split.hours, days_allowed && !by_hour) {
            let mut hours = preds.clone();
            hours.extend(between("hour", a, b));
            let part = filtered(self.context()?.table(table).await?, hours)?
                .select(shape_columns().into_iter().map(col).collect::<Vec<Expr>>())?;
            df = Some(match df {
                Some(df) => df.union(part)?,
                None => part,
            });
        }
        let Some(mut df) = df else {
            return Ok(None);
        };
        for (a, b) in &split.edges {
            let mut edge = preds.clone();
            edge.extend(between("started_at", Some(*a), Some(*b)));
            let raw = filtered(self.context()?.table("events").await?, edge)?;
            df = df.union(raw_as_rollup(raw)?)?;
        }
        let groups = q.group_by.iter().filter_map(group_expr).collect();
        Ok(Some(df.aggregate(groups, aggregates)?))
    }

    /// Which rollups cover every raw file of the days the split's hours
    /// touch.
    async fn rolled_up(&self, split: &HourSplit) -> Result<Rolled, LakeError> {
        let gaps = match self.unrolled.fresh() {
            Some(gaps) => gaps,
            None => {
                let layout = self.layout.clone();
                let gaps = tokio::task::spawn_blocking(move || crate::lake::rollup::gaps(&layout))
                    .await
                    .map_err(|e| LakeError::Worker(e.to_string()))??;
                let gaps = DayGaps::of(&gaps);
                self.unrolled.remember(&gaps);
                gaps
            }
        };
        let (lo, hi) = split.hours;
        let touched = |days: &[NaiveDate]| {
            days.iter().any(|d| {
                lo.is_none_or(|lo| *d >= date(lo)) && hi.is_none_or(|hi| *d <= date(hi - 1))
            })
        };
        Ok(if touched(&gaps.no_hourly) {
            Rolled::No
        } else if touched(&gaps.no_daily) {
            Rolled::HourlyOnly
        } else {
            Rolled::Both
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_splits_into_whole_hours_and_raw_edges() {
        let h = HOUR_MS;
        assert_eq!(
            split(Some(h + 5), Some(4 * h + 7)),
            Some(HourSplit {
                hours: (Some(2 * h), Some(4 * h)),
                edges: vec![(h + 5, 2 * h), (4 * h, 4 * h + 7)],
            })
        );
        assert_eq!(
            split(Some(h), Some(3 * h)),
            Some(HourSplit {
                hours: (Some(h), Some(3 * h)),
                edges: vec![],
            })
        );
        assert_eq!(split(Some(h + 1), Some(2 * h - 1)), None, "no whole hour");
        assert_eq!(split(Some(h + 1), Some(2 * h)), None);
        assert_eq!(
            split(None, Some(2 * h + 1)),
            Some(HourSplit {
                hours: (None, Some(2 * h)),
                edges: vec![(2 * h, 2 * h + 1)],
            })
        );
        assert_eq!(
            split(None, None),
            Some(HourSplit {
                hours: (None, None),
                edges: vec![],
            })
        );
    }

    #[test]
    fn whole_days_come_from_daily_rollups_and_the_hours_around_them_from_hourly() {
        let (h, d) = (HOUR_MS, DAY_MS);
        let daily = crate::lake::query::DAILY_TABLE;
        assert_eq!(
            rollup_reads((Some(5 * h), Some(2 * d + 3 * h)), true),
            vec![
                ("events_hourly", (Some(5 * h), Some(d))),
                (daily, (Some(d), Some(2 * d))),
                ("events_hourly", (Some(2 * d), Some(2 * d + 3 * h))),
            ]
        );
        assert_eq!(
            rollup_reads((Some(d), Some(3 * d)), true),
            vec![(daily, (Some(d), Some(3 * d)))]
        );
        assert_eq!(
            rollup_reads((None, Some(d + h)), true),
            vec![
                (daily, (None, Some(d))),
                ("events_hourly", (Some(d), Some(d + h)))
            ]
        );
        assert_eq!(
            rollup_reads((None, None), true),
            vec![(daily, (None, None))]
        );
        let within_a_day = (Some(d + h), Some(2 * d - h));
        assert_eq!(
            rollup_reads(within_a_day, true),
            vec![("events_hourly", within_a_day)]
        );
        let across_midnight = (Some(d - h), Some(d + h));
        assert_eq!(
            rollup_reads(across_midnight, true),
            vec![("events_hourly", across_midnight)],
            "no whole day"
        );
        assert_eq!(
            rollup_reads((Some(d), Some(3 * d)), false),
            vec![("events_hourly", (Some(d), Some(3 * d)))],
            "grouped by hour"
        );
    }
}

/// Rollups against raw events on a random lake: every answer the same to
/// the last decimal place, before and after compaction.
#[cfg(test)]
mod same_answers {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rust_decimal::Decimal;

    use super::*;
    use crate::event::tests::sample_event;
    use crate::event::{BilledBy, BusPosition, Cost, CostLines, LlmEvent, to_record_batch};
    use crate::lake::files::{LakeLayout, WriteMode};
    use crate::lake::query::LogFilter;

    const START: &str = "2026-11-20T00:00:00Z";
    const SPAN_MS: i64 = 3 * 24 * HOUR_MS;

    fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
        from[rng.gen_range(0..from.len())]
    }

    fn usd(rng: &mut StdRng) -> Decimal {
        Decimal::new(rng.gen_range(0..5_000_000_000_000i64), 12)
    }

    fn start_ms() -> i64 {
        DateTime::parse_from_rfc3339(START)
            .unwrap()
            .timestamp_millis()
    }

    /// One random event somewhere in the three days.
    fn random_event(rng: &mut StdRng) -> LlmEvent {
        let mut e = sample_event();
        let at = start_ms() + rng.gen_range(0..SPAN_MS);
        e.started_at = DateTime::<Utc>::from_timestamp_millis(at).unwrap();
        e.team = pick(rng, &["eng", "ops", "data"]).into();
        e.user = pick(rng, &["alice", "bob", "carol", "dave"]).into();
        e.key_id = pick(rng, &["k1", "k2"]).into();
        e.provider = pick(rng, &["anthropic", "bedrock"]).into();
        e.model_requested = Some(pick(rng, &["sonnet", "haiku", "opus"]).into());
        e.model_served = match rng.gen_range(0..3) {
            0 => None,
            1 => e.model_requested.clone(),
            _ => Some(pick(rng, &["sonnet-4-5", "haiku-4-5"]).into()),
        };
        e.status = [200, 200, 200, 429, 500][rng.gen_range(0..5)];
        e.billed_by = if rng.gen_bool(0.3) {
            BilledBy::Subscription
        } else {
            BilledBy::Api
        };
        e.usage.input_tokens = rng.gen_range(0..100_000);
        e.usage.output_tokens = rng.gen_range(0..10_000);
        e.usage.cache_read_tokens = rng.gen_range(0..200_000);
        e.usage.cache_creation_1h_tokens = rng.gen_range(0..1_000);
        e.usage.web_search_requests = rng.gen_range(0..3);
        e.cost = (!rng.gen_bool(0.1)).then(|| Cost {
            price_table_version: "v1".into(),
            lines: Some(CostLines {
                input_usd: usd(rng),
                output_usd: usd(rng),
                cache_read_usd: usd(rng),
                cache_write_1h_usd: usd(rng),
                web_search_usd: usd(rng),
                total_usd: usd(rng),
                cache_savings_usd: usd(rng),
                ..CostLines::default()
            }),
            family: None,
            tier: None,
            basis: rng.gen_bool(0.2).then(|| "provisional".into()),
            notes: vec![],
            source: None,
        });
        e
    }

    /// Writes `events` as the sink would: files of up to 40 rows of one
    /// day and partition, each with its rollup.
    fn write_lake(layout: &LakeLayout, mut events: Vec<LlmEvent>) {
        events.sort_by_key(|e| e.started_at);
        let mut offset = 0u64;
        for day_events in
            events.chunk_by(|a, b| a.started_at.date_naive() == b.started_at.date_naive())
        {
            for chunk in day_events.chunks(40) {
                let rows: Vec<_> = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        let pos = BusPosition {
                            partition: 0,
                            offset: offset + i as u64,
                        };
                        (pos, e)
                    })
                    .collect();
                let batch = to_record_batch(&rows).unwrap();
                let last = offset + chunk.len() as u64 - 1;
                let day = chunk[0].started_at.date_naive();
                let path = layout.file_path(day, 0, offset, last);
                layout.write(&path, &batch, WriteMode::New).unwrap();
                crate::lake::rollup::write_for(layout, &path, &[batch], WriteMode::New).unwrap();
                offset = last + 1;
            }
        }
    }

    /// A random query: range (either end may be open), groups, filters.
    fn random_query(rng: &mut StdRng) -> (Scope, SpendQuery) {
        let all = [
            GroupBy::Team,
            GroupBy::User,
            GroupBy::Key,
            GroupBy::Model,
            GroupBy::Provider,
            GroupBy::Day,
            GroupBy::Hour,
            GroupBy::BilledBy,
        ];
        let group_by = all.into_iter().filter(|_| rng.gen_bool(0.3)).collect();
        let mut time = || {
            let at = start_ms() - HOUR_MS + rng.gen_range(0..SPAN_MS + 2 * HOUR_MS);
            rng.gen_bool(0.85)
                .then(|| DateTime::<Utc>::from_timestamp_millis(at).unwrap())
        };
        let (mut from, mut to) = (time(), time());
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            (from, to) = (to, from);
        }
        let mut maybe =
            |values: &[&str], p: f64| rng.gen_bool(p).then(|| pick(rng, values).to_owned());
        let filter = LogFilter {
            team: maybe(&["eng", "ops"], 0.2),
            user: maybe(&["alice", "bob"], 0.2),
            key_id: maybe(&["k1"], 0.1),
            provider: maybe(&["bedrock"], 0.1),
            model: maybe(&["sonnet", "sonnet-4-5", "haiku"], 0.2),
            from,
            to,
            ..LogFilter::default()
        };
        let scope = match maybe(&["eng", "data"], 0.2) {
            Some(team) => Scope::Team(team),
            None => Scope::All,
        };
        let q = SpendQuery {
            group_by,
            filter,
            limit: 10_000,
        };
        (scope, q)
    }

    /// Rows as sorted JSON texts (ties in the order may fall either way).
    fn rows(r: &crate::lake::query::SpendResult) -> Vec<String> {
        let mut out: Vec<String> = r.data.iter().map(|v| v.to_string()).collect();
        out.sort();
        out
    }

    /// Whether `q` reads daily rollups when it reads rollups.
    fn reads_days(q: &SpendQuery) -> bool {
        let millis = |t: &Option<DateTime<Utc>>| t.map(|t| t.timestamp_millis());
        split(millis(&q.filter.from), millis(&q.filter.to)).is_some_and(|s| {
            rollup_reads(s.hours, !q.group_by.contains(&GroupBy::Hour))
                .iter()
                .any(|(table, _)| *table == crate::lake::query::DAILY_TABLE)
        })
    }

    /// Runs `n` random queries both ways; returns how many used rollups
    /// and how many of those daily ones.
    async fn compare(lake: &Lake, rng: &mut StdRng, n: usize) -> (usize, usize) {
        let (mut by_hour, mut by_day) = (0, 0);
        for _ in 0..n {
            let (scope, q) = random_query(rng);
            let aggregates = spend_aggregates();
            if lake
                .spend_by_hour(&scope, &q, aggregates)
                .await
                .unwrap()
                .is_some()
            {
                by_hour += 1;
                by_day += usize::from(reads_days(&q));
            }
            let raw = lake.spend_raw(&scope, &q).await.unwrap();
            let mixed = lake.spend(&scope, &q).await.unwrap();
            assert!(!raw.truncated && !mixed.truncated);
            assert_eq!(rows(&mixed), rows(&raw), "{scope:?} {q:?}");
            let raw = lake.cache_savings_raw(&scope, &q).await.unwrap();
            let mixed = lake.cache_savings(&scope, &q).await.unwrap();
            assert_eq!(rows(&mixed), rows(&raw), "savings: {scope:?} {q:?}");
        }
        (by_hour, by_day)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spend_from_rollups_equals_spend_from_raw_events_before_and_after_compaction() {
        let mut rng = StdRng::seed_from_u64(20);
        let dir = tempfile::tempdir().unwrap();
        let layout = LakeLayout::new(dir.path());
        let events = (0..1500).map(|_| random_event(&mut rng)).collect();
        write_lake(&layout, events);
        let lake = Lake::open(&layout).await.unwrap();
        let (used, days) = compare(&lake, &mut rng, 60).await;
        assert!(used >= 30, "only {used} of 60 queries used rollups");
        assert!(days >= 10, "only {days} of 60 queries used daily rollups");

        let opts = crate::lake::compact::CompactOptions {
            min_files: 2,
            ..Default::default()
        };
        let report = crate::lake::compact::compact(&layout, &opts).unwrap();
        assert!(report.files_merged > 0, "{report:?}");
        assert_eq!(layout.hourly_listing().unwrap().len(), report.files_written);
        assert_eq!(layout.daily_listing().unwrap().len(), report.files_written);
        let (used, days) = compare(&lake, &mut rng, 40).await;
        assert!(used >= 20, "only {used} of 40 queries used rollups");
        assert!(days >= 7, "only {days} of 40 queries used daily rollups");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_raw_file_without_its_rollup_sends_spend_to_raw_events_until_repaired() {
        let mut rng = StdRng::seed_from_u64(7);
        let dir = tempfile::tempdir().unwrap();
        let layout = LakeLayout::new(dir.path());
        write_lake(&layout, (0..200).map(|_| random_event(&mut rng)).collect());
        let lost = layout.hourly_listing().unwrap().remove(0).path;
        std::fs::remove_file(&lost).unwrap();
        let lake = Lake::open(&layout).await.unwrap();
        let q = SpendQuery {
            group_by: vec![GroupBy::Team],
            limit: 100,
            ..SpendQuery::default()
        };
        assert!(
            lake.spend_by_hour(&Scope::All, &q, spend_aggregates())
                .await
                .unwrap()
                .is_none()
        );
        let raw = lake.spend_raw(&Scope::All, &q).await.unwrap();
        assert_eq!(
            rows(&lake.spend(&Scope::All, &q).await.unwrap()),
            rows(&raw)
        );
        assert_eq!(crate::lake::rollup::repair(&layout, &|_| true).unwrap(), 1);
        assert!(
            lake.spend_by_hour(&Scope::All, &q, spend_aggregates())
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            rows(&lake.spend(&Scope::All, &q).await.unwrap()),
            rows(&raw)
        );
    }

    /// A lake written before daily rollups existed (or one whose daily
    /// rollup was lost) answers from hourly rollups, not raw events, and
    /// the same, until repaired.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_raw_file_without_its_daily_rollup_sends_spend_to_hourly_rollups() {
        let mut rng = StdRng::seed_from_u64(11);
        let dir = tempfile::tempdir().unwrap();
        let layout = LakeLayout::new(dir.path());
        write_lake(&layout, (0..300).map(|_| random_event(&mut rng)).collect());
        for f in layout.daily_listing().unwrap().into_iter().step_by(2) {
            std::fs::remove_file(&f.path).unwrap();
        }
        let lake = Lake::open(&layout).await.unwrap();
        let q = SpendQuery {
            group_by: vec![GroupBy::Team, GroupBy::Day],
            limit: 1000,
            ..SpendQuery::default()
        };
        let split = split(None, None).unwrap();
        assert_eq!(lake.rolled_up(&split).await.unwrap(), Rolled::HourlyOnly);
        let raw = lake.spend_raw(&Scope::All, &q).await.unwrap();
        assert_eq!(
            rows(&lake.spend(&Scope::All, &q).await.unwrap()),
            rows(&raw)
        );
        assert!(crate::lake::rollup::repair(&layout, &|_| true).unwrap() > 0);
        assert_eq!(lake.rolled_up(&split).await.unwrap(), Rolled::Both);
        assert_eq!(
            rows(&lake.spend(&Scope::All, &q).await.unwrap()),
            rows(&raw)
        );
    }
}
