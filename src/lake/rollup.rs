//! Hourly rollups: the `events_hourly` table beside `events`.
//!
//! Every raw lake file gets a rollup file of the same name under
//! `events_hourly/day=D/`: its rows summed per hour × team × user × key ×
//! model (requested and served) × provider × billed_by, with requests,
//! errors, every token class and every cost line as exact decimals of the
//! raw rows' type. Because a rollup file holds exactly the rows of the
//! raw file of the same offset range, the guarantees of raw files carry
//! over unchanged:
//!
//! - It is written by the same path (temp file + rename locally, one
//!   complete conditional upload in a bucket), right after its raw file,
//!   so a rewrite after a crash is the same file.
//! - Compaction writes the merged rollup beside the merged raw file; the
//!   lake store hides rollups whose range another covers, exactly as for
//!   raw files, so no hour is counted twice.
//! - A raw file whose rollup is missing (a crash between the two writes)
//!   is found by [`gaps`]: compaction writes the rollup ([`repair`],
//!   which also backfills a lake written before rollups), and the spend
//!   query answers from raw events until then.
//!
//! The sink writes rollups rather than compaction so that they exist as
//! soon as the events do: a spend query then never has to read raw files
//! of whole hours, compacted or not.
//!
//! Beside each hourly rollup is a daily one (`events_daily/`, same name,
//! same schema, `hour` holding the day's midnight): the same groups summed
//! per day. A month's spend is then ~24× fewer rows than from hourly
//! rollups (576,000 against 24,000 on the benchmark's lake); whole days
//! are read from it, the hours around them from `events_hourly`. Both are
//! written, rewritten, merged, repaired and deleted together, and a raw
//! file counts as rolled up only when both cover it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Decimal128Array, Decimal128Builder, Int64Array, Int64Builder, RecordBatch,
    StringArray, StringBuilder, TimestampMillisecondArray, TimestampMillisecondBuilder,
    UInt16Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::LakeError;
use super::files::{LakeLayout, ListedFile, WriteMode};
use crate::event::{USD_PRECISION, USD_SCALE};

/// One hour in milliseconds: the rollups' grain.
pub const HOUR_MS: i64 = 3_600_000;

/// One day in milliseconds: the daily rollups' grain.
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// The token columns summed, in schema order.
pub const TOKEN_COLUMNS: [&str; 7] = [
    "input_tokens",
    "output_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
    "cache_read_tokens",
    "web_search_requests",
    "web_fetch_requests",
];

/// The dollar columns summed, in schema order (raw names kept).
pub const USD_COLUMNS: [&str; 8] = [
    "cost_usd",
    "cost_input_usd",
    "cost_output_usd",
    "cost_cache_write_5m_usd",
    "cost_cache_write_1h_usd",
    "cost_cache_read_usd",
    "cost_web_search_usd",
    "cost_cache_savings_usd",
];

/// Why a rollup could not be computed from a raw batch.
#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    #[error("raw lake batch has no column {0} of the expected type")]
    Column(&'static str),
    #[error("an hourly sum of {0} exceeds the lake's Decimal128({USD_PRECISION}, {USD_SCALE})")]
    Overflow(&'static str),
    #[error("building the rollup batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// The Arrow schema of `events_hourly` (the `day` partition column comes
/// from the directory, as for `events`).
pub fn hourly_schema() -> SchemaRef {
    let s = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let i = |name: &str| Field::new(name, DataType::Int64, false);
    let usd = |name: &str| Field::new(name, DataType::Decimal128(USD_PRECISION, USD_SCALE), true);
    let mut fields = vec![
        Field::new(
            "hour",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        s("team", false),
        s("user", false),
        s("key_id", false),
        s("model", true),
        s("model_requested", true),
        s("model_served", true),
        s("provider", false),
        s("billed_by", false),
        i("requests"),
        i("errors"),
    ];
    fields.extend(TOKEN_COLUMNS.iter().map(|c| i(c)));
    fields.extend(USD_COLUMNS.iter().map(|c| usd(c)));
    fields.push(i("unpriced_requests"));
    fields.push(i("provisional_requests"));
    Arc::new(Schema::new(fields))
}

/// One rollup row's group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    hour_ms: i64,
    team: String,
    user: String,
    key_id: String,
    model_requested: Option<String>,
    model_served: Option<String>,
    provider: String,
    billed_by: String,
}

/// One rollup row's sums.
#[derive(Debug, Default, Clone)]
struct Sums {
    requests: i64,
    errors: i64,
    tokens: [i64; 7],
    /// Unscaled decimals; `None` while every row summed was null.
    usd: [Option<i128>; 8],
    unpriced: i64,
    provisional: i64,
}

impl Sums {
    /// Adds `other` into these sums (a coarser grain's group).
    fn merge(&mut self, other: &Sums) -> Result<(), RollupError> {
        self.requests += other.requests;
        self.errors += other.errors;
        for (t, o) in self.tokens.iter_mut().zip(other.tokens) {
            *t = t.saturating_add(o);
        }
        for (k, (s, o)) in self.usd.iter_mut().zip(other.usd).enumerate() {
            if let Some(o) = o {
                let total = s.unwrap_or(0).checked_add(o);
                *s = Some(
                    total
                        .filter(|v| fits(*v))
                        .ok_or(RollupError::Overflow(USD_COLUMNS[k]))?,
                );
            }
        }
        self.unpriced += other.unpriced;
        self.provisional += other.provisional;
        Ok(())
    }
}

/// The raw columns a rollup reads, typed.
struct RawColumns<'a> {
    started: &'a TimestampMillisecondArray,
    strings: [&'a StringArray; 7],
    status: &'a UInt16Array,
    tokens: Vec<&'a Int64Array>,
    usd: Vec<&'a Decimal128Array>,
    basis: &'a StringArray,
}

/// A column of `batch` by name, of type `T`.
fn typed<'a, T: 'static>(batch: &'a RecordBatch, name: &'static str) -> Result<&'a T, RollupError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or(RollupError::Column(name))
}

impl<'a> RawColumns<'a> {
    /// Finds every column of a raw (event schema) batch.
    fn of(batch: &'a RecordBatch) -> Result<RawColumns<'a>, RollupError> {
        let s = |name| typed::<StringArray>(batch, name);
        Ok(RawColumns {
            started: typed(batch, "started_at")?,
            strings: group_columns(batch)?,
            status: typed(batch, "status")?,
            tokens: TOKEN_COLUMNS
                .iter()
                .map(|c| typed::<Int64Array>(batch, c))
                .collect::<Result<_, _>>()?,
            usd: USD_COLUMNS
                .iter()
                .map(|c| typed::<Decimal128Array>(batch, c))
                .collect::<Result<_, _>>()?,
            basis: s("pricing_basis")?,
        })
    }

    /// Row `i`'s group.
    fn key(&self, i: usize) -> Key {
        let hour_ms = self.started.value(i).div_euclid(HOUR_MS) * HOUR_MS;
        key_of(&self.strings, i, hour_ms)
    }

    /// Adds row `i` to `sums`.
    fn add(&self, i: usize, sums: &mut Sums) -> Result<(), RollupError> {
        sums.requests += 1;
        sums.errors += i64::from(self.status.value(i) >= 400);
        for (t, col) in sums.tokens.iter_mut().zip(&self.tokens) {
            *t = t.saturating_add(col.value(i));
        }
        for (k, (s, col)) in sums.usd.iter_mut().zip(&self.usd).enumerate() {
            if col.is_null(i) {
                continue;
            }
            let total = s.unwrap_or(0).checked_add(col.value(i));
            *s = Some(
                total
                    .filter(|v| fits(*v))
                    .ok_or(RollupError::Overflow(USD_COLUMNS[k]))?,
            );
        }
        sums.unpriced += i64::from(self.usd[0].is_null(i));
        sums.provisional +=
            i64::from(!self.basis.is_null(i) && self.basis.value(i) == "provisional");
        Ok(())
    }
}

/// The group's text columns of a raw or a rollup batch: team, user,
/// key_id, model_requested, model_served, provider, billed_by.
fn group_columns(batch: &RecordBatch) -> Result<[&StringArray; 7], RollupError> {
    let s = |name| typed::<StringArray>(batch, name);
    Ok([
        s("team")?,
        s("user")?,
        s("key_id")?,
        s("model_requested")?,
        s("model_served")?,
        s("provider")?,
        s("billed_by")?,
    ])
}

/// Row `i`'s group in `hour_ms` (a raw row without `billed_by` was
/// billed by the API).
fn key_of(strings: &[&StringArray; 7], i: usize, hour_ms: i64) -> Key {
    let opt = |a: &StringArray| (!a.is_null(i)).then(|| a.value(i).to_owned());
    let [team, user, key_id, requested, served, provider, billed_by] = *strings;
    Key {
        hour_ms,
        team: team.value(i).to_owned(),
        user: user.value(i).to_owned(),
        key_id: key_id.value(i).to_owned(),
        model_requested: opt(requested),
        model_served: opt(served),
        provider: provider.value(i).to_owned(),
        billed_by: opt(billed_by).unwrap_or_else(|| "api".to_owned()),
    }
}

/// Whether an unscaled value fits the lake's decimal precision.
fn fits(v: i128) -> bool {
    v.unsigned_abs() < 10u128.pow(u32::from(USD_PRECISION))
}

/// The hourly rollup of raw lake batches (rows in group order).
pub fn rollup(batches: &[RecordBatch]) -> Result<RecordBatch, RollupError> {
    build(&hourly_groups(batches)?)
}

/// The hourly groups of raw lake batches.
fn hourly_groups(batches: &[RecordBatch]) -> Result<BTreeMap<Key, Sums>, RollupError> {
    let mut groups: BTreeMap<Key, Sums> = BTreeMap::new();
    for batch in batches {
        let raw = RawColumns::of(batch)?;
        for i in 0..batch.num_rows() {
            raw.add(i, groups.entry(raw.key(i)).or_default())?;
        }
    }
    Ok(groups)
}

/// The same groups summed per day (each key's hour set to its day's
/// midnight, UTC).
fn daily_groups(hourly: &BTreeMap<Key, Sums>) -> Result<BTreeMap<Key, Sums>, RollupError> {
    let mut days: BTreeMap<Key, Sums> = BTreeMap::new();
    for (k, sums) in hourly {
        let mut day = k.clone();
        day.hour_ms = k.hour_ms.div_euclid(DAY_MS) * DAY_MS;
        days.entry(day).or_default().merge(sums)?;
    }
    Ok(days)
}

/// The rollup batch of `groups`.
fn build(groups: &BTreeMap<Key, Sums>) -> Result<RecordBatch, RollupError> {
    let n = groups.len();
    let mut hour = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut strings: Vec<StringBuilder> = (0..8).map(|_| StringBuilder::new()).collect();
    let mut ints: Vec<Int64Builder> = (0..11).map(|_| Int64Builder::with_capacity(n)).collect();
    let mut usd: Vec<Decimal128Builder> = (0..8)
        .map(|_| {
            Decimal128Builder::with_capacity(n).with_precision_and_scale(USD_PRECISION, USD_SCALE)
        })
        .collect::<Result<_, _>>()?;
    for (k, s) in groups {
        hour.append_value(k.hour_ms);
        let model = k.model_served.as_ref().or(k.model_requested.as_ref());
        let texts = [
            Some(&k.team),
            Some(&k.user),
            Some(&k.key_id),
            model,
            k.model_requested.as_ref(),
            k.model_served.as_ref(),
            Some(&k.provider),
            Some(&k.billed_by),
        ];
        for (b, v) in strings.iter_mut().zip(texts) {
            b.append_option(v);
        }
        let counts = [s.requests, s.errors];
        let all = counts
            .iter()
            .chain(&s.tokens)
            .chain([&s.unpriced, &s.provisional]);
        for (b, v) in ints.iter_mut().zip(all) {
            b.append_value(*v);
        }
        for (b, v) in usd.iter_mut().zip(&s.usd) {
            b.append_option(*v);
        }
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(hour.finish())];
    columns.extend(strings.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    let mut ints: Vec<ArrayRef> = ints
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    let tail = ints.split_off(9);
    columns.extend(ints);
    columns.extend(usd.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.extend(tail);
    Ok(RecordBatch::try_new(hourly_schema(), columns)?)
}

/// Where the hourly and the daily rollup of the raw file at `raw_path` go
/// (`None` for a path that is not a raw lake file).
fn rollup_paths(layout: &LakeLayout, raw_path: &Path) -> Option<(PathBuf, PathBuf)> {
    Some((
        layout.hourly_path_of(raw_path)?,
        layout.daily_path_of(raw_path)?,
    ))
}

/// Writes the rollups of a raw file's rows beside it (same name under
/// `events_daily/` and `events_hourly/`, the daily one first). A group
/// whose sum does not fit the decimal type leaves the file without
/// rollups (logged): spend over its hours is then answered from raw
/// events.
pub fn write_for(
    layout: &LakeLayout,
    raw_path: &Path,
    batches: &[RecordBatch],
    mode: WriteMode,
) -> Result<(), LakeError> {
    let Some((hourly, daily)) = rollup_paths(layout, raw_path) else {
        return Ok(());
    };
    let built = hourly_groups(batches).and_then(|groups| {
        let days = build(&daily_groups(&groups)?)?;
        Ok((build(&groups)?, days))
    });
    match built {
        Ok((hours, days)) => {
            layout.write(&daily, &days, mode)?;
            layout.write(&hourly, &hours, mode)
        }
        Err(e) => {
            tracing::error!(file = %raw_path.display(), error = %e,
                "no rollups for this lake file; spend over its hours reads raw events");
            Ok(())
        }
    }
}

/// Writes the daily rollup of a raw file from its hourly rollup (a lake
/// written before daily rollups existed gets them without reading its
/// raw events again).
fn write_daily_from_hourly(layout: &LakeLayout, raw_path: &Path) -> Result<(), LakeError> {
    let Some((hourly, daily)) = rollup_paths(layout, raw_path) else {
        return Ok(());
    };
    let mut groups = BTreeMap::new();
    for batch in layout.read_as(&hourly, &hourly_schema())? {
        RollupColumns::of(&batch)
            .and_then(|c| c.add_to(&mut groups))
            .map_err(|e| LakeError::Write {
                path: hourly.clone(),
                message: e.to_string(),
            })?;
    }
    let days = daily_groups(&groups)
        .and_then(|g| build(&g))
        .map_err(|e| LakeError::Write {
            path: daily.clone(),
            message: e.to_string(),
        })?;
    layout.write(&daily, &days, WriteMode::New)
}

/// The columns of a rollup batch (`events_hourly`'s schema), typed.
struct RollupColumns<'a> {
    hour: &'a TimestampMillisecondArray,
    /// team, user, key_id, model_requested, model_served, provider,
    /// billed_by.
    strings: [&'a StringArray; 7],
    /// requests, errors, the token columns, unpriced, provisional.
    ints: Vec<&'a Int64Array>,
    usd: Vec<&'a Decimal128Array>,
}

impl<'a> RollupColumns<'a> {
    /// Finds every column of a rollup batch.
    fn of(batch: &'a RecordBatch) -> Result<RollupColumns<'a>, RollupError> {
        let ints = ["requests", "errors"]
            .iter()
            .chain(TOKEN_COLUMNS.iter())
            .chain(["unpriced_requests", "provisional_requests"].iter())
            .map(|c| typed::<Int64Array>(batch, c))
            .collect::<Result<_, _>>()?;
        Ok(RollupColumns {
            hour: typed(batch, "hour")?,
            strings: group_columns(batch)?,
            ints,
            usd: USD_COLUMNS
                .iter()
                .map(|c| typed::<Decimal128Array>(batch, c))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Adds every row to `groups`.
    fn add_to(&self, groups: &mut BTreeMap<Key, Sums>) -> Result<(), RollupError> {
        for i in 0..self.hour.len() {
            let key = key_of(&self.strings, i, self.hour.value(i));
            let int = |k: usize| self.ints[k].value(i);
            let mut tokens = [0i64; 7];
            for (k, t) in tokens.iter_mut().enumerate() {
                *t = int(2 + k);
            }
            let mut usd = [None; 8];
            for (u, col) in usd.iter_mut().zip(&self.usd) {
                *u = (!col.is_null(i)).then(|| col.value(i));
            }
            let sums = Sums {
                requests: int(0),
                errors: int(1),
                tokens,
                usd,
                unpriced: int(9),
                provisional: int(10),
            };
            groups.entry(key).or_default().merge(&sums)?;
        }
        Ok(())
    }
}

/// `…/day=2026-11-22/file.parquet` → the day.
pub fn day_of_path(path: &Path) -> Option<chrono::NaiveDate> {
    let dir = path.parent()?.file_name()?.to_str()?;
    chrono::NaiveDate::parse_from_str(dir.strip_prefix("day=")?, "%Y-%m-%d").ok()
}

/// `(day directory name, partition)` of a listed file.
fn group_of(f: &ListedFile) -> (String, u32) {
    let day = f
        .path
        .parent()
        .and_then(|d| d.file_name())
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    (day, f.partition)
}

/// Files no other file of their day and partition strictly covers: what
/// readers see.
pub fn visible(files: Vec<ListedFile>) -> Vec<ListedFile> {
    let mut ranges: HashMap<(String, u32), Vec<(u64, u64)>> = HashMap::new();
    for f in &files {
        ranges
            .entry(group_of(f))
            .or_default()
            .push((f.first, f.last));
    }
    files
        .into_iter()
        .filter(|f| {
            !ranges[&group_of(f)]
                .iter()
                .any(|&(a, b)| a <= f.first && f.last <= b && (a, b) != (f.first, f.last))
        })
        .collect()
}

/// The ranges of a rollup listing, per day and partition.
fn ranges_of(rollups: &[ListedFile]) -> HashMap<(String, u32), Vec<(u64, u64)>> {
    let mut covered: HashMap<(String, u32), Vec<(u64, u64)>> = HashMap::new();
    for f in rollups {
        covered
            .entry(group_of(f))
            .or_default()
            .push((f.first, f.last));
    }
    covered
}

/// Whether a range in `covered` holds all of `f`'s offsets.
fn is_covered(covered: &HashMap<(String, u32), Vec<(u64, u64)>>, f: &ListedFile) -> bool {
    covered
        .get(&group_of(f))
        .is_some_and(|r| r.iter().any(|&(a, b)| a <= f.first && f.last <= b))
}

/// A visible raw file lacking a rollup: whether an hourly one covers it
/// (then only the daily one is missing), and whether that is its own
/// (then the daily one can be summed from it).
struct Unrolled {
    file: ListedFile,
    has_hourly: bool,
    has_own_hourly: bool,
}

/// Visible raw files that an hourly or a daily rollup does not cover.
fn unrolled(layout: &LakeLayout) -> Result<Vec<Unrolled>, LakeError> {
    let hourly_files = layout.hourly_listing()?;
    let hourly = ranges_of(&hourly_files);
    let daily = ranges_of(&layout.daily_listing()?);
    let own: HashSet<PathBuf> = hourly_files.into_iter().map(|f| f.path).collect();
    Ok(visible(layout.listing()?)
        .into_iter()
        .filter_map(|file| {
            let has_hourly = is_covered(&hourly, &file);
            (!has_hourly || !is_covered(&daily, &file)).then(|| Unrolled {
                has_hourly,
                has_own_hourly: layout
                    .hourly_path_of(&file.path)
                    .is_some_and(|p| own.contains(&p)),
                file,
            })
        })
        .collect())
}

/// The raw files rollups do not fully cover, by what spend over their
/// days can still read.
#[derive(Debug, Default)]
pub struct Gaps {
    /// No hourly rollup: raw events.
    pub no_hourly: Vec<ListedFile>,
    /// An hourly rollup but no daily one (a lake written before daily
    /// rollups, until compaction repairs it): hourly rollups.
    pub no_daily: Vec<ListedFile>,
}

/// Where rollups do not cover the lake's raw files (see [`Gaps`]).
pub fn gaps(layout: &LakeLayout) -> Result<Gaps, LakeError> {
    let mut gaps = Gaps::default();
    for u in unrolled(layout)? {
        match u.has_hourly {
            true => gaps.no_daily.push(u.file),
            false => gaps.no_hourly.push(u.file),
        }
    }
    Ok(gaps)
}

/// Writes the missing rollups of the partitions `owned` says are this
/// process's; returns for how many raw files. A daily rollup missing
/// beside the raw file's own hourly one is summed from the hourly one.
pub fn repair(layout: &LakeLayout, owned: &dyn Fn(u32) -> bool) -> Result<usize, LakeError> {
    let mut written = 0;
    for u in unrolled(layout)? {
        if !owned(u.file.partition) {
            continue;
        }
        if u.has_own_hourly {
            write_daily_from_hourly(layout, &u.file.path)?;
        } else {
            let batches = layout.read(&u.file.path)?;
            write_for(layout, &u.file.path, &batches, WriteMode::New)?;
        }
        written += 1;
    }
    if written > 0 {
        tracing::info!(files = written, "wrote missing rollups");
    }
    Ok(written)
}

/// Deletes rollups (hourly and daily) another rollup covers (inputs of a
/// merge), of owned partitions; returns how many.
pub fn delete_superseded(
    layout: &LakeLayout,
    owned: &dyn Fn(u32) -> bool,
) -> Result<usize, LakeError> {
    let mut deleted = 0;
    for all in [layout.hourly_listing()?, layout.daily_listing()?] {
        let keep: Vec<PathBuf> = visible(all.clone()).into_iter().map(|f| f.path).collect();
        for f in all {
            if owned(f.partition) && !keep.contains(&f.path) {
                layout.remove(&f.path)?;
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Visible raw files that an hourly or a daily rollup does not cover.
    fn missing(layout: &LakeLayout) -> Result<Vec<ListedFile>, LakeError> {
        Ok(unrolled(layout)?.into_iter().map(|u| u.file).collect())
    }
    use crate::event::tests::sample_event;
    use crate::event::{BusPosition, Cost, CostLines, to_record_batch};
    use rust_decimal::Decimal;

    /// An event at `minute` past 10:00 on 2026-11-22 costing `usd`.
    fn event(minute: i64, user: &str, usd: Option<&str>) -> crate::event::LlmEvent {
        let mut e = sample_event();
        e.started_at = chrono::DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
            .unwrap()
            .to_utc()
            + chrono::Duration::minutes(minute);
        e.user = user.into();
        e.cost = usd.map(|v| Cost {
            price_table_version: "v".into(),
            lines: Some(CostLines {
                input_usd: v.parse::<Decimal>().unwrap(),
                total_usd: v.parse::<Decimal>().unwrap(),
                ..CostLines::default()
            }),
            family: None,
            tier: None,
            basis: None,
            notes: vec![],
            source: None,
        });
        e
    }

    /// `events` as one raw batch of partition 0.
    fn batch(events: &[crate::event::LlmEvent]) -> RecordBatch {
        let rows: Vec<_> = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let pos = BusPosition {
                    partition: 0,
                    offset: i as u64,
                };
                (pos, e)
            })
            .collect();
        to_record_batch(&rows).unwrap()
    }

    #[test]
    fn rows_are_summed_per_hour_and_group_with_exact_decimals_and_nulls_kept() {
        let events = [
            event(1, "alice", Some("0.000000000001")),
            event(59, "alice", Some("1.5")),
            event(61, "alice", None),
            event(2, "bob", None),
        ];
        let r = rollup(&[batch(&events)]).unwrap();
        assert_eq!(r.num_rows(), 3);
        let requests = r.column_by_name("requests").unwrap();
        let requests = requests.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(requests.values().to_vec(), vec![2, 1, 1]);
        let cost = r.column_by_name("cost_usd").unwrap();
        let cost = cost.as_any().downcast_ref::<Decimal128Array>().unwrap();
        assert_eq!(cost.value_as_string(0), "1.500000000001");
        assert!(
            cost.is_null(1) && cost.is_null(2),
            "all-null groups stay null"
        );
        let unpriced = r.column_by_name("unpriced_requests").unwrap();
        let unpriced = unpriced.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(unpriced.values().to_vec(), vec![0, 1, 1]);
        let tokens = r.column_by_name("input_tokens").unwrap();
        let tokens = tokens.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(tokens.values().to_vec(), vec![20, 10, 10]);
    }

    #[test]
    fn a_sum_beyond_the_decimal_type_is_refused_by_name() {
        let big = "99999999.5";
        let err =
            rollup(&[batch(&[event(0, "a", Some(big)), event(1, "a", Some(big))])]).unwrap_err();
        assert!(err.to_string().contains("cost_usd"), "{err}");
    }

    #[test]
    fn a_raw_file_without_its_rollup_is_missing_until_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let layout = LakeLayout::new(dir.path());
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        let b = batch(&[event(0, "a", Some("1")), event(1, "b", Some("2"))]);
        let (p1, p2) = (
            layout.file_path(day, 0, 0, 1),
            layout.file_path(day, 0, 2, 3),
        );
        for p in [&p1, &p2] {
            layout.write(p, &b, WriteMode::New).unwrap();
        }
        write_for(&layout, &p1, std::slice::from_ref(&b), WriteMode::New).unwrap();
        let names = |v: Vec<ListedFile>| v.into_iter().map(|f| f.path).collect::<Vec<_>>();
        assert_eq!(names(missing(&layout).unwrap()), vec![p2.clone()]);
        assert_eq!(repair(&layout, &|p| p != 0).unwrap(), 0, "not owned");
        assert_eq!(repair(&layout, &|_| true).unwrap(), 1);
        assert!(missing(&layout).unwrap().is_empty());
        // A merged file is missing its rollup until one covers it.
        let merged = layout.file_path(day, 0, 0, 3);
        layout.write(&merged, &b, WriteMode::New).unwrap();
        assert_eq!(names(missing(&layout).unwrap()), vec![merged.clone()]);
        repair(&layout, &|_| true).unwrap();
        assert_eq!(delete_superseded(&layout, &|_| true).unwrap(), 2 + 2);
        assert_eq!(layout.hourly_listing().unwrap().len(), 1);
        assert_eq!(layout.daily_listing().unwrap().len(), 1);
    }

    #[test]
    fn a_daily_rollup_missing_beside_its_hourly_one_is_summed_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let layout = LakeLayout::new(dir.path());
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        // Hours 0 and 1 of one day, with a null cost among them.
        let b = batch(&[
            event(0, "a", Some("1.25")),
            event(70, "a", Some("2.5")),
            event(80, "a", None),
            event(90, "b", Some("0.000000000001")),
        ]);
        let raw = layout.file_path(day, 0, 0, 3);
        layout.write(&raw, &b, WriteMode::New).unwrap();
        write_for(&layout, &raw, std::slice::from_ref(&b), WriteMode::New).unwrap();
        let daily = layout.daily_path_of(&raw).unwrap();
        let as_written = layout.read_as(&daily, &hourly_schema()).unwrap();
        assert_eq!(as_written[0].num_rows(), 2, "one row per user for the day");
        let column = |name: &str| as_written[0].column_by_name(name).unwrap().clone();
        let requests = column("requests");
        let requests = requests.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(requests.values().to_vec(), vec![3, 1]);
        let usd = column("cost_usd");
        let usd = usd.as_any().downcast_ref::<Decimal128Array>().unwrap();
        assert_eq!(usd.value_as_string(0), "3.750000000000");
        let unpriced = column("unpriced_requests");
        let unpriced = unpriced.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(unpriced.value(0), 1);
        layout.remove(&daily).unwrap();
        assert_eq!(
            missing(&layout).unwrap().len(),
            1,
            "no daily rollup: missing"
        );

        assert_eq!(repair(&layout, &|_| true).unwrap(), 1);
        assert!(missing(&layout).unwrap().is_empty());
        assert_eq!(
            layout.read_as(&daily, &hourly_schema()).unwrap(),
            as_written,
            "the same sums"
        );
    }
}
