//! Prometheus metrics shared by every role.
//!
//! One registry per process, so `/metrics` shows whichever roles run in it.
//! Labels are bounded: teams and models come from config or are folded into
//! `other`; trace IDs never become labels.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
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
    pub bus_appended: IntCounterVec,
    pub bus_append_errors: IntCounterVec,
    pub bus_delivery_failures: IntCounter,
    pub bus_consume_errors: IntCounterVec,
    pub bus_journal_backlog: IntGauge,
    pub bus_spilled: IntCounter,
    pub bus_broker_up: IntGauge,
    pub accountant_duplicates: IntCounter,
    pub budget_utilisation: prometheus::GaugeVec,
    pub downgrades: IntCounterVec,
    pub cache_lookups: IntCounterVec,
    pub budget_alerts: IntCounterVec,
    pub budget_refusals: IntCounterVec,
    pub rate_limit_refusals: IntCounterVec,
    pub reserved_usd: prometheus::Gauge,
    pub alerts_delivered: IntCounterVec,
    pub alert_delivery_failures: IntCounterVec,
    pub sink_rows: IntCounter,
    pub sink_files: IntCounter,
    pub sink_flush_seconds: Histogram,
    pub sink_undecodable: IntCounter,
    pub sink_skipped_duplicates: IntCounter,
    pub cost_usd: prometheus::CounterVec,
    pub subscription_value_usd: prometheus::CounterVec,
    pub unpriced: IntCounterVec,
    pub accountant_events: IntCounter,
    pub upstream_duration: HistogramVec,
    pub upstream_attempts: IntCounterVec,
    pub request_errors: IntCounterVec,
    pub in_flight: IntGauge,
    pub request_bytes: Histogram,
    pub consumer_lag: prometheus::IntGaugeVec,
    pub api_requests: IntCounterVec,
    pub api_duration: HistogramVec,
    pub lake_compacted_files: IntCounter,
    pub build_info: prometheus::IntGaugeVec,
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
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
            bus_broker_up: gauge(
                "tollgate_bus_broker_up",
                "1 while Kafka acknowledges the gateway's events, 0 during an outage",
            ),
            accountant_duplicates: counter(
                "tollgate_accountant_duplicate_events_total",
                "Raw events seen twice on the bus (a re-sent journal batch) and priced once",
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
            bus_appended: counter_vec(
                "tollgate_bus_appended_total",
                "Records appended to the bus, by topic",
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
            unpriced: counter_vec(
                "tollgate_unpriced_events_total",
                "Events with usage whose model no price table matches",
                &["model"],
            ),
            accountant_events: counter(
                "tollgate_accountant_events_total",
                "Events priced by the accountant",
            ),
            upstream_duration: histogram_vec(
                "tollgate_upstream_duration_seconds",
                "Time from sending one attempt upstream to its answer's headers, by provider",
                &["provider"],
                LATENCY_BUCKETS,
            ),
            upstream_attempts: counter_vec(
                "tollgate_upstream_attempts_total",
                "Tries at a provider, by provider, kind (first, retry, fallback) and outcome (2xx, 4xx, 5xx, error)",
                &["provider", "kind", "outcome"],
            ),
            request_errors: counter_vec(
                "tollgate_request_errors_total",
                "Requests that did not end normally, by provider and error type",
                &["provider", "error_type"],
            ),
            in_flight: gauge(
                "tollgate_requests_in_flight",
                "Requests the gateway is serving right now",
            ),
            request_bytes: histogram(
                "tollgate_request_body_bytes",
                "Size of request bodies the gateway received",
                &[
                    1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
                ],
            ),
            consumer_lag: {
                let g = prometheus::IntGaugeVec::new(
                    Opts::new(
                        "tollgate_bus_consumer_lag_records",
                        "Records on the bus a consumer group has not read yet, by topic and group",
                    ),
                    &["topic", "group"],
                )
                .expect("valid metric");
                registry
                    .register(Box::new(g.clone()))
                    .expect("unique metric");
                g
            },
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
            build_info: {
                let g = prometheus::IntGaugeVec::new(
                    Opts::new("tollgate_build_info", "Always 1; the version as a label"),
                    &["version"],
                )
                .expect("valid metric");
                registry
                    .register(Box::new(g.clone()))
                    .expect("unique metric");
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

/// A model name fit to be a label. Callers pass the model the provider
/// served (a bounded set), never the one a client asked for, which could be
/// anything; what is missing or odd-looking becomes `other`.
pub fn model_label(served: Option<&str>) -> &str {
    match served {
        Some(m)
            if m.len() <= 96
                && m.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._:@/".contains(&b)) =>
        {
            m
        }
        _ => "other",
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

/// `/metrics` and `/health`, served by every role on its listener.
pub fn router() -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .route(
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
