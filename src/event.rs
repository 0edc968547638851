//! `LlmEvent`: the one record every role shares.
//!
//! The gateway creates one per request, the bus carries it as JSON, the sink
//! stores it as one Parquet row and the query API reads it back. The lake's
//! columns are one table beside it (`event/columns.rs`), so a field added to the
//! event reaches the lake with one more line there.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod columns;
mod timestamp;

pub use columns::{
    CostColumns, EventColumns, USD_PRECISION, USD_SCALE, arrow_schema, to_record_batch, usd_to_i128,
};

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
    #[serde(with = "timestamp")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "timestamp")]
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
    /// Parses an event record (the JSON every bus topic of events holds):
    /// the one place the accountant, the sink, replay and the oversize
    /// trimmer read one, so a faster decoder (see
    /// `benches/event_codec.rs`) is one change.
    ///
    /// The record is checked as UTF-8 once, whole, and then read as text:
    /// `from_slice` checks each string on its own, and those checks cost
    /// more than the rest of the read's scanning (1,820 → 1,431 ns per
    /// event; the whole-record check is 27 ns).
    pub fn from_json(bytes: &[u8]) -> Result<LlmEvent, serde_json::Error> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            <serde_json::Error as serde::de::Error>::custom(format_args!(
                "the record is not UTF-8 text: {e}"
            ))
        })?;
        serde_json::from_str(text)
    }

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

/// Where an event sat on the bus: stored with the row so a lake file can
/// be checked against the log it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusPosition {
    pub partition: u32,
    pub offset: u64,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `events` as one record batch, at offsets 0, 1, … of partition 0.
    pub(crate) fn batch_of(events: &[LlmEvent]) -> arrow::array::RecordBatch {
        let rows: Vec<_> = (0u64..)
            .zip(events)
            .map(|(offset, e)| {
                (
                    BusPosition {
                        partition: 0,
                        offset,
                    },
                    e,
                )
            })
            .collect();
        to_record_batch(&rows).expect("a batch of sample events")
    }

    #[test]
    fn a_record_tollgate_writes_reads_back_as_the_same_event() {
        let mut event = sample_event();
        event.user = "zoë \u{1F600} \"quoted\"\n\u{1}".into();
        event
            .metadata
            .insert("path".into(), "C:\\dir</script>".into());
        let by_serde_json = serde_json::to_vec(&event).unwrap();
        assert_eq!(LlmEvent::from_json(&by_serde_json).unwrap(), event);
        let mut buf = crate::bus::records::RecordBuf::new();
        let by_record_buf = buf.json(&event).unwrap();
        let back: LlmEvent = serde_json::from_slice(&by_record_buf).unwrap();
        assert_eq!(
            back, event,
            "other readers (Kafka consumers) read what tollgate writes"
        );
    }

    #[test]
    fn a_record_that_is_not_an_event_is_refused_with_a_reason() {
        let good = serde_json::to_vec(&sample_event()).unwrap();
        let text = String::from_utf8(good.clone()).unwrap();
        let duplicated = text.replacen("{", "{\"team\":\"x\",", 1);
        let mut bad_utf8 = good.clone();
        let at = text.find("alice").unwrap();
        bad_utf8[at] = 0xff;
        for (what, bytes) in [
            ("duplicate member", duplicated.into_bytes()),
            ("invalid UTF-8", bad_utf8),
            ("truncated", good[..good.len() / 2].to_vec()),
            ("not an object", b"[1,2]".to_vec()),
            ("empty", Vec::new()),
        ] {
            assert!(LlmEvent::from_json(&bytes).is_err(), "{what} accepted");
        }
    }

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
