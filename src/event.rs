//! `LlmEvent`: the one record every role shares.
//!
//! The gateway creates one per request, the bus carries it as JSON, the sink
//! stores it as one Parquet row and the query API reads it back. Keeping the
//! serde form and the Arrow schema side by side here means a field added to
//! the event is added to the lake in the same change.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Decimal128Builder, Int64Builder, ListBuilder, MapBuilder,
    RecordBatch, StringBuilder, StructBuilder, TimestampMillisecondBuilder, UInt16Builder,
    UInt32Builder,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version of the event's shape; bumped when a field changes meaning.
pub const SCHEMA_VERSION: u16 = 1;

/// Token and request counts of one call, every class kept apart so that
/// pricing can be recomputed from facts (`tollgate reprice`), with the
/// billing facts the response states (speed, inference geography, service
/// tier, per-iteration usage).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_5m_tokens: u64,
    pub cache_creation_1h_tokens: u64,
    pub cache_read_tokens: u64,
    pub web_search_requests: u64,
    pub web_fetch_requests: u64,
    /// `usage.speed` (`standard` / `fast`): fast mode has its own rates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<String>,
    /// `usage.inference_geo` (`us` is US-only inference, at a premium).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_geo: Option<String>,
    /// `usage.service_tier` (`standard` / `priority` / `batch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    /// `usage.iterations`: sampling steps (compaction, advisor, fallback,
    /// message) each naming its own model, billed at that model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iterations: Vec<Iteration>,
    /// `usage.fallback_credit` was redeemed: the request is billed as if
    /// wholly on the retry model.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fallback_credit_redeemed: bool,
}

/// One entry of `usage.iterations`: its kind (`type`), the model that ran
/// it (absent: the request's model) and its token counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Iteration {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub usage: Usage,
}

/// A JSON number as a count (absent or not a count: 0).
fn count(v: Option<&serde_json::Value>) -> u64 {
    v.and_then(|x| x.as_u64()).unwrap_or(0)
}

/// A JSON string field as an owned string.
fn text(v: Option<&serde_json::Value>) -> Option<String> {
    v.and_then(|x| x.as_str()).map(str::to_owned)
}

/// Whether `usage.fallback_credit` says the credit was redeemed: `true`,
/// an object whose `redeemed` is true (or that has no `redeemed` flag), or
/// a positive amount.
fn redeemed(v: Option<&serde_json::Value>) -> bool {
    match v {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::Object(o)) => o
            .get("redeemed")
            .map_or(!o.is_empty(), |r| r.as_bool().unwrap_or(false)),
        Some(serde_json::Value::Number(n)) => n.as_f64().is_some_and(|f| f > 0.0),
        _ => false,
    }
}

impl Usage {
    /// Reads Anthropic's `usage` object as the API returns it.
    ///
    /// When `cache_creation` splits writes into 5-minute and 1-hour ones the
    /// split is used; otherwise every cache write counts as 5-minute, which
    /// is what the API bills when no TTL is given.
    pub fn from_anthropic_json(v: &serde_json::Value) -> Usage {
        let mut u = Usage::token_counts(v);
        u.speed = text(v.get("speed"));
        u.inference_geo = text(v.get("inference_geo"));
        u.service_tier = text(v.get("service_tier"));
        u.iterations = v
            .get("iterations")
            .and_then(|i| i.as_array())
            .map(|items| items.iter().map(Iteration::from_json).collect())
            .unwrap_or_default();
        u.fallback_credit_redeemed = redeemed(v.get("fallback_credit"));
        u
    }

    /// The token and request counts of a `usage` object (or an iteration).
    fn token_counts(v: &serde_json::Value) -> Usage {
        let split = v.get("cache_creation").filter(|c| c.is_object());
        let (cache_5m, cache_1h) = match split {
            Some(c) => (
                count(c.get("ephemeral_5m_input_tokens")),
                count(c.get("ephemeral_1h_input_tokens")),
            ),
            None => (count(v.get("cache_creation_input_tokens")), 0),
        };
        let server = v.get("server_tool_use");
        Usage {
            input_tokens: count(v.get("input_tokens")),
            output_tokens: count(v.get("output_tokens")),
            cache_creation_5m_tokens: cache_5m,
            cache_creation_1h_tokens: cache_1h,
            cache_read_tokens: count(v.get("cache_read_input_tokens")),
            web_search_requests: count(server.and_then(|s| s.get("web_search_requests"))),
            web_fetch_requests: count(server.and_then(|s| s.get("web_fetch_requests"))),
            ..Usage::default()
        }
    }

    /// Whether anything was counted: tokens, tool requests or iterations.
    pub fn is_empty(&self) -> bool {
        self.input_tokens == 0
            && self.output_tokens == 0
            && self.cache_creation_5m_tokens == 0
            && self.cache_creation_1h_tokens == 0
            && self.cache_read_tokens == 0
            && self.web_search_requests == 0
            && self.web_fetch_requests == 0
            && self.iterations.is_empty()
    }

    /// Folds a later usage report of the same message into this one.
    ///
    /// Streaming usage is cumulative: `message_delta` repeats the totals so
    /// far, so a field the later report carries (non-zero) wins.
    pub fn merge_cumulative(&mut self, later: &Usage) {
        let take = |mine: &mut u64, theirs: u64| {
            if theirs != 0 {
                *mine = theirs;
            }
        };
        take(&mut self.input_tokens, later.input_tokens);
        take(&mut self.output_tokens, later.output_tokens);
        take(
            &mut self.cache_creation_5m_tokens,
            later.cache_creation_5m_tokens,
        );
        take(
            &mut self.cache_creation_1h_tokens,
            later.cache_creation_1h_tokens,
        );
        take(&mut self.cache_read_tokens, later.cache_read_tokens);
        take(&mut self.web_search_requests, later.web_search_requests);
        take(&mut self.web_fetch_requests, later.web_fetch_requests);
        let text = |mine: &mut Option<String>, theirs: &Option<String>| {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        };
        text(&mut self.speed, &later.speed);
        text(&mut self.inference_geo, &later.inference_geo);
        text(&mut self.service_tier, &later.service_tier);
        if !later.iterations.is_empty() {
            self.iterations.clone_from(&later.iterations);
        }
        self.fallback_credit_redeemed |= later.fallback_credit_redeemed;
    }
}

impl Iteration {
    /// One entry of `usage.iterations`.
    fn from_json(v: &serde_json::Value) -> Iteration {
        Iteration {
            kind: text(v.get("type")).unwrap_or_else(|| "message".to_owned()),
            model: text(v.get("model")),
            usage: Usage::token_counts(v),
        }
    }
}

/// One try at one target: retries and fallbacks each add one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub provider: String,
    pub target: String,
    /// HTTP status the target answered, absent when it never answered.
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error_type: Option<String>,
}

/// One request through the gateway, as recorded (schema v1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmEvent {
    pub event_id: Uuid,
    pub schema_version: u16,
    pub trace_id: String,
    pub session_id: Option<String>,
    /// Claude Code's `x-claude-code-agent-id`: the subagent that sent the
    /// request (absent for the main agent), so a session's spend splits
    /// per agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Claude Code's `x-claude-code-parent-agent-id`: the agent that
    /// started this one, the edge of the session's agent tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_agent_id: Option<String>,
    /// The provider's request id (`request-id` header or message id).
    pub request_id: Option<String>,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub ttft_ms: Option<u64>,
    pub latency_ms: u64,
    pub workspace: String,
    pub team: String,
    pub user: String,
    pub key_id: String,
    pub metadata: BTreeMap<String, String>,
    pub endpoint: String,
    pub provider: String,
    pub target: String,
    pub region: Option<String>,
    pub model_requested: Option<String>,
    pub model_served: Option<String>,
    pub stream: bool,
    /// HTTP status tollgate answered the client with.
    pub status: u16,
    /// Why the request did not complete normally (provider error type,
    /// `client_disconnected`, `upstream_timeout`, …).
    pub error_type: Option<String>,
    pub stop_reason: Option<String>,
    pub attempts: Vec<Attempt>,
    pub usage: Usage,
    /// Headers or fields removed to satisfy a provider, never silently.
    pub downgrades: Vec<String>,
    /// The client's user-agent.
    pub client: Option<String>,
    /// Who bills the request: tollgate's provider account (`api`), or the
    /// client's own subscription or key passed through (`subscription`),
    /// whose list price is a value figure, never spend.
    #[serde(default)]
    pub billed_by: BilledBy,
    /// A non-reversible fingerprint of the client's own credential on
    /// passthrough requests, so usage per credential can be told apart
    /// without ever storing the credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_fingerprint: Option<String>,
    /// The usage is tollgate's estimate, not the provider's report: the
    /// client went away mid-stream and the rest of the answer could not be
    /// read. The estimate is never below what was forwarded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub usage_estimated: bool,
    /// What the request cost, added by the accountant (absent on raw
    /// events; derived, so `tollgate reprice` can recompute it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
    /// Which gateway process recorded it and its sequence there: the
    /// accountant reports how far it folded each gateway's events, so the
    /// gateway knows when a request's reservation is settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// Set by gateways when a `repeat` guard is configured and the request
    /// has a session: a digest of the request body (CRC-32 and length),
    /// so the accountant can see the same body sent again. Not in the
    /// lake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_digest: Option<String>,
}

/// Who pays the provider for a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BilledBy {
    /// tollgate's provider account: the list price is spend.
    #[default]
    Api,
    /// The client's own credential (Claude Max, Anthropic OAuth, a user's
    /// own key): Anthropic bills them; the list price is only a value.
    Subscription,
}

impl BilledBy {
    /// The lake's text form (`api`, `subscription`).
    pub fn as_str(self) -> &'static str {
        match self {
            BilledBy::Api => "api",
            BilledBy::Subscription => "subscription",
        }
    }
}

/// A gateway process and the sequence number of one of its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub gateway: String,
    pub seq: u64,
}

/// The price of one event per token class, in USD (exact decimals).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostLines {
    pub input_usd: Decimal,
    pub output_usd: Decimal,
    pub cache_write_5m_usd: Decimal,
    pub cache_write_1h_usd: Decimal,
    pub cache_read_usd: Decimal,
    pub web_search_usd: Decimal,
    pub total_usd: Decimal,
    /// What the cache reads saved against paying full input price for
    /// the same tokens (not part of the total).
    #[serde(default)]
    pub cache_savings_usd: Decimal,
}

/// The accountant's verdict on an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    /// Version (content hash) of the price tables used.
    pub price_table_version: String,
    /// The breakdown; `None` means no table matches the model: unpriced,
    /// never $0.
    pub lines: Option<CostLines>,
    /// The price entry's family and tier (`standard`, `long_context`).
    pub family: Option<String>,
    pub tier: Option<String>,
    /// `table` (an entry matches the model) or `provisional` (none does:
    /// priced from its family's most recent entry or the configured
    /// unknown-model rates until a table has it; `tollgate reprice` fixes
    /// it). Absent on events priced before the policy existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<String>,
    /// Choices the calculator made that the price depends on (provisional
    /// basis, fast mode, US-only inference, batch, iterations, fallback
    /// credit), in words, so a bill can be explained.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Where the raw event sat on the bus: lets a restarted accountant
    /// skip what it already priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<BusPosition>,
}

impl Usage {
    /// Tokens counted against token budgets: every input class and the
    /// output. With iterations, their sum (the top level leaves out
    /// compaction and advisor steps), plus the top level when no
    /// iteration is the message itself.
    pub fn total_tokens(&self) -> u64 {
        let own = self.input_tokens
            + self.output_tokens
            + self.cache_creation_5m_tokens
            + self.cache_creation_1h_tokens
            + self.cache_read_tokens;
        if self.iterations.is_empty() {
            return own;
        }
        let steps: u64 = self.iterations.iter().map(|i| i.usage.total_tokens()).sum();
        if self.iterations.iter().any(|i| i.kind == "message") {
            steps
        } else {
            steps + own
        }
    }

    /// Adds another call's usage (an attempt whose answer was discarded
    /// is still billed by the provider).
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_creation_5m_tokens += other.cache_creation_5m_tokens;
        self.cache_creation_1h_tokens += other.cache_creation_1h_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.web_search_requests += other.web_search_requests;
        self.web_fetch_requests += other.web_fetch_requests;
    }
}

impl LlmEvent {
    /// A fresh event id: UUIDv7 sorts by creation time, which keeps
    /// "newest first" and cursor pagination cheap.
    pub fn new_id() -> Uuid {
        Uuid::now_v7()
    }

    /// The bus key: everything a team's budget needs lands in one partition,
    /// in order.
    pub fn bus_key(&self) -> &[u8] {
        self.team.as_bytes()
    }
}

/// Arrow schema of the lake's `events` table, mirroring `LlmEvent`
/// (usage classes as columns, metadata as a map).
pub fn arrow_schema() -> SchemaRef {
    Arc::new(Schema::new(arrow_fields()))
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// Dollar amounts: exact decimals with 12 places (a Haiku 3 cache-read
/// token costs $0.00000003), up to $99,999,999.
pub const USD_PRECISION: u8 = 20;
/// Decimal places of dollar columns.
pub const USD_SCALE: i8 = 12;

fn usd_type() -> DataType {
    DataType::Decimal128(USD_PRECISION, USD_SCALE)
}

/// A dollar amount as the unscaled integer of a `Decimal128(20, 12)`.
pub fn usd_to_i128(v: Decimal) -> i128 {
    let mut d = v.round_dp_with_strategy(
        USD_SCALE as u32,
        rust_decimal::RoundingStrategy::MidpointAwayFromZero,
    );
    d.rescale(USD_SCALE as u32);
    d.mantissa()
}

fn attempt_fields() -> Fields {
    Fields::from(vec![
        Field::new("provider", DataType::Utf8, false),
        Field::new("target", DataType::Utf8, false),
        Field::new("status", DataType::UInt16, true),
        Field::new("latency_ms", DataType::Int64, false),
        Field::new("error_type", DataType::Utf8, true),
    ])
}

fn metadata_entries() -> Field {
    Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", DataType::Utf8, true),
        ])),
        false,
    )
}

fn arrow_fields() -> Vec<Field> {
    let s = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let i = |name: &str, nullable| Field::new(name, DataType::Int64, nullable);
    vec![
        s("event_id", false),
        Field::new("schema_version", DataType::UInt16, false),
        s("trace_id", false),
        s("session_id", true),
        s("agent_id", true),
        s("parent_agent_id", true),
        s("request_id", true),
        Field::new("started_at", ts_type(), false),
        Field::new("ended_at", ts_type(), false),
        i("ttft_ms", true),
        i("latency_ms", false),
        s("workspace", false),
        s("team", false),
        s("user", false),
        s("key_id", false),
        Field::new(
            "metadata",
            DataType::Map(Arc::new(metadata_entries()), false),
            false,
        ),
        s("endpoint", false),
        s("provider", false),
        s("target", false),
        s("region", true),
        s("model_requested", true),
        s("model_served", true),
        Field::new("stream", DataType::Boolean, false),
        Field::new("status", DataType::UInt16, false),
        s("error_type", true),
        s("stop_reason", true),
        Field::new(
            "attempts",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(attempt_fields()),
                true,
            ))),
            false,
        ),
        i("input_tokens", false),
        i("output_tokens", false),
        i("cache_creation_5m_tokens", false),
        i("cache_creation_1h_tokens", false),
        i("cache_read_tokens", false),
        i("web_search_requests", false),
        i("web_fetch_requests", false),
        Field::new(
            "downgrades",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        s("client", true),
        s("billed_by", true),
        s("credential_fingerprint", true),
        Field::new("usage_estimated", DataType::Boolean, true),
        s("speed", true),
        s("inference_geo", true),
        s("service_tier", true),
        s("usage_iterations", true),
        Field::new("fallback_credit_redeemed", DataType::Boolean, true),
        Field::new("cost_usd", usd_type(), true),
        Field::new("cost_input_usd", usd_type(), true),
        Field::new("cost_output_usd", usd_type(), true),
        Field::new("cost_cache_write_5m_usd", usd_type(), true),
        Field::new("cost_cache_write_1h_usd", usd_type(), true),
        Field::new("cost_cache_read_usd", usd_type(), true),
        Field::new("cost_web_search_usd", usd_type(), true),
        Field::new("cost_cache_savings_usd", usd_type(), true),
        Field::new("priced", DataType::Boolean, true),
        s("price_table_version", true),
        s("pricing_family", true),
        s("pricing_tier", true),
        s("pricing_basis", true),
        s("pricing_notes", true),
        Field::new("bus_partition", DataType::UInt32, false),
        i("bus_offset", false),
    ]
}

/// Where an event sat on the bus: stored with the row so a lake file can
/// be checked against the log it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusPosition {
    pub partition: u32,
    pub offset: u64,
}

/// Builds one Arrow batch from events (each with its bus position), in the
/// column order of [`arrow_schema`].
pub fn to_record_batch(events: &[(BusPosition, &LlmEvent)]) -> Result<RecordBatch, ArrowError> {
    let mut b = Columns::with_capacity(events.len());
    for (pos, e) in events {
        b.push(*pos, e);
    }
    b.finish()
}

/// Column builders for [`to_record_batch`], one per field.
struct Columns {
    event_id: StringBuilder,
    schema_version: UInt16Builder,
    trace_id: StringBuilder,
    session_id: StringBuilder,
    agent_id: StringBuilder,
    parent_agent_id: StringBuilder,
    request_id: StringBuilder,
    started_at: TimestampMillisecondBuilder,
    ended_at: TimestampMillisecondBuilder,
    ttft_ms: Int64Builder,
    latency_ms: Int64Builder,
    workspace: StringBuilder,
    team: StringBuilder,
    user: StringBuilder,
    key_id: StringBuilder,
    metadata: MapBuilder<StringBuilder, StringBuilder>,
    endpoint: StringBuilder,
    provider: StringBuilder,
    target: StringBuilder,
    region: StringBuilder,
    model_requested: StringBuilder,
    model_served: StringBuilder,
    stream: BooleanBuilder,
    status: UInt16Builder,
    error_type: StringBuilder,
    stop_reason: StringBuilder,
    attempts: ListBuilder<StructBuilder>,
    usage: [Int64Builder; 7],
    downgrades: ListBuilder<StringBuilder>,
    client: StringBuilder,
    billed_by: StringBuilder,
    credential_fingerprint: StringBuilder,
    usage_estimated: BooleanBuilder,
    billing: BillingColumns,
    cost: CostColumns,
    bus_partition: UInt32Builder,
    bus_offset: Int64Builder,
}

/// Clamps a count into Arrow's signed column type; counts never reach it.
fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Columns {
    fn with_capacity(n: usize) -> Self {
        let s = || StringBuilder::with_capacity(n, n * 16);
        let ts = || TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
        let i = || Int64Builder::with_capacity(n);
        let names = arrow::array::builder::MapFieldNames {
            entry: "entries".into(),
            key: "keys".into(),
            value: "values".into(),
        };
        let attempt = StructBuilder::from_fields(attempt_fields(), 1);
        Columns {
            event_id: s(),
            schema_version: UInt16Builder::with_capacity(n),
            trace_id: s(),
            session_id: s(),
            agent_id: s(),
            parent_agent_id: s(),
            request_id: s(),
            started_at: ts(),
            ended_at: ts(),
            ttft_ms: i(),
            latency_ms: i(),
            workspace: s(),
            team: s(),
            user: s(),
            key_id: s(),
            metadata: MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new()),
            endpoint: s(),
            provider: s(),
            target: s(),
            region: s(),
            model_requested: s(),
            model_served: s(),
            stream: BooleanBuilder::with_capacity(n),
            status: UInt16Builder::with_capacity(n),
            error_type: s(),
            stop_reason: s(),
            attempts: ListBuilder::new(attempt),
            usage: std::array::from_fn(|_| i()),
            downgrades: ListBuilder::new(StringBuilder::new()),
            client: s(),
            billed_by: s(),
            credential_fingerprint: s(),
            usage_estimated: BooleanBuilder::with_capacity(n),
            billing: BillingColumns::with_capacity(n),
            cost: CostColumns::with_capacity(n),
            bus_partition: UInt32Builder::with_capacity(n),
            bus_offset: i(),
        }
    }

    fn push(&mut self, pos: BusPosition, e: &LlmEvent) {
        self.event_id.append_value(e.event_id.to_string());
        self.schema_version.append_value(e.schema_version);
        self.trace_id.append_value(&e.trace_id);
        self.session_id.append_option(e.session_id.as_deref());
        self.agent_id.append_option(e.agent_id.as_deref());
        self.parent_agent_id
            .append_option(e.parent_agent_id.as_deref());
        self.request_id.append_option(e.request_id.as_deref());
        self.started_at
            .append_value(e.started_at.timestamp_millis());
        self.ended_at.append_value(e.ended_at.timestamp_millis());
        self.ttft_ms.append_option(e.ttft_ms.map(i64_of));
        self.latency_ms.append_value(i64_of(e.latency_ms));
        self.workspace.append_value(&e.workspace);
        self.team.append_value(&e.team);
        self.user.append_value(&e.user);
        self.key_id.append_value(&e.key_id);
        for (k, v) in &e.metadata {
            self.metadata.keys().append_value(k);
            self.metadata.values().append_value(v);
        }
        // Appending a map entry only fails on a key/value length mismatch,
        // which the loop above rules out.
        let _ = self.metadata.append(true);
        self.endpoint.append_value(&e.endpoint);
        self.provider.append_value(&e.provider);
        self.target.append_value(&e.target);
        self.region.append_option(e.region.as_deref());
        self.model_requested
            .append_option(e.model_requested.as_deref());
        self.model_served.append_option(e.model_served.as_deref());
        self.stream.append_value(e.stream);
        self.status.append_value(e.status);
        self.error_type.append_option(e.error_type.as_deref());
        self.stop_reason.append_option(e.stop_reason.as_deref());
        self.push_attempts(&e.attempts);
        let u = &e.usage;
        let counts = [
            u.input_tokens,
            u.output_tokens,
            u.cache_creation_5m_tokens,
            u.cache_creation_1h_tokens,
            u.cache_read_tokens,
            u.web_search_requests,
            u.web_fetch_requests,
        ];
        for (builder, v) in self.usage.iter_mut().zip(counts) {
            builder.append_value(i64_of(v));
        }
        for d in &e.downgrades {
            self.downgrades.values().append_value(d);
        }
        self.downgrades.append(true);
        self.client.append_option(e.client.as_deref());
        self.billed_by.append_value(e.billed_by.as_str());
        self.credential_fingerprint
            .append_option(e.credential_fingerprint.as_deref());
        self.usage_estimated.append_value(e.usage_estimated);
        self.billing.push(&e.usage);
        self.cost.push(e.cost.as_ref());
        self.bus_partition.append_value(pos.partition);
        self.bus_offset.append_value(i64_of(pos.offset));
    }

    fn push_attempts(&mut self, attempts: &[Attempt]) {
        let items = self.attempts.values();
        for a in attempts {
            field::<StringBuilder>(items, 0).append_value(&a.provider);
            field::<StringBuilder>(items, 1).append_value(&a.target);
            field::<UInt16Builder>(items, 2).append_option(a.status);
            field::<Int64Builder>(items, 3).append_value(i64_of(a.latency_ms));
            field::<StringBuilder>(items, 4).append_option(a.error_type.as_deref());
            items.append(true);
        }
        self.attempts.append(true);
    }

    fn finish(mut self) -> Result<RecordBatch, ArrowError> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.schema_version.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.session_id.finish()),
            Arc::new(self.agent_id.finish()),
            Arc::new(self.parent_agent_id.finish()),
            Arc::new(self.request_id.finish()),
            Arc::new(self.started_at.finish()),
            Arc::new(self.ended_at.finish()),
            Arc::new(self.ttft_ms.finish()),
            Arc::new(self.latency_ms.finish()),
            Arc::new(self.workspace.finish()),
            Arc::new(self.team.finish()),
            Arc::new(self.user.finish()),
            Arc::new(self.key_id.finish()),
            Arc::new(self.metadata.finish()),
            Arc::new(self.endpoint.finish()),
            Arc::new(self.provider.finish()),
            Arc::new(self.target.finish()),
            Arc::new(self.region.finish()),
            Arc::new(self.model_requested.finish()),
            Arc::new(self.model_served.finish()),
            Arc::new(self.stream.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.error_type.finish()),
            Arc::new(self.stop_reason.finish()),
            Arc::new(self.attempts.finish()),
        ];
        for u in self.usage.iter_mut() {
            cols.push(Arc::new(u.finish()));
        }
        cols.push(Arc::new(self.downgrades.finish()));
        cols.push(Arc::new(self.client.finish()));
        cols.push(Arc::new(self.billed_by.finish()));
        cols.push(Arc::new(self.credential_fingerprint.finish()));
        cols.push(Arc::new(self.usage_estimated.finish()));
        cols.extend(self.billing.finish());
        cols.extend(self.cost.finish());
        cols.push(Arc::new(self.bus_partition.finish()));
        cols.push(Arc::new(self.bus_offset.finish()));
        RecordBatch::try_new(arrow_schema(), cols)
    }
}

/// Names of the cost columns, in schema order; `tollgate reprice`
/// replaces exactly these.
pub const COST_COLUMNS: &[&str] = &[
    "cost_usd",
    "cost_input_usd",
    "cost_output_usd",
    "cost_cache_write_5m_usd",
    "cost_cache_write_1h_usd",
    "cost_cache_read_usd",
    "cost_web_search_usd",
    "cost_cache_savings_usd",
    "priced",
    "price_table_version",
    "pricing_family",
    "pricing_tier",
    "pricing_basis",
    "pricing_notes",
];

/// Builders of the usage columns that carry billing facts beyond token
/// counts (speed, inference geography, service tier, iterations as JSON,
/// fallback credit); nullable, so lake files written before them read back
/// with nulls.
struct BillingColumns {
    speed: StringBuilder,
    inference_geo: StringBuilder,
    service_tier: StringBuilder,
    iterations: StringBuilder,
    fallback_credit_redeemed: BooleanBuilder,
}

impl BillingColumns {
    fn with_capacity(n: usize) -> BillingColumns {
        let s = || StringBuilder::with_capacity(n, n * 8);
        BillingColumns {
            speed: s(),
            inference_geo: s(),
            service_tier: s(),
            iterations: s(),
            fallback_credit_redeemed: BooleanBuilder::with_capacity(n),
        }
    }

    fn push(&mut self, u: &Usage) {
        self.speed.append_option(u.speed.as_deref());
        self.inference_geo.append_option(u.inference_geo.as_deref());
        self.service_tier.append_option(u.service_tier.as_deref());
        let iterations = (!u.iterations.is_empty())
            .then(|| serde_json::to_string(&u.iterations).ok())
            .flatten();
        self.iterations.append_option(iterations);
        self.fallback_credit_redeemed
            .append_option(u.fallback_credit_redeemed.then_some(true));
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.speed.finish()),
            Arc::new(self.inference_geo.finish()),
            Arc::new(self.service_tier.finish()),
            Arc::new(self.iterations.finish()),
            Arc::new(self.fallback_credit_redeemed.finish()),
        ]
    }
}

/// Builders of the cost columns (see [`COST_COLUMNS`]).
pub struct CostColumns {
    usd: [Decimal128Builder; 8],
    priced: BooleanBuilder,
    price_table_version: StringBuilder,
    pricing_family: StringBuilder,
    pricing_tier: StringBuilder,
    pricing_basis: StringBuilder,
    pricing_notes: StringBuilder,
}

impl CostColumns {
    /// Builders for `n` rows.
    pub fn with_capacity(n: usize) -> CostColumns {
        let s = || StringBuilder::with_capacity(n, n * 16);
        CostColumns {
            usd: std::array::from_fn(|_| {
                Decimal128Builder::with_capacity(n)
                    .with_precision_and_scale(USD_PRECISION, USD_SCALE)
                    .expect("valid decimal type")
            }),
            priced: BooleanBuilder::with_capacity(n),
            price_table_version: s(),
            pricing_family: s(),
            pricing_tier: s(),
            pricing_basis: s(),
            pricing_notes: s(),
        }
    }

    /// Adds one row's cost (`None`: not costed yet).
    pub fn push(&mut self, cost: Option<&Cost>) {
        let lines = cost.and_then(|c| c.lines.as_ref());
        let values = lines.map(|l| {
            [
                l.total_usd,
                l.input_usd,
                l.output_usd,
                l.cache_write_5m_usd,
                l.cache_write_1h_usd,
                l.cache_read_usd,
                l.web_search_usd,
                l.cache_savings_usd,
            ]
        });
        for (i, builder) in self.usd.iter_mut().enumerate() {
            builder.append_option(values.map(|v| usd_to_i128(v[i])));
        }
        self.priced.append_option(cost.map(|c| c.lines.is_some()));
        self.price_table_version
            .append_option(cost.map(|c| c.price_table_version.as_str()));
        self.pricing_family
            .append_option(cost.and_then(|c| c.family.as_deref()));
        self.pricing_tier
            .append_option(cost.and_then(|c| c.tier.as_deref()));
        self.pricing_basis
            .append_option(cost.and_then(|c| c.basis.as_deref()));
        self.pricing_notes.append_option(
            cost.filter(|c| !c.notes.is_empty())
                .map(|c| c.notes.join("; ")),
        );
    }

    /// The finished columns, in [`COST_COLUMNS`] order.
    pub fn finish(mut self) -> Vec<ArrayRef> {
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(COST_COLUMNS.len());
        for b in self.usd.iter_mut() {
            cols.push(Arc::new(b.finish()));
        }
        cols.push(Arc::new(self.priced.finish()));
        cols.push(Arc::new(self.price_table_version.finish()));
        cols.push(Arc::new(self.pricing_family.finish()));
        cols.push(Arc::new(self.pricing_tier.finish()));
        cols.push(Arc::new(self.pricing_basis.finish()));
        cols.push(Arc::new(self.pricing_notes.finish()));
        cols
    }
}

/// The typed child builder `i` of a struct builder; the layout is fixed by
/// [`attempt_fields`], so a miss is a programming error caught by tests.
fn field<T: arrow::array::ArrayBuilder>(b: &mut StructBuilder, i: usize) -> &mut T {
    b.field_builder::<T>(i)
        .expect("attempt struct layout matches attempt_fields()")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_event() -> LlmEvent {
        let now = Utc::now();
        LlmEvent {
            event_id: LlmEvent::new_id(),
            schema_version: SCHEMA_VERSION,
            trace_id: "t-1".into(),
            session_id: Some("s-1".into()),
            agent_id: Some("agent-1".into()),
            parent_agent_id: Some("agent-0".into()),
            request_id: Some("req_1".into()),
            started_at: now,
            ended_at: now,
            ttft_ms: Some(12),
            latency_ms: 40,
            workspace: "default".into(),
            team: "eng".into(),
            user: "alice".into(),
            key_id: "k1".into(),
            metadata: BTreeMap::from([("env".into(), "ci".into())]),
            endpoint: "messages".into(),
            provider: "anthropic".into(),
            target: "anthropic".into(),
            region: None,
            model_requested: Some("claude-sonnet-4-5".into()),
            model_served: Some("claude-sonnet-4-5-20250929".into()),
            stream: true,
            status: 200,
            error_type: None,
            stop_reason: Some("end_turn".into()),
            attempts: vec![Attempt {
                provider: "anthropic".into(),
                target: "anthropic".into(),
                status: Some(200),
                latency_ms: 39,
                error_type: None,
            }],
            usage: Usage {
                input_tokens: 10,
                output_tokens: 5,
                ..Usage::default()
            },
            downgrades: vec!["anthropic-beta:foo".into()],
            client: Some("claude-cli/2.1.197".into()),
            billed_by: BilledBy::Api,
            credential_fingerprint: None,
            usage_estimated: false,
            cost: None,
            origin: None,
            body_digest: None,
        }
    }

    #[test]
    fn usage_without_cache_split_counts_all_writes_as_five_minute() {
        let u = Usage::from_anthropic_json(&serde_json::json!({
            "input_tokens": 3, "output_tokens": 7,
            "cache_creation_input_tokens": 100, "cache_read_input_tokens": 50
        }));
        assert_eq!(u.cache_creation_5m_tokens, 100);
        assert_eq!(u.cache_creation_1h_tokens, 0);
        assert_eq!(u.cache_read_tokens, 50);
    }

    #[test]
    fn usage_with_cache_split_uses_the_split() {
        let u = Usage::from_anthropic_json(&serde_json::json!({
            "input_tokens": 3, "output_tokens": 7, "cache_creation_input_tokens": 100,
            "cache_creation": {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 70},
            "server_tool_use": {"web_search_requests": 2}
        }));
        assert_eq!(
            (u.cache_creation_5m_tokens, u.cache_creation_1h_tokens),
            (30, 70)
        );
        assert_eq!(u.web_search_requests, 2);
    }

    #[test]
    fn usage_billing_facts_are_read() {
        let u = Usage::from_anthropic_json(&serde_json::json!({
            "input_tokens": 5, "output_tokens": 9, "speed": "fast", "inference_geo": "us",
            "service_tier": "batch", "output_tokens_details": {"thinking_tokens": 4},
            "fallback_credit": {"redeemed": true},
            "iterations": [
                {"type": "compaction", "model": "claude-opus-4-8", "input_tokens": 100, "output_tokens": 7},
                {"type": "message", "input_tokens": 5, "output_tokens": 9,
                 "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 3}}
            ]
        }));
        assert_eq!(u.speed.as_deref(), Some("fast"));
        assert_eq!(u.inference_geo.as_deref(), Some("us"));
        assert_eq!(u.service_tier.as_deref(), Some("batch"));
        assert!(u.fallback_credit_redeemed);
        assert_eq!(u.output_tokens, 9, "thinking is part of output_tokens");
        assert_eq!(u.iterations.len(), 2);
        assert_eq!(u.iterations[0].kind, "compaction");
        assert_eq!(u.iterations[0].model.as_deref(), Some("claude-opus-4-8"));
        assert_eq!(u.iterations[1].usage.cache_creation_1h_tokens, 3);
        // Token budgets count the iterations: 100 + 7 + 5 + 9 + 3.
        assert_eq!(u.total_tokens(), 124);
    }

    #[test]
    fn old_events_without_billing_facts_still_parse() {
        let e = sample_event();
        let mut v = serde_json::to_value(&e).unwrap();
        let usage = v["usage"].as_object_mut().unwrap();
        usage.retain(|k, _| {
            !matches!(
                k.as_str(),
                "speed"
                    | "inference_geo"
                    | "service_tier"
                    | "iterations"
                    | "fallback_credit_redeemed"
            )
        });
        let back: LlmEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back.usage.speed, None);
        assert!(back.usage.iterations.is_empty());
    }

    #[test]
    fn billing_facts_and_pricing_basis_reach_the_lake_columns() {
        let mut e = sample_event();
        e.usage.speed = Some("fast".into());
        e.usage.iterations = vec![Iteration {
            kind: "compaction".into(),
            model: Some("claude-opus-4-8".into()),
            usage: Usage::default(),
        }];
        e.cost = Some(Cost {
            price_table_version: "v".into(),
            lines: Some(CostLines::default()),
            family: Some("claude-opus-5-5".into()),
            tier: Some("standard".into()),
            basis: Some("provisional".into()),
            notes: vec!["a".into(), "b".into()],
            source: None,
        });
        let pos = BusPosition {
            partition: 0,
            offset: 1,
        };
        let batch = to_record_batch(&[(pos, &e)]).unwrap();
        let text = |name: &str| {
            let c = batch.column_by_name(name).unwrap();
            c.as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap()
                .value(0)
                .to_owned()
        };
        assert_eq!(text("speed"), "fast");
        assert!(text("usage_iterations").contains("claude-opus-4-8"));
        assert_eq!(text("pricing_basis"), "provisional");
        assert_eq!(text("pricing_notes"), "a; b");
    }

    #[test]
    fn cumulative_usage_keeps_the_latest_nonzero_value() {
        let mut u = Usage {
            input_tokens: 10,
            output_tokens: 1,
            ..Usage::default()
        };
        u.merge_cumulative(&Usage {
            output_tokens: 25,
            ..Usage::default()
        });
        assert_eq!((u.input_tokens, u.output_tokens), (10, 25));
    }

    #[test]
    fn record_batch_matches_schema_and_row_count() {
        let e = sample_event();
        let pos = BusPosition {
            partition: 0,
            offset: 7,
        };
        let batch = to_record_batch(&[(pos, &e), (pos, &e)]).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), arrow_schema());
    }

    #[test]
    fn an_event_recorded_before_agent_ids_existed_still_decodes() {
        let mut e = sample_event();
        let mut json = serde_json::to_value(&e).unwrap();
        let obj = json.as_object_mut().unwrap();
        assert!(obj.remove("agent_id").is_some());
        assert!(obj.remove("parent_agent_id").is_some());
        let back: LlmEvent = serde_json::from_value(json).unwrap();
        e.agent_id = None;
        e.parent_agent_id = None;
        assert_eq!(back, e);
    }

    #[test]
    fn event_json_round_trips() {
        let e = sample_event();
        let back: LlmEvent = serde_json::from_slice(&serde_json::to_vec(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }
}
