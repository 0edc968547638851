//! Reading the lake with DataFusion: the `events` table and the log
//! queries of the API.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use base64::Engine;
use chrono::{DateTime, Utc};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::*;
use datafusion::scalar::ScalarValue;

use super::LakeError;
use super::files::LakeLayout;
use crate::event::arrow_schema;

/// Filters of a log query; every one present must match.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub trace_id: Option<String>,
    pub session_id: Option<String>,
    pub team: Option<String>,
    pub user: Option<String>,
    /// Matches the model asked for or the model served.
    pub model: Option<String>,
    pub status: Option<u16>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// Where the previous page ended (newest first: `started_at`, `event_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub started_at_ms: i64,
    pub event_id: String,
}

impl Cursor {
    /// The opaque text form handed to clients.
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}|{}", self.started_at_ms, self.event_id))
    }

    /// Parses what [`Cursor::encode`] produced.
    pub fn decode(text: &str) -> Option<Cursor> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (ms, id) = raw.split_once('|')?;
        Some(Cursor {
            started_at_ms: ms.parse().ok()?,
            event_id: id.to_owned(),
        })
    }
}

/// One page of events, as JSON objects shaped like `LlmEvent`.
#[derive(Debug, serde::Serialize)]
pub struct LogPage {
    pub data: Vec<serde_json::Value>,
    pub next_cursor: Option<String>,
}

/// The lake opened for queries.
pub struct Lake {
    ctx: SessionContext,
}

impl Lake {
    /// Registers the `events` table over the lake directory. Files are
    /// listed at query time, so new files are seen without reopening.
    pub async fn open(layout: &LakeLayout) -> Result<Lake, LakeError> {
        let dir = layout.events_dir();
        std::fs::create_dir_all(&dir).map_err(|source| LakeError::Io {
            path: dir.clone(),
            source,
        })?;
        let config = SessionConfig::new()
            .set_bool("datafusion.execution.parquet.pushdown_filters", true)
            .set_bool("datafusion.execution.parquet.reorder_filters", true)
            .set_bool("datafusion.execution.parquet.bloom_filter_on_read", true);
        // The sink adds files all the time: list them on every query rather
        // than serve a cached listing that misses the newest events.
        let cache = CacheManagerConfig::default().with_list_files_cache_limit(0);
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(cache)
            .build_arc()?;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let url = format!("{}/", dir.display());
        let url = ListingTableUrl::parse(&url)?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![("day".to_owned(), DataType::Utf8)]);
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(arrow_schema());
        ctx.register_table("events", Arc::new(ListingTable::try_new(config)?))?;
        Ok(Lake { ctx })
    }

    /// Events matching `filter`, newest first, after `cursor`.
    pub async fn logs(
        &self,
        filter: &LogFilter,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<LogPage, LakeError> {
        let mut predicates = filter_exprs(filter);
        if let Some(c) = cursor {
            let ts = lit(ScalarValue::TimestampMillisecond(
                Some(c.started_at_ms),
                Some("UTC".into()),
            ));
            predicates.push(
                col("started_at").lt(ts.clone()).or(col("started_at")
                    .eq(ts)
                    .and(col("event_id").lt(lit(c.event_id.clone())))),
            );
        }
        let mut df = self.ctx.table("events").await?;
        if let Some(p) = predicates.into_iter().reduce(Expr::and) {
            df = df.filter(p)?;
        }
        let batches = df
            .sort(vec![
                col("started_at").sort(false, false),
                col("event_id").sort(false, false),
            ])?
            .limit(0, Some(limit + 1))?
            .collect()
            .await?;
        let mut data = rows_as_events(&batches)?;
        let next_cursor = if data.len() > limit {
            data.truncate(limit);
            data.last().and_then(cursor_of).map(|c| c.encode())
        } else {
            None
        };
        Ok(LogPage { data, next_cursor })
    }

    /// One event by id.
    pub async fn event(&self, event_id: &str) -> Result<Option<serde_json::Value>, LakeError> {
        let batches = self
            .ctx
            .table("events")
            .await?
            .filter(col("event_id").eq(lit(event_id)))?
            .limit(0, Some(1))?
            .collect()
            .await?;
        Ok(rows_as_events(&batches)?.into_iter().next())
    }
}

/// The filter as DataFusion predicates; time bounds also prune whole
/// `day=` directories.
fn filter_exprs(f: &LogFilter) -> Vec<Expr> {
    let mut out = Vec::new();
    let eq = |out: &mut Vec<Expr>, column: &str, v: &Option<String>| {
        if let Some(v) = v {
            out.push(col(column).eq(lit(v.clone())));
        }
    };
    eq(&mut out, "trace_id", &f.trace_id);
    eq(&mut out, "session_id", &f.session_id);
    eq(&mut out, "team", &f.team);
    eq(&mut out, "user", &f.user);
    if let Some(m) = &f.model {
        out.push(
            col("model_requested")
                .eq(lit(m.clone()))
                .or(col("model_served").eq(lit(m.clone()))),
        );
    }
    if let Some(s) = f.status {
        out.push(col("status").eq(lit(ScalarValue::UInt16(Some(s)))));
    }
    let ts = |t: &DateTime<Utc>| {
        lit(ScalarValue::TimestampMillisecond(
            Some(t.timestamp_millis()),
            Some("UTC".into()),
        ))
    };
    if let Some(from) = &f.from {
        out.push(col("started_at").gt_eq(ts(from)));
        out.push(col("day").gt_eq(lit(from.date_naive().to_string())));
    }
    if let Some(to) = &f.to {
        out.push(col("started_at").lt(ts(to)));
        out.push(col("day").lt_eq(lit(to.date_naive().to_string())));
    }
    out
}

/// Rows as JSON objects shaped like `LlmEvent`: usage classes gathered
/// under `usage`, storage-only columns (`day`) left out.
fn rows_as_events(batches: &[RecordBatch]) -> Result<Vec<serde_json::Value>, LakeError> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    writer
        .write_batches(&refs)
        .map_err(|e| LakeError::Encode(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| LakeError::Encode(e.to_string()))?;
    let raw = writer.into_inner();
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(&raw).map_err(|e| LakeError::Encode(e.to_string()))?;
    Ok(rows.into_iter().map(shape_row).collect())
}

const USAGE_COLUMNS: &[&str] = &[
    "input_tokens",
    "output_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
    "cache_read_tokens",
    "web_search_requests",
    "web_fetch_requests",
];

fn shape_row(mut row: serde_json::Map<String, serde_json::Value>) -> serde_json::Value {
    let mut usage = serde_json::Map::new();
    for c in USAGE_COLUMNS {
        if let Some(v) = row.remove(*c) {
            usage.insert((*c).to_owned(), v);
        }
    }
    row.insert("usage".into(), serde_json::Value::Object(usage));
    row.remove("day");
    serde_json::Value::Object(row)
}

fn cursor_of(row: &serde_json::Value) -> Option<Cursor> {
    let started = row.get("started_at")?.as_str()?;
    let started = DateTime::parse_from_rfc3339(started).ok().or_else(|| {
        chrono::NaiveDateTime::parse_from_str(started, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .map(|n| n.and_utc().fixed_offset())
    })?;
    Some(Cursor {
        started_at_ms: started.timestamp_millis(),
        event_id: row.get("event_id")?.as_str()?.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let c = Cursor {
            started_at_ms: 1_795_000_000_123,
            event_id: "0194-abc".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("not a cursor"), None);
    }
}
