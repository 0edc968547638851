//! Reading the lake with DataFusion: the `events` table, who may see which
//! rows of it, and the queries of the API (logs, traces, spend, SQL).

mod allowlist;
mod hourly;
mod listings;
mod logs;
mod read_cache;
mod sessions;
mod spend;
mod sql;
mod yielding;

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use chrono::{DateTime, Utc};
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::cache::cache_manager::{CacheManagerConfig, FileStatisticsCache};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::*;
use datafusion::scalar::ScalarValue;

pub use logs::{Cursor, LogFilter, LogPage, LogQuery, SortKey, TraceTotals, TraceView};
pub use sessions::{AgentNode, SessionView};
pub use spend::{GroupBy, SpendQuery, SpendResult, TopSessionsQuery};
pub use sql::{SqlLimits, SqlResult};

use super::LakeError;
use super::files::LakeLayout;
use super::store::LakeStore;
use crate::event::arrow_schema;

/// Which rows a caller may read: everything, or one team's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Team(String),
}

impl Scope {
    /// The row filter the scope adds to every query.
    fn predicate(&self) -> Option<Expr> {
        match self {
            Scope::All => None,
            Scope::Team(team) => Some(col("team").eq(lit(team.clone()))),
        }
    }
}

/// The tables user SQL may read.
const TABLES: [&str; 3] = ["events", "events_hourly", "audit"];

/// The daily rollups' table in the API's own session.
const DAILY_TABLE: &str = "events_daily";

/// What a query process may hold in memory.
#[derive(Debug, Clone, Copy)]
pub struct MemoryLimits {
    /// All running queries together (what does not fit spills to disk,
    /// up to as much again).
    pub query_bytes: usize,
    /// Parsed Parquet footers and page indexes, kept between queries.
    /// A trace lookup needs its few files' footers; when the lake's do
    /// not fit, lookups keep reading and parsing them (on a 100M-event
    /// lake of 120 files, 256 MiB took lookup p99 from 53–64 to 44–47 ms,
    /// for ~50 MiB more resident memory).
    pub metadata_cache_bytes: usize,
    /// Bytes read from a bucket kept between queries (see
    /// [`read_cache`]); 0 keeps none. Unused on local disk, where the
    /// OS page cache keeps what was read.
    pub object_cache_bytes: usize,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        MemoryLimits {
            query_bytes: 2048 * 1024 * 1024,
            metadata_cache_bytes: 256 * 1024 * 1024,
            object_cache_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The lake opened for queries.
pub struct Lake {
    /// The API's own session over every table, built on the first query
    /// (see [`Lake::context`]).
    ctx: OnceLock<SessionContext>,
    /// The `events` table itself, for per-request SQL sessions that must
    /// see it only through a scope.
    table: Arc<ListingTable>,
    /// The `events_hourly` rollups, likewise.
    hourly: Arc<ListingTable>,
    /// The `events_daily` rollups (spend queries only).
    daily: Arc<ListingTable>,

    /// The `audit` table (control events): admin tokens only.
    audit: Arc<ListingTable>,
    config: SessionConfig,
    runtime: Arc<RuntimeEnv>,
    /// Where the lake is: spend queries check that rollups are complete.
    layout: LakeLayout,
    /// Which days have raw files without rollups, and when that was seen.
    unrolled: hourly::UnrolledDays,
}

impl Lake {
    /// [`Lake::open_with_memory`] with the default limits.
    pub async fn open(layout: &LakeLayout) -> Result<Lake, LakeError> {
        Lake::open_with_memory(layout, MemoryLimits::default()).await
    }

    /// Registers the `events` and `events_hourly` tables over the lake.
    /// Queries together may hold `limits.query_bytes`; one that needs more
    /// fails with an error instead of taking the machine's memory.
    pub async fn open_with_memory(
        layout: &LakeLayout,
        limits: MemoryLimits,
    ) -> Result<Lake, LakeError> {
        let config = SessionConfig::new()
            .set_bool("datafusion.execution.parquet.pushdown_filters", true)
            .set_bool("datafusion.execution.parquet.reorder_filters", true)
            .set_bool("datafusion.execution.parquet.bloom_filter_on_read", true)
            .set_bool("datafusion.execution.parquet.enable_page_index", true)
            // Each file's statistics (kept in the runtime's statistics
            // cache, see `listing_table`) let planning drop the files whose
            // ranges cannot match: a trace lookup opens a few files, not
            // every file of the lake.
            .set_bool("datafusion.execution.collect_statistics", true);
        let config = match layout.remote() {
            // A file read from a bucket waits on a request per column
            // chunk range; many files in flight at once hide that wait
            // (on local disk more partitions than cores only add work).
            // Filters are not pushed into the Parquet decoder there: it
            // would read the predicate column's pages first and the other
            // columns' pages in a second round of GETs; without it, the
            // page index picks the pages and one round reads them all. In
            // the benchmark's 10M lake on s3s-fs: trace lookup p50
            // 148–162 → 124–126 ms, session logs 200–214 → 147–150 ms.
            Some(_) => config
                .with_target_partitions(BUCKET_PARTITIONS)
                .set_bool("datafusion.execution.parquet.pushdown_filters", false),
            None => config,
        };
        let audit_dir = super::audit::audit_dir(layout);
        let (url, hourly_url, daily_url, audit_url, runtime) = match layout.remote() {
            None => (
                local_table_url(&layout.events_dir())?,
                local_table_url(&layout.hourly_dir())?,
                local_table_url(&layout.daily_dir())?,
                local_table_url(&audit_dir)?,
                local_runtime(limits)?,
            ),
            Some(remote) => (
                remote.url_of(&layout.events_dir()),
                remote.url_of(&layout.hourly_dir()),
                remote.url_of(&layout.daily_dir()),
                remote.url_of(&audit_dir),
                bucket_runtime(remote, limits)?,
            ),
        };
        let stats = runtime.cache_manager.get_file_statistic_cache();
        let table = listing_table(&url, arrow_schema(), stats.clone())?;
        let hourly = listing_table(&hourly_url, super::rollup::hourly_schema(), stats.clone())?;
        let daily = listing_table(&daily_url, super::rollup::hourly_schema(), stats.clone())?;
        let audit = listing_table(&audit_url, super::audit::audit_schema(), stats)?;
        let ttl = layout.remote().map(|r| r.listing_ttl());
        Ok(Lake {
            ctx: OnceLock::new(),
            table,
            hourly,
            daily,
            audit,
            config,
            runtime,
            layout: layout.clone(),
            unrolled: hourly::UnrolledDays::new(ttl),
        })
    }

    /// The API's own session, built on first use: a DataFusion session
    /// registers its hundreds of built-in functions when created, which
    /// touched about 11 MiB of code pages spread over the binary; they
    /// stayed resident in every `tollgate serve` and `tollgate api` that
    /// had not yet been asked a question. Everything that can fail on a
    /// bad configuration (URLs, the bucket's store, the tables) is checked
    /// in [`Lake::open`].
    fn context(&self) -> Result<&SessionContext, LakeError> {
        if let Some(ctx) = self.ctx.get() {
            return Ok(ctx);
        }
        let ctx = SessionContext::new_with_config_rt(self.config.clone(), self.runtime.clone());
        ctx.register_table("events", self.table.clone())?;
        ctx.register_table("events_hourly", self.hourly.clone())?;
        // Read by spend queries only; not offered to SQL (its `hour`
        // column holds midnights).
        ctx.register_table(DAILY_TABLE, self.daily.clone())?;
        // Two first queries at once may both build one; either serves.
        Ok(self.ctx.get_or_init(|| ctx))
    }

    /// The session the API's queries run in, for benchmarks that print a
    /// plan's `EXPLAIN ANALYZE`; not for serving (it has no scope).
    #[doc(hidden)]
    pub fn unscoped_context(&self) -> Result<&SessionContext, LakeError> {
        self.context()
    }

    /// The `events` rows `scope` may read.
    async fn events(&self, scope: &Scope) -> Result<DataFrame, LakeError> {
        let df = self.context()?.table("events").await?;
        Ok(match scope.predicate() {
            Some(p) => df.filter(p)?,
            None => df,
        })
    }

    /// A fresh session whose only tables are `events` and
    /// `events_hourly` as `scope` sees them, and `audit` for admin tokens
    /// (a team token has no rows of it): what user SQL runs in, so no
    /// statement can reach other rows.
    fn scoped_session(&self, scope: &Scope) -> Result<SessionContext, LakeError> {
        let config = self.config.clone().with_batch_size(SQL_BATCH_ROWS);
        let state = yielding::yielding_state(config, self.runtime.clone());
        let ctx = SessionContext::new_with_state(state);
        ctx.register_table("events", scoped(scope, "events", self.table.clone())?)?;
        ctx.register_table(
            "events_hourly",
            scoped(scope, "events_hourly", self.hourly.clone())?,
        )?;
        if *scope == Scope::All {
            ctx.register_table("audit", self.audit.clone())?;
        }
        Ok(ctx)
    }
}

/// `table` as `scope` sees it: itself, or a view of one team's rows.
fn scoped(
    scope: &Scope,
    name: &str,
    table: Arc<ListingTable>,
) -> Result<Arc<dyn TableProvider>, LakeError> {
    Ok(match scope.predicate() {
        None => table,
        Some(p) => {
            let source = datafusion::datasource::provider_as_source(table);
            let plan = datafusion::logical_expr::LogicalPlanBuilder::scan(name, source, None)?
                .filter(p)?
                .build()?;
            Arc::new(datafusion::catalog::view::ViewTable::new(plan, None))
        }
    })
}

/// A Parquet table over `url` (Hive-style `day=` partitions) in `schema`.
/// Files are listed at query time, so new files are seen without
/// reopening; each file's statistics are read once and kept in `stats`
/// (keyed by path, checked against size and modification time).
fn listing_table(
    url: &str,
    schema: arrow::datatypes::SchemaRef,
    stats: Option<Arc<FileStatisticsCache>>,
) -> Result<Arc<ListingTable>, LakeError> {
    let url = ListingTableUrl::parse(url)?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![("day".to_owned(), DataType::Utf8)]);
    let listing = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(listing)?.with_cache(stats)))
}

/// A local table directory (created if missing) as a table URL.
fn local_table_url(dir: &std::path::Path) -> Result<String, LakeError> {
    crate::private_fs::create_dir_all(dir).map_err(|source| LakeError::Io {
        path: dir.to_owned(),
        source,
    })?;
    Ok(format!("{}/", dir.display()))
}

/// The query runtime of a local lake: the sink adds files all the time,
/// so files are listed on every query rather than served from a cached
/// listing that misses the newest events (a local listing is cheap).
fn local_runtime(limits: MemoryLimits) -> Result<Arc<RuntimeEnv>, LakeError> {
    let runtime = runtime_with(
        CacheManagerConfig::default().with_list_files_cache_limit(0),
        limits,
    )?;
    // Reads go through the store that hides files a compaction merged.
    runtime.register_object_store(
        ObjectStoreUrl::local_filesystem().as_ref(),
        Arc::new(LakeStore::new()),
    );
    Ok(runtime)
}

/// A query runtime with `cache` (its footer cache sized by `limits`) and
/// `limits`' query memory.
fn runtime_with(
    cache: CacheManagerConfig,
    limits: MemoryLimits,
) -> Result<Arc<RuntimeEnv>, LakeError> {
    Ok(RuntimeEnvBuilder::new()
        .with_cache_manager(cache.with_metadata_cache_limit(limits.metadata_cache_bytes))
        .with_memory_limit(limits.query_bytes, 1.0)
        // What does not fit spills to disk, but no more than fits in
        // memory (DataFusion's default is 100 GiB of temporary files).
        .with_max_temp_directory_size(limits.query_bytes as u64)
        .build_arc()?)
}

/// Files a query over a bucket reads at once.
const BUCKET_PARTITIONS: usize = 16;

/// The query runtime of a lake in a bucket. A listing there is a request
/// per 1000 files, so one is reused for the lake's listing TTL (the
/// sink's flush interval: a new file shows up no later than one flush
/// more) and kept fresh in the background while queries use it
/// ([`listings`]); Parquet footers are cached by DataFusion's file
/// metadata cache, keyed by path and checked against size and
/// modification time, and the bytes of what queries read by the
/// [`read_cache`], keyed by version.
fn bucket_runtime(
    remote: &super::object::ObjectLake,
    limits: MemoryLimits,
) -> Result<Arc<RuntimeEnv>, LakeError> {
    let base = url::Url::parse(remote.base()).map_err(|e| {
        LakeError::Query(datafusion::error::DataFusionError::Configuration(format!(
            "lake URL {}: {e}",
            remote.base()
        )))
    })?;
    let store = match limits.object_cache_bytes {
        0 => remote.store(),
        bytes => Arc::new(read_cache::ReadCache::over(remote.store(), bytes as u64)),
    };
    let store: Arc<dyn datafusion::object_store::ObjectStore> = Arc::new(LakeStore::over(store));
    let listings =
        listings::FreshListings::new(store.clone(), remote.listing_ttl(), LISTINGS_BYTES);
    let cache = CacheManagerConfig::default()
        .with_list_files_cache(Some(listings))
        .with_list_files_cache_limit(LISTINGS_BYTES)
        .with_list_files_cache_ttl(Some(remote.listing_ttl()));
    let runtime = runtime_with(cache, limits)?;
    runtime.register_object_store(&base, store);
    Ok(runtime)
}

/// Bytes of bucket listings a query runtime keeps: about 25,000 files.
const LISTINGS_BYTES: usize = 4 * 1024 * 1024;

/// Lake queries run on their own threads: a heavy scan or a runaway SQL
/// statement must never hold the gateway's threads, and a time limit must
/// be able to answer while a query is still computing.
static QUERY_RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("lake-query")
        .enable_all()
        .build()
        .expect("the lake query runtime starts")
});

/// Rows per batch in user SQL sessions (DataFusion's default is 8192).
/// A literal or a scalar function's output is materialised for a whole
/// batch without passing the memory pool, so smaller batches bound what
/// one expression can allocate (see [`allowlist`]).
const SQL_BATCH_ROWS: usize = 2048;

/// A query task that is aborted when its handle is dropped: when the
/// caller goes away (client disconnected, handler dropped) the query stops
/// too instead of running on, detached, to its end.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `df` to completion on the query runtime, cancelling it after
/// `limit`. The limit is applied inside the task too, so the query stops
/// at the limit even if nobody waits for it, and the task is aborted when
/// the caller stops waiting. Either way the work stops at its next yield:
/// DataFusion's operators yield cooperatively between batches, and
/// dropping the plan's stream aborts the tasks it spawned.
async fn collect(df: DataFrame, limit: Option<Duration>) -> Result<Vec<RecordBatch>, LakeError> {
    let run = async move {
        match limit {
            None => Ok(df.collect().await),
            Some(limit) => tokio::time::timeout(limit, df.collect())
                .await
                .map_err(|_| LakeError::TimedOut(limit)),
        }
    };
    let mut task = AbortOnDrop(QUERY_RUNTIME.spawn(run));
    let joined = match limit {
        None => (&mut task.0).await,
        // The caller's own clock answers even if the query runtime is
        // too busy to notice its limit.
        Some(limit) => tokio::time::timeout(limit, &mut task.0)
            .await
            .map_err(|_| LakeError::TimedOut(limit))?,
    };
    joined
        .map_err(|e| LakeError::Worker(e.to_string()))??
        .map_err(LakeError::Query)
}

/// A timestamp literal for comparisons with `started_at`.
fn ts_lit(t: &DateTime<Utc>) -> Expr {
    lit(ScalarValue::TimestampMillisecond(
        Some(t.timestamp_millis()),
        Some("UTC".into()),
    ))
}

/// Time bounds as predicates; they also prune whole `day=` directories.
fn time_range(from: Option<&DateTime<Utc>>, to: Option<&DateTime<Utc>>) -> Vec<Expr> {
    let mut out = Vec::new();
    if let Some(from) = from {
        out.push(col("started_at").gt_eq(ts_lit(from)));
        out.push(col("day").gt_eq(lit(from.date_naive().to_string())));
    }
    if let Some(to) = to {
        out.push(col("started_at").lt(ts_lit(to)));
        out.push(col("day").lt_eq(lit(to.date_naive().to_string())));
    }
    out
}

/// Applies every predicate to `df`.
fn filtered(df: DataFrame, predicates: Vec<Expr>) -> Result<DataFrame, LakeError> {
    Ok(match predicates.into_iter().reduce(Expr::and) {
        Some(p) => df.filter(p)?,
        None => df,
    })
}

/// Rows as JSON objects. Dollar amounts become strings with every decimal
/// place (a JSON number would round them through a float).
fn rows_as_json(
    batches: &[RecordBatch],
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, LakeError> {
    let encode = |e: arrow::error::ArrowError| LakeError::Encode(e.to_string());
    let mut exact = Vec::with_capacity(batches.len());
    for batch in batches {
        let schema = batch.schema();
        let mut fields = Vec::with_capacity(schema.fields().len());
        let mut columns = Vec::with_capacity(schema.fields().len());
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            if matches!(field.data_type(), DataType::Decimal128(..)) {
                columns.push(arrow::compute::cast(column, &DataType::Utf8).map_err(encode)?);
                fields.push(field.as_ref().clone().with_data_type(DataType::Utf8));
            } else {
                columns.push(column.clone());
                fields.push(field.as_ref().clone());
            }
        }
        let schema = Arc::new(arrow::datatypes::Schema::new(fields));
        exact.push(RecordBatch::try_new(schema, columns).map_err(encode)?);
    }
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    let refs: Vec<&RecordBatch> = exact.iter().collect();
    writer.write_batches(&refs).map_err(encode)?;
    writer.finish().map_err(encode)?;
    let raw = writer.into_inner();
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&raw).map_err(|e| LakeError::Encode(e.to_string()))
}
