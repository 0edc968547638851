//! Prometheus metrics shared by every role.
//!
//! One registry per process, so `/metrics` shows whichever roles run in it.
//! Labels are bounded: teams and models come from config or are folded into
//! `other`; trace IDs never become labels.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{LazyLock, RwLock};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric tollgate exports.
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub ttft: HistogramVec,
    pub overhead: Histogram,
    pub tokens: IntCounterVec,
    pub auth_failures: IntCounter,
    pub client_errors: IntCounterVec,
    pub handoff_queue_depth: IntGauge,
    pub handoff_overflow: IntCounter,
    pub events_lost: IntCounter,
    pub event_fields_truncated: IntCounterVec,
    pub handoff_overflow_lost: IntCounter,
    pub bus_appended: IntCounterVec,
    pub bus_handed: IntCounterVec,
    pub bus_append_errors: IntCounterVec,
    pub bus_delivery_failures: IntCounter,
    pub bus_consume_errors: IntCounterVec,
    pub bus_journal_backlog: IntGauge,
    pub bus_spilled: IntCounter,
    pub bus_broker_up: IntGauge,
    pub accountant_duplicates: IntCounter,
    pub budget_ledgers_forgotten: IntCounter,
    pub guard_trips: IntCounterVec,
    pub guard_refusals: IntCounterVec,
    pub budget_utilisation: prometheus::GaugeVec,
    pub downgrades: IntCounterVec,
    pub cache_lookups: IntCounterVec,
    pub budget_alerts: IntCounterVec,
    pub budget_refusals: IntCounterVec,
    pub rate_limit_refusals: IntCounterVec,
    pub reserved_usd: prometheus::Gauge,
    pub alerts_delivered: IntCounterVec,
    pub alert_delivery_failures: IntCounterVec,
    pub alert_drops: IntCounterVec,
    pub sink_rows: IntCounter,
    pub sink_files: IntCounter,
    pub sink_flush_seconds: Histogram,
    pub sink_undecodable: IntCounter,
    pub sink_skipped_duplicates: IntCounter,
    pub cost_usd: prometheus::CounterVec,
    pub subscription_value_usd: prometheus::CounterVec,
    pub provisional: IntCounterVec,
    pub accountant_events: IntCounter,
    pub upstream_duration: HistogramVec,
    pub upstream_attempts: IntCounterVec,
    pub request_errors: IntCounterVec,
    pub in_flight: IntGauge,
    /// Client connections open on this process's listeners: near
    /// `server.max_connections`, new ones wait to be accepted.
    pub http_connections: IntGauge,
    pub request_bytes: Histogram,
    pub response_bytes: HistogramVec,
    pub consumer_lag: IntGaugeVec,
    pub api_requests: IntCounterVec,
    pub api_duration: HistogramVec,
    pub lake_compacted_files: IntCounter,
    pub lake_cached_reads: IntCounterVec,
    pub build_info: IntGaugeVec,
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
];
/// Body sizes: 256 B to 32 MiB (the default `max_body_bytes`), ×4.
const BYTES_BUCKETS: &[f64] = &[
    256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 33554432.0,
];

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let histogram_vec = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let h = HistogramVec::new(opts, labels).expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let h = Histogram::with_opts(opts).expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let handoff_queue_depth = IntGauge::new(
            "tollgate_events_queue_depth",
            "Events waiting between gateway and bus",
        )
        .expect("valid metric");
        registry
            .register(Box::new(handoff_queue_depth.clone()))
            .expect("unique metric");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        registry
            .register(Box::new(ProcessCollector::new()))
            .expect("unique metric");
        Metrics {
            cache_lookups: counter_vec(
                "tollgate_cache_lookups_total",
                "Response cache lookups of cached routes, by result (hit, miss)",
                &["result"],
            ),
            downgrades: counter_vec(
                "tollgate_downgrades_total",
                "Request features removed for a provider that would reject them, by provider and kind",
                &["provider", "kind"],
            ),
            budget_utilisation: {
                let g = prometheus::GaugeVec::new(
                    Opts::new(
                        "tollgate_budget_utilisation_ratio",
                        "Spent / limit of each budget ledger in its current period (1 = spent)",
                    ),
                    &["budget", "subject"],
                )
                .expect("valid metric");
                registry
                    .register(Box::new(g.clone()))
                    .expect("unique metric");
                g
            },
            budget_alerts: counter_vec(
                "tollgate_budget_alerts_total",
                "Budget threshold alerts raised, by budget",
                &["budget"],
            ),
            budget_refusals: counter_vec(
                "tollgate_budget_refusals_total",
                "Requests refused because a budget would be exceeded, by budget",
                &["budget"],
            ),
            rate_limit_refusals: counter_vec(
                "tollgate_rate_limit_refusals_total",
                "Requests refused by a rate limit, by scope and kind (requests or tokens)",
                &["scope", "kind"],
            ),
            reserved_usd: {
                let g = prometheus::Gauge::new(
                    "tollgate_budget_reserved_usd",
                    "USD reserved by in-flight and not yet settled requests on this gateway",
                )
                .expect("valid metric");
                registry
                    .register(Box::new(g.clone()))
                    .expect("unique metric");
                g
            },
            alerts_delivered: counter_vec(
                "tollgate_alert_deliveries_total",
                "Budget alerts delivered to a webhook, by format",
                &["format"],
            ),
            alert_delivery_failures: counter_vec(
                "tollgate_alert_delivery_failures_total",
                "Failed webhook deliveries (retried), by format",
                &["format"],
            ),
            alert_drops: counter_vec(
                "tollgate_alert_drops_total",
                "Alerts a webhook never got, by format and reason (queue_full, retries_exhausted, receiver_stopped)",
                &["format", "reason"],
            ),
            bus_delivery_failures: counter(
                "tollgate_bus_delivery_failures_total",
                "Records Kafka did not acknowledge (retried from the journal)",
            ),
            bus_consume_errors: counter_vec(
                "tollgate_bus_consume_errors_total",
                "Errors reading from or committing to the bus, by topic",
                &["topic"],
            ),
            bus_journal_backlog: gauge(
                "tollgate_bus_journal_backlog_events",
                "Events in the gateway's local journal not yet acknowledged by Kafka",
            ),
            bus_spilled: counter(
                "tollgate_bus_spilled_events_total",
                "Events that waited in the local journal through a Kafka outage or stall",
            ),
            bus_broker_up: {
                let g = gauge(
                    "tollgate_bus_broker_up",
                    "0 while a gateway's journal cannot deliver to Kafka (an outage), else 1",
                );
                // No outage seen yet: processes without a journal (other
                // roles, the embedded bus) must not read as one.
                g.set(1);
                g
            },
            accountant_duplicates: counter(
                "tollgate_accountant_duplicate_events_total",
                "Raw events seen twice on the bus (a re-sent journal batch) and priced once",
            ),
            budget_ledgers_forgotten: counter(
                "tollgate_budget_ledgers_forgotten_total",
                "Session and agent ledgers forgotten (past max_subjects_per_key, or idle)",
            ),
            guard_trips: counter_vec(
                "tollgate_guard_trips_total",
                "Runaway guards tripped by a session, by guard",
                &["guard"],
            ),
            guard_refusals: counter_vec(
                "tollgate_guard_refusals_total",
                "Requests refused because a guard blocked their session, by guard",
                &["guard"],
            ),
            requests: counter_vec(
                "tollgate_requests_total",
                "Requests answered, by provider, model, status and team",
                &["provider", "model", "status", "team"],
            ),
            request_duration: histogram_vec(
                "tollgate_request_duration_seconds",
                "Whole request duration as the client saw it",
                &["provider", "model"],
                LATENCY_BUCKETS,
            ),
            ttft: histogram_vec(
                "tollgate_time_to_first_token_seconds",
                "Time from request to the first content delta of a stream",
                &["provider", "model"],
                LATENCY_BUCKETS,
            ),
            overhead: histogram(
                "tollgate_gateway_overhead_seconds",
                "Time tollgate spends before forwarding a request upstream",
                OVERHEAD_BUCKETS,
            ),
            tokens: counter_vec(
                "tollgate_tokens_total",
                "Tokens by class, team and model",
                &["class", "team", "model"],
            ),
            auth_failures: counter(
                "tollgate_auth_failures_total",
                "Requests refused for a missing or unknown key",
            ),
            client_errors: counter_vec(
                "tollgate_client_errors_total",
                "Requests refused by tollgate before forwarding, by reason",
                &["reason"],
            ),
            handoff_queue_depth,
            handoff_overflow: counter(
                "tollgate_events_handoff_overflow_total",
                "Events that found the hand-off queue full and waited for room",
            ),
            events_lost: counter(
                "tollgate_events_lost_total",
                "Events that could not be recorded at all",
            ),
            event_fields_truncated: counter_vec(
                "tollgate_event_fields_truncated_total",
                "Event fields cut to their length cap (from a request or an upstream answer), by field",
                &["field"],
            ),
            handoff_overflow_lost: counter(
                "tollgate_events_handoff_overflow_lost_total",
                "Events lost because the hand-off queue and its overflow room were both full (also in tollgate_events_lost_total)",
            ),
            bus_appended: counter_vec(
                "tollgate_bus_appended_total",
                "Records appended to the bus, by topic",
                &["topic"],
            ),
            bus_handed: counter_vec(
                "tollgate_bus_handed_over_total",
                "Records a consumer in the same process took as its producer held them instead of decoding their bytes (embedded bus), by topic",
                &["topic"],
            ),
            bus_append_errors: counter_vec(
                "tollgate_bus_append_errors_total",
                "Failed bus appends (retried), by topic",
                &["topic"],
            ),
            sink_rows: counter("tollgate_sink_rows_total", "Rows written to the lake"),
            sink_files: counter(
                "tollgate_sink_files_total",
                "Parquet files written to the lake",
            ),
            sink_flush_seconds: histogram(
                "tollgate_sink_flush_seconds",
                "Time to write and publish one Parquet file",
                LATENCY_BUCKETS,
            ),
            sink_undecodable: counter(
                "tollgate_sink_undecodable_total",
                "Bus records the sink could not decode as events",
            ),
            sink_skipped_duplicates: counter(
                "tollgate_sink_skipped_duplicates_total",
                "Bus records skipped because the lake already holds them",
            ),
            cost_usd: {
                let c = prometheus::CounterVec::new(
                    Opts::new("tollgate_cost_usd_total", "Spend in USD by team and model"),
                    &["team", "model"],
                )
                .expect("valid metric");
                registry
                    .register(Box::new(c.clone()))
                    .expect("unique metric");
                c
            },
            subscription_value_usd: {
                let c = prometheus::CounterVec::new(
                    Opts::new(
                        "tollgate_subscription_value_usd_total",
                        "List-price value in USD of requests billed to the client's own subscription (not spend), by team and user",
                    ),
                    &["team", "user"],
                )
                .expect("valid metric");
                registry
                    .register(Box::new(c.clone()))
                    .expect("unique metric");
                c
            },
            provisional: counter_vec(
                "tollgate_provisional_events_total",
                "Events priced provisionally: no price table entry matches their model (priced at its line's latest entry or the unknown-model rates, and counted in budgets)",
                &["model"],
            ),
            accountant_events: counter(
                "tollgate_accountant_events_total",
                "Events priced by the accountant",
            ),
            upstream_duration: histogram_vec(
                "tollgate_upstream_duration_seconds",
                "Time from sending one attempt upstream to its answer's headers (or its failure), by provider and target",
                &["provider", "target"],
                LATENCY_BUCKETS,
            ),
            upstream_attempts: counter_vec(
                "tollgate_upstream_attempts_total",
                "Tries at a provider, by provider, target, kind (first, retry, fallback) and outcome (the HTTP status, or the error type when none came)",
                &["provider", "target", "kind", "outcome"],
            ),
            request_errors: counter_vec(
                "tollgate_request_errors_total",
                "Requests that did not end normally, by provider (none: refused before any) and error type",
                &["provider", "error_type"],
            ),
            in_flight: gauge(
                "tollgate_requests_in_flight",
                "Requests the gateway is serving right now (authenticated, answer not ended)",
            ),
            http_connections: gauge(
                "tollgate_http_connections_open",
                "Client connections open on this process's listeners (each listener serves at most server.max_connections)",
            ),
            request_bytes: histogram(
                "tollgate_request_body_bytes",
                "Size of request bodies the gateway received",
                BYTES_BUCKETS,
            ),
            response_bytes: histogram_vec(
                "tollgate_response_body_bytes",
                "Size of upstream answers streamed to the client, by provider",
                &["provider"],
                BYTES_BUCKETS,
            ),
            consumer_lag: gauge_vec(
                "tollgate_bus_consumer_lag_records",
                "Records on a topic that this process's consumers of a group have not read yet (end offset - position, summed over their partitions)",
                &["topic", "group"],
            ),
            api_requests: counter_vec(
                "tollgate_api_requests_total",
                "Query API requests, by endpoint and status",
                &["endpoint", "status"],
            ),
            api_duration: histogram_vec(
                "tollgate_api_request_duration_seconds",
                "Query API answer time, by endpoint",
                &["endpoint"],
                LATENCY_BUCKETS,
            ),
            lake_compacted_files: counter(
                "tollgate_lake_compacted_files_total",
                "Small lake files merged into larger sorted ones",
            ),
            lake_cached_reads: counter_vec(
                "tollgate_lake_bucket_reads_total",
                "Reads of a bucket lake's objects by the query API, by whether its read cache had them (result=hit) or the bucket was asked (result=miss)",
                &["result"],
            ),
            build_info: {
                let g = gauge_vec(
                    "tollgate_build_info",
                    "Always 1; the version as a label",
                    &["version"],
                );
                g.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
                g
            },
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Most model names outside the exact set that a pattern admits as labels.
const MAX_PATTERN_MODEL_LABELS: usize = 64;

/// Which model names may be label values: the configured and catalogued
/// names exactly, and names a pattern (the price tables) accepts, up to
/// [`MAX_PATTERN_MODEL_LABELS`] distinct ones. Anything else is `other`.
#[derive(Default)]
struct ModelLabels {
    exact: HashSet<String>,
    patterns: Vec<ModelPattern>,
    admitted: HashSet<String>,
}

/// A test of model names (whether a price table prices the name).
pub type ModelPattern = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// The process's model label registry (filled at start-up).
static MODEL_LABELS: LazyLock<RwLock<ModelLabels>> = LazyLock::new(RwLock::default);

/// Reads the registry (a poisoned lock still holds valid sets).
fn model_labels() -> std::sync::RwLockReadGuard<'static, ModelLabels> {
    MODEL_LABELS.read().unwrap_or_else(|p| p.into_inner())
}

/// Adds model names that may be label values as they are (the catalog's,
/// the configuration's). Called once at start-up by each process.
pub fn allow_model_labels(names: impl IntoIterator<Item = String>) {
    let mut labels = MODEL_LABELS.write().unwrap_or_else(|p| p.into_inner());
    labels.exact.extend(names);
}

/// Adds a test admitting further model names (a price table's pattern):
/// the first [`MAX_PATTERN_MODEL_LABELS`] distinct names it accepts become
/// labels.
pub fn allow_model_label_pattern(pattern: ModelPattern) {
    let mut labels = MODEL_LABELS.write().unwrap_or_else(|p| p.into_inner());
    labels.patterns.push(pattern);
}

/// A model name fit to be a label: a configured or catalogued model, or
/// one of a bounded number a price table knows; whatever an upstream (or
/// a client) makes up becomes `other`, so label values stay bounded.
pub fn model_label(served: Option<&str>) -> &str {
    let Some(m) = served.filter(|m| m.len() <= 96) else {
        return "other";
    };
    {
        let labels = model_labels();
        if labels.exact.contains(m) || labels.admitted.contains(m) {
            return m;
        }
        if labels.admitted.len() >= MAX_PATTERN_MODEL_LABELS
            || !labels.patterns.iter().any(|p| p(m))
        {
            return "other";
        }
    }
    let mut labels = MODEL_LABELS.write().unwrap_or_else(|p| p.into_inner());
    if labels.admitted.len() < MAX_PATTERN_MODEL_LABELS {
        labels.admitted.insert(m.to_owned());
        m
    } else {
        "other"
    }
}

/// An error type fit to be a label: provider error types and tollgate's
/// own reasons are short snake_case words; anything else is `other`.
pub fn error_label(error_type: &str) -> &str {
    if error_type.len() <= 48
        && error_type
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        error_type
    } else {
        "other"
    }
}

/// A consumer group fit to be a label: a name with a per-process random
/// suffix (`tollgate-budget-view-<uuid>`, as readers were named before
/// they left consumer groups) loses it, so labels stay few.
pub fn group_label(group: &str) -> &str {
    match group.rsplit_once('-') {
        Some((base, id)) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => base,
        _ => group,
    }
}

/// One consumer's share of `tollgate_bus_consumer_lag_records{topic,group}`:
/// several consumers of a group in one process add up, and a consumer that
/// goes away takes its share with it.
#[derive(Debug)]
pub struct ConsumerLag {
    gauge: IntGauge,
    mine: AtomicI64,
}

impl ConsumerLag {
    pub fn new(topic: &str, group: &str) -> ConsumerLag {
        ConsumerLag {
            gauge: METRICS
                .consumer_lag
                .with_label_values(&[topic, group_label(group)]),
            mine: AtomicI64::new(0),
        }
    }

    /// Sets this consumer's lag (records not yet read).
    pub fn set(&self, lag: u64) {
        let lag = i64::try_from(lag).unwrap_or(i64::MAX);
        let before = self.mine.swap(lag, Ordering::AcqRel);
        self.gauge.add(lag - before);
    }
}

impl Drop for ConsumerLag {
    fn drop(&mut self) {
        self.gauge.sub(self.mine.swap(0, Ordering::AcqRel));
    }
}

/// The standard `process_*` metrics (CPU, memory, file descriptors, start
/// time, threads), read from `/proc/self` at each scrape; nothing on
/// systems without it. (The prometheus crate's own collector would pull in
/// `procfs`.)
struct ProcessCollector {
    descs: Vec<prometheus::core::Desc>,
    cpu: prometheus::Counter,
    resident: prometheus::Gauge,
    virtual_memory: prometheus::Gauge,
    open_fds: prometheus::Gauge,
    max_fds: prometheus::Gauge,
    start_time: prometheus::Gauge,
    threads: prometheus::Gauge,
}

impl ProcessCollector {
    fn new() -> ProcessCollector {
        let gauge = |name: &str, help: &str| prometheus::Gauge::new(name, help).expect("valid");
        let cpu = prometheus::Counter::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds",
        )
        .expect("valid");
        let resident = gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
        );
        let virtual_memory = gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
        );
        let open_fds = gauge("process_open_fds", "Number of open file descriptors");
        let max_fds = gauge("process_max_fds", "Maximum number of open file descriptors");
        let start_time = gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
        );
        let threads = gauge("process_threads", "Number of OS threads in the process");
        use prometheus::core::Collector;
        let descs = [
            cpu.desc(),
            resident.desc(),
            virtual_memory.desc(),
            open_fds.desc(),
            max_fds.desc(),
            start_time.desc(),
            threads.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        ProcessCollector {
            descs,
            cpu,
            resident,
            virtual_memory,
            open_fds,
            max_fds,
            start_time,
            threads,
        }
    }

    /// Reads `/proc/self`; false where there is none.
    fn refresh(&self) -> bool {
        // Linux reports times in USER_HZ, which is 100 on every platform.
        const TICKS: f64 = 100.0;
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return false;
        };
        // Fields after the command (which may hold spaces), from field 3.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            let total = (utime + stime) / TICKS;
            let delta = total - self.cpu.get();
            if delta > 0.0 {
                self.cpu.inc_by(delta);
            }
        }
        if let Some(threads) = field(20) {
            self.threads.set(threads);
        }
        if let Some(vsize) = field(23) {
            self.virtual_memory.set(vsize);
        }
        let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        if let (Some(start), Some(boot)) = (field(22), boot_time) {
            self.start_time.set(boot + start / TICKS);
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            let rss_kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
            if let Some(kib) = rss_kib {
                self.resident.set(kib * 1024.0);
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.count() as f64);
        }
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            let max = limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<f64>().ok());
            if let Some(max) = max {
                self.max_fds.set(max);
            }
        }
        true
    }
}

impl prometheus::core::Collector for ProcessCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        if !self.refresh() {
            return Vec::new();
        }
        [
            self.cpu.collect(),
            self.resident.collect(),
            self.virtual_memory.collect(),
            self.open_fds.collect(),
            self.max_fds.collect(),
            self.start_time.collect(),
            self.threads.collect(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// `/metrics` and `/health`, served by every role on its listener (or
/// on `server.metrics_listen` alone, see [`health_router`]).
pub fn router() -> axum::Router {
    health_router().route("/metrics", axum::routing::get(scrape))
}

/// `/health` alone: what the gateway and API listeners keep when metrics
/// have their own listener (a health check reveals nothing).
pub fn health_router() -> axum::Router {
    axum::Router::new().route(
        "/health",
        axum::routing::get(|| async { http::StatusCode::OK }),
    )
}

/// Prometheus scrape endpoint (unauthenticated, like most exporters;
/// labels carry no secrets or trace IDs).
async fn scrape() -> ([(http::HeaderName, &'static str); 1], String) {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        METRICS.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throwaway_group_ids_lose_their_random_suffix_and_other_names_stay() {
        assert_eq!(
            group_label("tollgate-budget-view-0123456789abcdef0123456789abcdef"),
            "tollgate-budget-view"
        );
        assert_eq!(group_label("tollgate-sink"), "tollgate-sink");
        assert_eq!(group_label("tollgate-restore-xyz"), "tollgate-restore-xyz");
    }

    #[test]
    fn only_known_models_become_labels_and_patterns_admit_a_bounded_number() {
        allow_model_labels(["label-test-model".to_owned()]);
        allow_model_label_pattern(Box::new(|m| m.starts_with("label-test-dated-")));
        assert_eq!(model_label(Some("label-test-model")), "label-test-model");
        assert_eq!(model_label(Some("made-up-by-upstream-1")), "other");
        assert_eq!(model_label(None), "other");
        let distinct: HashSet<String> = (0..1000)
            .map(|i| model_label(Some(&format!("label-test-dated-{i}"))).to_owned())
            .collect();
        assert!(
            distinct.len() <= MAX_PATTERN_MODEL_LABELS + 1,
            "{}",
            distinct.len()
        );
        assert!(distinct.contains("label-test-dated-0"));
        assert!(distinct.contains("other"));
    }

    #[test]
    fn only_short_snake_case_error_types_become_labels() {
        assert_eq!(error_label("overloaded_error"), "overloaded_error");
        assert_eq!(error_label("rate_limited"), "rate_limited");
        assert_eq!(error_label("Some Upstream Text!"), "other");
        assert_eq!(error_label(&"x".repeat(49)), "other");
    }

    #[test]
    fn consumers_of_one_group_add_up_and_take_their_share_when_dropped() {
        let gauge = || {
            METRICS
                .consumer_lag
                .with_label_values(&["test.lag.v1", "test-group"])
                .get()
        };
        let a = ConsumerLag::new("test.lag.v1", "test-group");
        let b = ConsumerLag::new("test.lag.v1", "test-group");
        a.set(10);
        b.set(5);
        assert_eq!(gauge(), 15);
        a.set(3);
        assert_eq!(gauge(), 8);
        drop(b);
        assert_eq!(gauge(), 3);
        drop(a);
        assert_eq!(gauge(), 0);
    }

    #[test]
    fn exposition_has_build_info_and_process_metrics() {
        let text = METRICS.render();
        assert!(
            text.contains(&format!(
                "tollgate_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(text.contains("tollgate_bus_broker_up 1"), "{text}");
        if cfg!(target_os = "linux") {
            for name in [
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "process_open_fds",
                "process_start_time_seconds",
                "process_threads",
            ] {
                let line = text
                    .lines()
                    .find(|l| l.starts_with(&format!("{name} ")))
                    .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
                let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
                assert!(value > 0.0 || name == "process_cpu_seconds_total", "{line}");
            }
        }
    }
}
