//! `tollgate reprice`: recompute the cost columns of stored events with
//! the current price tables.
//!
//! Usage and model are facts; cost is derived. Each lake file in the day
//! range is read, its cost columns replaced, and the file rewritten under
//! the same name (temp file + rename), so readers see the old file or the
//! new one, never a mix, and the offset-named layout stays as it was. The
//! file's hourly rollup is rewritten right after it, from the new costs.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use chrono::{DateTime, NaiveDate, Utc};

use super::LakeError;
use super::files::{LakeLayout, WriteMode};
use crate::event::{CostColumns, Usage};
use crate::pricing::cost::price_facts;
use crate::pricing::{PriceBook, PriceQuery};

/// What a reprice did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepriceReport {
    pub files: usize,
    pub rows: usize,
}

/// Reprices every lake file whose day is in `from..=to`.
pub fn reprice(
    layout: &LakeLayout,
    book: &PriceBook,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<RepriceReport, LakeError> {
    let mut report = RepriceReport::default();
    for (path, ..) in layout.files()? {
        let Some(day) = day_of(&path) else { continue };
        if day < from || day > to {
            continue;
        }
        report.rows += reprice_file(layout, &path, book)?;
        report.files += 1;
    }
    Ok(report)
}

/// `…/day=2026-11-22/file.parquet` → the day.
fn day_of(path: &Path) -> Option<NaiveDate> {
    let dir = path.parent()?.file_name()?.to_str()?;
    NaiveDate::parse_from_str(dir.strip_prefix("day=")?, "%Y-%m-%d").ok()
}

fn reprice_file(layout: &LakeLayout, path: &Path, book: &PriceBook) -> Result<usize, LakeError> {
    let read_err = |message: String| LakeError::Write {
        path: path.to_owned(),
        message,
    };
    let mut batches = Vec::new();
    for batch in layout.read(path)? {
        batches.push(reprice_batch(&batch, book).map_err(read_err)?);
    }
    let schema = crate::event::arrow_schema();
    let all =
        arrow::compute::concat_batches(&schema, &batches).map_err(|e| read_err(e.to_string()))?;
    layout.write(path, &all, WriteMode::Replace)?;
    // The file's hourly rollup sums its costs: rewritten right after it.
    super::rollup::write_for(layout, path, std::slice::from_ref(&all), WriteMode::Replace)?;
    Ok(all.num_rows())
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, String> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| format!("column {name} is missing or of the wrong type"))
}

/// The batch with its cost columns recomputed from its facts.
fn reprice_batch(batch: &RecordBatch, book: &PriceBook) -> Result<RecordBatch, String> {
    let provider = column::<StringArray>(batch, "provider")?;
    let served = column::<StringArray>(batch, "model_served")?;
    let requested = column::<StringArray>(batch, "model_requested")?;
    let region = column::<StringArray>(batch, "region")?;
    let started = column::<TimestampMillisecondArray>(batch, "started_at")?;
    let count = |name: &str| column::<Int64Array>(batch, name);
    let (input, output) = (count("input_tokens")?, count("output_tokens")?);
    let (w5, w1, read) = (
        count("cache_creation_5m_tokens")?,
        count("cache_creation_1h_tokens")?,
        count("cache_read_tokens")?,
    );
    let (search, fetch) = (count("web_search_requests")?, count("web_fetch_requests")?);
    let billing = BillingFacts::of(batch)?;
    let opt = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_owned());
    let n = |a: &Int64Array, i: usize| u64::try_from(a.value(i)).unwrap_or(0);
    let mut costs = CostColumns::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let mut usage = Usage {
            input_tokens: n(input, i),
            output_tokens: n(output, i),
            cache_creation_5m_tokens: n(w5, i),
            cache_creation_1h_tokens: n(w1, i),
            cache_read_tokens: n(read, i),
            web_search_requests: n(search, i),
            web_fetch_requests: n(fetch, i),
            ..Usage::default()
        };
        billing.fill(i, &mut usage);
        let model = opt(served, i).or_else(|| opt(requested, i));
        let region = opt(region, i);
        let at = DateTime::<Utc>::from_timestamp_millis(started.value(i)).unwrap_or_default();
        let q = PriceQuery {
            provider: provider.value(i),
            model: model.as_deref().unwrap_or(""),
            region: region.as_deref(),
            at,
        };
        costs.push(&Some(price_facts(book, Some(&q), &usage)));
    }
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    let schema = batch.schema();
    for (name, new) in costs.finish() {
        let (i, _) = schema
            .column_with_name(name)
            .ok_or_else(|| format!("column {name} is missing"))?;
        columns[i] = new;
    }
    RecordBatch::try_new(Arc::new(schema.as_ref().clone()), columns).map_err(|e| e.to_string())
}

/// The billing-fact columns of a batch (speed, inference geography,
/// service tier, iterations, fallback credit): null in files written
/// before they existed, which read back as "not stated".
struct BillingFacts<'a> {
    speed: &'a StringArray,
    inference_geo: &'a StringArray,
    service_tier: &'a StringArray,
    iterations: &'a StringArray,
    fallback: &'a arrow::array::BooleanArray,
}

impl<'a> BillingFacts<'a> {
    fn of(batch: &'a RecordBatch) -> Result<BillingFacts<'a>, String> {
        Ok(BillingFacts {
            speed: column(batch, "speed")?,
            inference_geo: column(batch, "inference_geo")?,
            service_tier: column(batch, "service_tier")?,
            iterations: column(batch, "usage_iterations")?,
            fallback: column(batch, "fallback_credit_redeemed")?,
        })
    }

    /// Copies row `i`'s facts into `usage`.
    fn fill(&self, i: usize, usage: &mut Usage) {
        let opt = |a: &StringArray| (!a.is_null(i)).then(|| a.value(i).to_owned());
        usage.speed = opt(self.speed);
        usage.inference_geo = opt(self.inference_geo);
        usage.service_tier = opt(self.service_tier);
        usage.iterations = opt(self.iterations)
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default();
        usage.fallback_credit_redeemed = !self.fallback.is_null(i) && self.fallback.value(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{BusPosition, to_record_batch};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reprice_rewrites_files_in_a_bucket_in_place() {
        let layout = crate::lake::object::in_memory_layout();
        let l = layout.clone();
        let report = tokio::task::spawn_blocking(move || {
            let layout = l;
            let mut e = crate::event::tests::sample_event();
            e.cost = None;
            let pos = BusPosition {
                partition: 0,
                offset: 0,
            };
            let day = e.started_at.date_naive();
            let batch = to_record_batch(&[(pos, &e)]).unwrap();
            let path = layout.file_path(day, 0, 0, 0);
            layout.write(&path, &batch, WriteMode::New).unwrap();
            let report = reprice(&layout, &PriceBook::embedded(), day, day).unwrap();
            let after = layout.read(&path).unwrap();
            let cost = after[0].column_by_name("cost_usd").unwrap();
            let rollup = crate::lake::rollup::rollup(&after).unwrap();
            let rolled = rollup.column_by_name("cost_usd").unwrap();
            let written = layout.hourly_listing().unwrap().len();
            (report, cost.is_null(0), rolled.is_null(0), written)
        })
        .await
        .unwrap();
        assert_eq!(
            report,
            (RepriceReport { files: 1, rows: 1 }, false, false, 1)
        );
        // The rollup in the lake now holds the new cost.
        let lake = crate::lake::query::Lake::open(&layout).await.unwrap();
        let limits = crate::lake::query::SqlLimits {
            max_rows: 10,
            timeout: std::time::Duration::from_secs(30),
        };
        let sql = "SELECT count(*) AS n FROM events_hourly WHERE cost_usd > 0";
        let r = lake
            .sql(&crate::lake::query::Scope::All, sql, limits)
            .await
            .unwrap();
        assert_eq!(r.rows[0]["n"], 1);
    }
}
