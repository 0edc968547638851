//! Lake query benchmark: trace lookups and spend group-bys on a lake of
//! 10M synthetic events with hourly rollups, through tollgate's query API
//! (the real axum router over HTTP on loopback, served in this process),
//! and through DuckDB (PyPI `duckdb`) on the very same Parquet files.
//!
//! Run with `cargo bench --bench lake_query`. The lake is generated once
//! (30 days × 4 partitions, each file compacted and sorted by trace as
//! `tollgate compact` leaves it, each with its `events_hourly` rollup;
//! 200 users in 20 teams, sessions of 50 requests by one user, and events
//! in the partition of their team, as the bus keys them)
//! under `$TOLLGATE_BENCH_LAKE` or `target/lake-bench-v4-<N>`;
//! `TOLLGATE_BENCH_EVENTS` changes N. DuckDB is installed with pip into
//! `$TOLLGATE_TOOLS_DIR/duckdb` when missing. Prints figures; asserts
//! nothing about speed (it does check every answer's row count).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tollgate::event::{
    Attempt, BilledBy, BusPosition, LlmEvent, SCHEMA_VERSION, Usage, to_record_batch,
};
use tollgate::lake::compact::sorted;
use tollgate::lake::files::{LakeLayout, WriteMode, write_atomically};
use tollgate::lake::query::{GroupBy, Lake, LogFilter, Scope, SpendQuery};
use tollgate::pricing::cost::price_facts;
use tollgate::pricing::{PriceBook, PriceQuery};

/// The allocator the `tollgate` binary runs with (src/main.rs), so the
/// query API is measured as it runs there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DAYS: u64 = 30;
const PARTITIONS: u32 = 4;
const EVENTS_PER_TRACE: u64 = 5;
const EVENTS_PER_SESSION: u64 = 50;
const LOOKUPS: usize = 200;
const MODELS: &[&str] = &[
    "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5-20251001",
    "claude-opus-4-1-20250805",
    "claude-sonnet-4-20250514",
];

fn main() {
    // `TOLLGATE_LOG=tollgate::lake::query=debug` shows each bucket read.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG") {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let total: u64 = std::env::var("TOLLGATE_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000_000);
    let root = std::env::var_os("TOLLGATE_BENCH_LAKE")
        .map(PathBuf::from)
        // v2: files sorted by hour then trace, requests in time order.
        // v4: a session's requests (and so its traces') from one user.
        .unwrap_or_else(|| target_dir().join(format!("lake-bench-v4-{total}")));
    let layout = LakeLayout::new(&root);
    let done = root.join("GENERATED");
    if !done.exists() {
        let t = Instant::now();
        generate(&layout, total);
        std::fs::write(&done, total.to_string()).unwrap();
        println!(
            "generated {total} events in {:.1} s under {}",
            t.elapsed().as_secs_f64(),
            root.display()
        );
    }
    // A lake generated before rollups (or daily rollups) existed gets
    // them once, as compaction would give them to it.
    let t = Instant::now();
    let repaired = tollgate::lake::rollup::repair(&layout, &|_| true).unwrap();
    if repaired > 0 {
        println!(
            "wrote the missing rollups of {repaired} files in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let files = layout.files().unwrap();
    let bytes: u64 = files
        .iter()
        .map(|(p, ..)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "lake: {total} events, {} files, {:.0} MiB",
        files.len(),
        bytes as f64 / 1048576.0
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    // `TOLLGATE_BENCH_LOCAL=0` measures the bucket alone.
    let local = std::env::var("TOLLGATE_BENCH_LOCAL").as_deref() != Ok("0");
    if let Ok(sql) = std::env::var("TOLLGATE_BENCH_EXPLAIN")
        && local
    {
        return rt.block_on(explain(&layout, &sql));
    }
    let traces = lookup_ids(total, "trace", EVENTS_PER_TRACE);
    let sessions = lookup_ids(total, "session", EVENTS_PER_SESSION);
    // `TOLLGATE_BENCH_ONLY_DUCKDB=1`: DuckDB's column alone.
    let only_duckdb = std::env::var("TOLLGATE_BENCH_ONLY_DUCKDB").as_deref() == Ok("1");
    let ours = if local && !only_duckdb {
        rt.block_on(measure_tollgate(&layout, &traces, &sessions))
    } else {
        Vec::new()
    };
    let ids_file = root.join("lookup-ids.json");
    std::fs::write(
        &ids_file,
        serde_json::to_string(&serde_json::json!({"traces": traces, "sessions": sessions}))
            .unwrap(),
    )
    .unwrap();
    let duck = (local && !quick())
        .then(|| measure_duckdb(&layout, &ids_file))
        .flatten();
    // With `TOLLGATE_BENCH_LOCAL=0`, `TOLLGATE_BENCH_QUICK` picks bucket queries.
    let bucket = if (quick() && local) || only_duckdb {
        None
    } else {
        rt.block_on(measure_on_s3(&root, &traces, &sessions))
    };

    println!();
    println!(
        "| query | tollgate API (DataFusion), local disk | same, lake in a bucket (s3s-fs) | DuckDB, raw events | DuckDB, events_hourly |"
    );
    println!("|---|---|---|---|---|");
    let theirs = |name: &str| {
        duck.as_ref()
            .and_then(|d| d.get(name))
            .and_then(|v| v.as_f64())
            .map(|v| format!("{v:.1} ms"))
            .unwrap_or_else(|| "n/a".into())
    };
    let names: Vec<(String, f64)> = if ours.is_empty() {
        bucket
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(n, _)| (n, f64::NAN))
            .collect()
    } else {
        ours
    };
    for (name, ms) in &names {
        let hourly = name.replace(", median of 5", ", on events_hourly, median of 5");
        let hourly = if hourly == *name {
            "n/a".into()
        } else {
            theirs(&hourly)
        };
        let remote = bucket
            .as_ref()
            .and_then(|b| b.iter().find(|(n, _)| n == name))
            .map(|(_, ms)| format!("{ms:.1} ms"))
            .unwrap_or_else(|| "n/a".into());
        println!(
            "| {name} | {ms:.1} ms | {remote} | {} | {hourly} |",
            theirs(name)
        );
    }
}

/// Where cargo builds: benches run with the manifest dir as cwd.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Trace (or session) IDs spread over the whole lake.
fn lookup_ids(total: u64, kind: &str, per: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(7);
    (0..LOOKUPS)
        .map(|_| format!("{kind}-{:08}", rng.gen_range(0..total / per)))
        .collect()
}

/// Writes the synthetic lake, one sorted file per day and partition.
fn generate(layout: &LakeLayout, total: u64) {
    let book = PriceBook::embedded();
    let per_file = total / (DAYS * PARTITIONS as u64);
    let start = Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap();
    let mut seq = 0u64;
    let mut next_offset = [0u64; PARTITIONS as usize];
    for day in 0..DAYS {
        let mut by_partition: Vec<Vec<(BusPosition, LlmEvent)>> =
            (0..PARTITIONS).map(|_| Vec::new()).collect();
        let mut rng = StdRng::seed_from_u64(day);
        // Requests arrive in time order, so consecutive sequence numbers
        // (a trace's, a session's) are close in time, and trace IDs
        // ordered by time, as the gateway's UUIDv7 trace IDs are.
        let mut times: Vec<i64> = (0..per_file * PARTITIONS as u64)
            .map(|_| rng.gen_range(0..86_400_000))
            .collect();
        times.sort_unstable();
        for ms in times {
            let user = session_user(seq);
            let partition = user / 10 % PARTITIONS;
            let at =
                start + chrono::Duration::days(day as i64) + chrono::Duration::milliseconds(ms);
            let event = synthetic(&book, seq, user, at, &mut rng);
            let offset = next_offset[partition as usize];
            next_offset[partition as usize] += 1;
            by_partition[partition as usize].push((BusPosition { partition, offset }, event));
            seq += 1;
        }
        for (p, rows) in by_partition.iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let refs: Vec<(BusPosition, &LlmEvent)> = rows.iter().map(|(b, e)| (*b, e)).collect();
            let batch = sorted(&[to_record_batch(&refs).unwrap()]).unwrap();
            let date = (start + chrono::Duration::days(day as i64)).date_naive();
            let (first, last) = (rows[0].0.offset, rows[rows.len() - 1].0.offset);
            let path = layout.file_path(date, p as u32, first, last);
            write_atomically(&path, &batch).unwrap();
            tollgate::lake::rollup::write_for(layout, &path, &[batch], WriteMode::New).unwrap();
        }
        eprint!("\rgenerating: day {}/{DAYS}", day + 1);
    }
    eprintln!();
}

/// The user (0..200) whose Claude Code session made request `seq`: a
/// session is one developer's, so all its requests, and its traces',
/// carry one key, and so one team and one bus partition (the bus key is
/// the team). Until v4 every request drew its own team, which put a
/// trace's 5 events in 3 of a day's 4 partition files on average, where
/// the product's lake has them in one.
fn session_user(seq: u64) -> u32 {
    // splitmix64 of the session's number: neighbouring sessions spread
    // over all users.
    let mut z = (seq / EVENTS_PER_SESSION).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) % 200) as u32
}

/// One plausible Claude Code request: sessions of 50 calls, traces of 5,
/// by `user` (of team `user / 10`).
fn synthetic(
    book: &PriceBook,
    seq: u64,
    user: u32,
    at: chrono::DateTime<Utc>,
    rng: &mut StdRng,
) -> LlmEvent {
    let model = MODELS[rng.gen_range(0..MODELS.len())];
    let usage = Usage {
        input_tokens: rng.gen_range(1..5_000),
        output_tokens: rng.gen_range(1..4_000),
        cache_creation_5m_tokens: rng.gen_range(0..20_000),
        cache_creation_1h_tokens: 0,
        cache_read_tokens: rng.gen_range(0..150_000),
        web_search_requests: 0,
        web_fetch_requests: 0,
        ..Usage::default()
    };
    let latency = rng.gen_range(300..30_000u64);
    let q = PriceQuery {
        provider: "anthropic",
        model,
        region: None,
        at,
    };
    let status = if rng.gen_ratio(1, 50) { 529 } else { 200 };
    let team = user / 10;
    LlmEvent {
        event_id: uuid::Uuid::from_u64_pair(seq, rng.r#gen()),
        schema_version: SCHEMA_VERSION,
        trace_id: format!("trace-{:08}", seq / EVENTS_PER_TRACE),
        session_id: Some(format!("session-{:08}", seq / EVENTS_PER_SESSION)),
        agent_id: None,
        parent_agent_id: None,
        request_id: Some(format!("req_{seq:012}")),
        started_at: at,
        ended_at: at + chrono::Duration::milliseconds(latency as i64),
        ttft_ms: Some(latency / 10),
        latency_ms: latency,
        workspace: "acme".into(),
        team: format!("team-{team:02}"),
        // A key belongs to one user (`[[keys]]` names its team and user).
        user: format!("user-{user:03}"),
        key_id: format!("key-{user:03}"),
        metadata: BTreeMap::from([("repo".into(), format!("repo-{}", rng.gen_range(0..50)))]),
        endpoint: "messages".into(),
        provider: "anthropic".into(),
        target: "anthropic".into(),
        region: None,
        model_requested: Some(model.into()),
        model_served: Some(model.into()),
        stream: true,
        status,
        error_type: (status != 200).then(|| "overloaded_error".into()),
        stop_reason: Some("end_turn".into()),
        attempts: vec![Attempt {
            provider: "anthropic".into(),
            target: "anthropic".into(),
            status: Some(status),
            latency_ms: latency,
            error_type: None,
        }],
        cost: Some(price_facts(book, Some(&q), &usage)),
        usage,
        downgrades: Vec::new(),
        client: Some("claude-cli/2.1.197 (external, cli)".into()),
        billed_by: BilledBy::Api,
        credential_fingerprint: None,
        usage_estimated: false,
        origin: None,
        body_digest: None,
    }
}

/// Milliseconds at the given percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// The query API (the real router) on a loopback port over `layout`,
/// with one admin token `bench`.
async fn serve_api(layout: &LakeLayout) -> String {
    use tollgate::config::AdmissionConfig;
    use tollgate::gateway::admission::Admission;
    // `TOLLGATE_BENCH_OBJECT_CACHE_MB`: the bucket read cache's size
    // (`api.object_cache_mb`; default 256).
    let mut limits = tollgate::lake::query::MemoryLimits::default();
    if let Some(mb) = std::env::var("TOLLGATE_BENCH_OBJECT_CACHE_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        limits.object_cache_bytes = mb * 1024 * 1024;
    }
    let lake = Lake::open_with_memory(layout, limits).await.unwrap();
    let config = tollgate::config::ApiConfig {
        admin_tokens: vec!["bench".into()],
        ..Default::default()
    };
    let book = tollgate::pricing::SharedBook::new(PriceBook::embedded());
    let budgets = Admission::new(Vec::new(), book, AdmissionConfig::default(), &[]);
    let state = std::sync::Arc::new(tollgate::api::ApiState::new(lake, &config, budgets));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, tollgate::api::router(state))
            .await
            .unwrap()
    });
    format!("http://{addr}")
}

/// `GET path` against the API: the JSON answer and how long it took.
async fn timed_get(
    http: &reqwest::Client,
    base: &str,
    path: &str,
) -> (serde_json::Value, Duration) {
    let t = Instant::now();
    let r = http
        .get(format!("{base}{path}"))
        .bearer_auth("bench")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    let body: serde_json::Value = r.json().await.unwrap();
    (body, t.elapsed())
}

/// The spend queries measured: name, API path, rows expected.
fn spend_queries() -> Vec<(&'static str, String, usize)> {
    let month = "from=2026-10-01T00:00:00Z&to=2026-10-31T00:00:00Z";
    let ragged = "from=2026-10-01T00:17:00Z&to=2026-10-30T23:41:00Z";
    vec![
        (
            "team spend by day, 30 days",
            format!("/v1/spend?group_by=team,day&{month}"),
            600,
        ),
        (
            "team spend by day, 30 days, ragged edges",
            format!("/v1/spend?group_by=team,day&{ragged}"),
            600,
        ),
        (
            "spend by user x model, one team, 30 days",
            format!("/v1/spend?group_by=user,model&team=team-07&{month}"),
            40,
        ),
        ("team spend, all time", "/v1/spend?group_by=team".into(), 20),
    ]
}

/// Median of `runs` runs of `path`, checking the row count.
async fn median_of(
    runs: usize,
    http: &reqwest::Client,
    base: &str,
    path: &str,
    rows: usize,
) -> f64 {
    let mut times = Vec::new();
    for _ in 0..runs {
        let (body, took) = timed_get(http, base, path).await;
        assert_eq!(body["data"].as_array().unwrap().len(), rows, "{path}");
        times.push(took);
    }
    times.sort();
    percentile(&times, 0.5)
}

async fn measure_tollgate(
    layout: &LakeLayout,
    traces: &[String],
    sessions: &[String],
) -> Vec<(String, f64)> {
    let mut out = measure_api(layout, traces, sessions).await;
    if quick() {
        return out;
    }
    out.push((
        "team spend by day, 30 days, raw events only (no rollups), median of 5".into(),
        raw_team_by_day(layout).await,
    ));
    out
}

/// `TOLLGATE_BENCH_EXPLAIN=<SQL>`: prints `EXPLAIN ANALYZE` of the SQL
/// (run three times first, printing their timings: warm caches) in the
/// API's session; with `TOLLGATE_BENCH_LOCAL=0`, on the lake in a bucket.
/// `TOLLGATE_BENCH_EXPLAIN_LAST=<SQL>` analyzes that statement instead
/// after the three runs (a trace not yet read, with the footers and
/// statistics already warm).
async fn explain(layout: &LakeLayout, sql: &str) {
    let lake = Lake::open(layout).await.unwrap();
    let ctx = lake.unscoped_context().expect("the API session");
    for round in 0..3 {
        let t = Instant::now();
        let df = ctx.sql(sql).await.unwrap();
        let logical = t.elapsed();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let physical = t.elapsed();
        let rows: usize = datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "round {round}: {rows} rows; logical plan {:.1} ms, physical plan {:.1} ms, total {:.1} ms",
            ms(logical),
            ms(physical),
            ms(t.elapsed())
        );
    }
    let last = std::env::var("TOLLGATE_BENCH_EXPLAIN_LAST").unwrap_or_else(|_| sql.to_owned());
    let batches = ctx
        .sql(&format!("EXPLAIN ANALYZE {last}"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&batches).unwrap();
    println!("{text}");
    // Whether the lake's footers and page indexes fit the footer cache
    // (when they do not, lookups keep re-reading them).
    let footers = ctx.runtime_env().cache_manager.get_file_metadata_cache();
    let entries = footers.list_entries();
    let bytes: usize = entries.values().map(|e| e.size_bytes).sum();
    println!(
        "footer cache: {} files, {:.1} MiB ({:.2} MiB a file) of {:.0} MiB",
        entries.len(),
        bytes as f64 / 1048576.0,
        bytes as f64 / 1048576.0 / entries.len().max(1) as f64,
        footers.cache_limit() as f64 / 1048576.0
    );
}

/// `TOLLGATE_BENCH_QUICK=1`: the API's queries on local disk only (no
/// raw-only scan, DuckDB or bucket; with `TOLLGATE_BENCH_LOCAL=0`, in the
/// bucket only), for profiling; any other value also picks the queries
/// whose name contains it (`trace`, `session`, `spend`, `ragged`), run 5
/// times as often.
fn quick() -> bool {
    std::env::var_os("TOLLGATE_BENCH_QUICK").is_some_and(|v| v != "0")
}

/// The name filter of `TOLLGATE_BENCH_QUICK` (see [`quick`]), if any.
fn only() -> Option<String> {
    std::env::var("TOLLGATE_BENCH_QUICK")
        .ok()
        .filter(|v| v != "1" && v != "0")
}

/// Whether the query named `name` is measured (see [`quick`]).
fn picked(name: &str) -> bool {
    only().is_none_or(|only| name.contains(&only))
}

/// How many times each picked query runs (5× when a filter picks them).
fn rounds() -> usize {
    if only().is_some() { 5 } else { 1 }
}

/// Every query of the table through the API over `layout`.
async fn measure_api(
    layout: &LakeLayout,
    traces: &[String],
    sessions: &[String],
) -> Vec<(String, f64)> {
    let base = serve_api(layout).await;
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    // Warm-up: the OS page cache and DataFusion's first planning.
    timed_get(&http, &base, &format!("/v1/traces/{}", traces[0])).await;
    if picked("trace lookup") {
        let mut times = Vec::new();
        for _ in 0..rounds() {
            for id in traces {
                let (view, took) = timed_get(&http, &base, &format!("/v1/traces/{id}")).await;
                times.push(took);
                let events = view["events"].as_array().unwrap().len() as u64;
                assert_eq!(events, EVENTS_PER_TRACE);
            }
        }
        print_slowest(&times);
        if rounds() > 1 {
            // A trace's first lookup reads its pages from the store; later
            // ones find them in the read cache (or the OS page cache).
            let (first, again) = times.split_at_mut(traces.len());
            first.sort();
            again.sort();
            out.push((
                "trace lookup p50, first lookup of a trace".into(),
                percentile(first, 0.5),
            ));
            out.push((
                "trace lookup p99, first lookup of a trace".into(),
                percentile(first, 0.99),
            ));
            out.push((
                "trace lookup p99, trace looked up before".into(),
                percentile(again, 0.99),
            ));
        }
        times.sort();
        out.push(("trace lookup p50".into(), percentile(&times, 0.5)));
        out.push(("trace lookup p99".into(), percentile(&times, 0.99)));
    }
    if picked("session logs") {
        let mut times = Vec::new();
        for _ in 0..rounds() {
            for id in sessions.iter().take(50) {
                let path = format!("/v1/logs?session_id={id}&limit=100");
                let (page, took) = timed_get(&http, &base, &path).await;
                times.push(took);
                let rows = page["data"].as_array().unwrap().len() as u64;
                assert_eq!(rows, EVENTS_PER_SESSION);
            }
        }
        times.sort();
        out.push(("session logs p50".into(), percentile(&times, 0.5)));
    }
    for (name, path, rows) in spend_queries() {
        if picked(name) {
            let ms = median_of(5 * rounds(), &http, &base, &path, rows).await;
            out.push((format!("{name}, median of 5"), ms));
        }
    }
    out
}

/// With `TOLLGATE_BENCH_SLOWEST=N`, prints the N slowest lookups with
/// their place in the run: early ones are cold caches, evenly spread ones
/// something periodic (a listing expiring, a cache evicting).
fn print_slowest(times: &[Duration]) {
    let Some(n) = std::env::var("TOLLGATE_BENCH_SLOWEST")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    let mut ranked: Vec<(usize, Duration)> = times.iter().copied().enumerate().collect();
    ranked.sort_by_key(|&(_, t)| std::cmp::Reverse(t));
    let at: Vec<String> = ranked
        .iter()
        .take(n)
        .map(|(i, t)| format!("#{i} {:.1} ms", t.as_secs_f64() * 1000.0))
        .collect();
    println!("slowest of {} lookups: {}", times.len(), at.join(", "));
}

/// The 30-day team-by-day query on raw events alone, through the query
/// layer: what rollups save.
async fn raw_team_by_day(layout: &LakeLayout) -> f64 {
    let lake = Lake::open(layout).await.unwrap();
    let at = |d: u32| Utc.with_ymd_and_hms(2026, 10, d, 0, 0, 0).unwrap();
    let q = SpendQuery {
        group_by: vec![GroupBy::Team, GroupBy::Day],
        filter: LogFilter {
            from: Some(at(1)),
            to: Some(at(31)),
            ..LogFilter::default()
        },
        limit: 1000,
    };
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let r = lake.spend_raw(&Scope::All, &q).await.unwrap();
        times.push(t.elapsed());
        assert_eq!(r.data.len(), 600);
    }
    times.sort();
    percentile(&times, 0.5)
}

/// Runs `benches/lake_query_duckdb.py`; `None` (with a note) if DuckDB is
/// not available.
fn measure_duckdb(layout: &LakeLayout, ids: &Path) -> Option<serde_json::Value> {
    let site = tools_dir().join("duckdb");
    if !site.join("duckdb").exists() || !site.join("pytz").exists() {
        let ok = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--root-user-action=ignore", "--target"])
            .arg(&site)
            .args(["duckdb==1.4.2", "pytz"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("DuckDB could not be installed with pip; skipping its column");
            return None;
        }
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/lake_query_duckdb.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(layout.events_dir())
        .arg(layout.hourly_dir())
        .arg(ids)
        .env("PYTHONPATH", &site)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "DuckDB run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("duckdb: {}", text.trim());
    serde_json::from_str(text.lines().last()?).ok()
}

/// The same API queries with the lake in a bucket: the generated lake
/// uploaded once to s3s-fs (a Rust S3 server over a local directory, see
/// [`s3s_fs`]) under
/// `<lake>.s3/`, so the files are the very same and only the protocol
/// differs. Uploaded rather than served in place: for an object it did
/// not receive, s3s-fs computes the whole object's MD5 on every GET.
/// `TOLLGATE_BENCH_S3=0` skips it; `None` when it cannot run.
async fn measure_on_s3(
    root: &Path,
    traces: &[String],
    sessions: &[String],
) -> Option<Vec<(String, f64)>> {
    if std::env::var("TOLLGATE_BENCH_S3").as_deref() == Ok("0") {
        return None;
    }
    let server = s3s_fs()?;
    let served = root.with_extension("s3");
    std::fs::create_dir_all(served.join(BENCH_BUCKET)).ok()?;
    let port = free_port();
    let mut child = Command::new(&server)
        .args(["--port", &port.to_string()])
        .args(["--access-key", "bench", "--secret-key", "benchsecret"])
        .arg(&served)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let layout = bucket_layout(BENCH_BUCKET, &endpoint);
    let out = match upload_once(root, &served, &layout).await {
        Ok(()) => match std::env::var("TOLLGATE_BENCH_EXPLAIN") {
            Ok(sql) => {
                explain(&layout, &sql).await;
                None
            }
            Err(_) => Some(measure_api(&layout, traces, sessions).await),
        },
        Err(e) => {
            eprintln!(
                "could not upload the lake to s3s-fs at {endpoint} ({e}); skipping the bucket column"
            );
            None
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    out
}

/// The bucket the bench's lake is uploaded to.
const BENCH_BUCKET: &str = "lake";

/// Uploads every lake file (raw and rollups) under its own key, unless
/// `served/UPLOADED-<table>` says a previous run did.
async fn upload_once(root: &Path, served: &Path, layout: &LakeLayout) -> Result<(), String> {
    let remote = layout.remote().ok_or("not a bucket")?.clone();
    let t = Instant::now();
    let mut bytes = 0u64;
    for table in ["events", "events_hourly", "events_daily"] {
        // `UPLOADED` alone: uploaded before daily rollups existed.
        let legacy = table != "events_daily" && served.join("UPLOADED").exists();
        let done = served.join(format!("UPLOADED-{table}"));
        if legacy || done.exists() {
            continue;
        }
        for entry in walk(&root.join(table)) {
            let key = entry
                .strip_prefix(root)
                .map_err(|e| e.to_string())?
                .to_owned();
            let data = std::fs::read(&entry).map_err(|e| e.to_string())?;
            bytes += data.len() as u64;
            let r = remote.clone();
            tokio::task::spawn_blocking(move || r.put(&key, data, false))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
        std::fs::write(done, "").map_err(|e| e.to_string())?;
    }
    if bytes > 0 {
        println!(
            "uploaded {:.0} MiB to s3s-fs in {:.1} s",
            bytes as f64 / 1048576.0,
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Every Parquet file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out
}

/// The lake at `s3://bucket` on the local S3 server at `endpoint`.
fn bucket_layout(bucket: &str, endpoint: &str) -> LakeLayout {
    let cfg = tollgate::lake::config::LakeConfig {
        url: format!("s3://{bucket}"),
        options: BTreeMap::from([
            ("aws_endpoint".into(), endpoint.into()),
            ("aws_allow_http".into(), "true".into()),
            ("aws_virtual_hosted_style_request".into(), "false".into()),
            ("aws_region".into(), "us-east-1".into()),
            ("aws_access_key_id".into(), "bench".into()),
            ("aws_secret_access_key".into(), "benchsecret".into()),
        ]),
        ..Default::default()
    };
    match tollgate::lake::object::LakeLocation::parse(&cfg, PathBuf::new()).unwrap() {
        tollgate::lake::object::LakeLocation::Object(lake) => LakeLayout::on_object_store(lake),
        tollgate::lake::object::LakeLocation::Local(_) => unreachable!("an s3:// URL"),
    }
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The bucket's server: s3s-fs 0.14.1's file system behind an accept loop
/// that sets TCP_NODELAY (`crates/bench-s3-server`; the `s3s-fs` binary
/// stalled every response ~40 ms on Nagle's algorithm), installed with
/// `cargo install --path` under the tools directory when missing.
fn s3s_fs() -> Option<PathBuf> {
    let root = tools_dir().join("bench-s3-server-0.1.0");
    let bin = root.join("bin/tollgate-bench-s3-server");
    if !bin.exists() {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/bench-s3-server");
        eprintln!(
            "installing {} into {} (a few minutes, once)",
            source.display(),
            root.display()
        );
        let ok = Command::new("cargo")
            .args(["install", "--locked", "--root"])
            .arg(&root)
            .arg("--path")
            .arg(&source)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("the bench's S3 server could not be installed; skipping the bucket column");
            return None;
        }
    }
    Some(bin)
}

/// Where the test and bench tools live (`$TOLLGATE_TOOLS_DIR`, else
/// `~/.cache/tollgate-tools`, as `scripts/install-test-deps.sh` has it).
fn tools_dir() -> PathBuf {
    std::env::var_os("TOLLGATE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tollgate-tools")
        })
}
