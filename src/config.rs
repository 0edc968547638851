//! `tollgate.toml`: what a platform team writes, checked once at start-up.
//!
//! Strings may use `${VAR}` / `${VAR:-default}` so secrets stay in the
//! environment; interpolation runs on parsed string values (never on the raw
//! text), so a secret containing a quote cannot break the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

// Sections owned by the stage that uses them, re-exported so the file's
// whole shape is read here.
pub use crate::accounting::notify::config::{WebhookConfig, WebhookFormat, redact_url};
pub use crate::budget::config::{
    BudgetConfig, BudgetPeriod, BudgetScope, OutputEstimate, default_forget_idle_hours,
    default_max_subjects_per_key,
};
pub use crate::gateway::auth::config::{KeyConfig, generate_key, hash_key, parse_key_hash};
pub use crate::lake::config::SinkConfig;

/// Why a config could not be used; every variant names the file or field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config {path}: {field}: {message}")]
    Interpolate {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole configuration of one tollgate process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub bus: BusConfig,
    #[serde(default)]
    pub sink: SinkConfig,
    /// Where the Parquet lake lives (a bucket, or `data.dir/lake`).
    #[serde(default)]
    pub lake: crate::lake::LakeConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub pricing: PricingConfig,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    #[serde(default)]
    pub budgets: Vec<BudgetConfig>,
    #[serde(default)]
    pub admission: AdmissionConfig,
    #[serde(default)]
    pub rate_limits: Vec<RateLimitConfig>,
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Runaway guards on Claude Code sessions (checked by
    /// `budget::GuardSpec::from_config`).
    #[serde(default)]
    pub guards: Vec<crate::budget::GuardConfig>,
    /// Named routing configs (fallback, load balance, retry), for keys'
    /// `route` and the `x-tollgate-config` header.
    #[serde(default)]
    pub routes: BTreeMap<String, crate::gateway::route::RouteConfig>,
    /// Bounds every route is held to (attempts per request, cache age).
    #[serde(default)]
    pub routing: crate::gateway::route::RoutingConfig,
    /// Subscription passthrough: how clients' own credentials are
    /// fingerprinted.
    #[serde(default)]
    pub passthrough: PassthroughConfig,
}

/// Settings of subscription passthrough (keys or routes marked
/// `passthrough = true`): the client's own Anthropic credential goes
/// upstream and only its fingerprint is kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassthroughConfig {
    /// The HMAC-SHA256 key of credential fingerprints. Empty: a random one
    /// made at first start and kept in `data.dir/fingerprint.secret`.
    /// Gateways on several machines need the same value here so one
    /// credential has one fingerprint everywhere.
    pub fingerprint_secret: String,
}

/// What admission does when it cannot be sure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnknownStatePolicy {
    /// Refuse (503, retryable) until the gateway has read budget state.
    #[default]
    Closed,
    /// Admit, counting only this gateway's own reservations.
    Open,
}

/// How requests are admitted against budgets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    pub on_unknown_state: UnknownStatePolicy,
    /// Multiplies the tiktoken count of a request (a different tokenizer
    /// than Claude's) to make it a safe upper bound.
    pub token_safety_factor: f64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            on_unknown_state: UnknownStatePolicy::Closed,
            token_safety_factor: 1.3,
        }
    }
}

/// Requests and tokens per minute for a key, user or team (also the body
/// of a `rate_limit.set` control event).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub scope: BudgetScope,
    /// The one key id/user/team limited; absent: each one separately.
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    #[serde(default)]
    pub tokens_per_minute: Option<u32>,
}

/// Where the gateway listens and how it bounds what clients send.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The query API's own address; absent means it shares `listen`.
    pub api_listen: Option<SocketAddr>,
    /// Where `/metrics` is served, alone: its labels name every team and
    /// user and their spend, so it should not be reachable by whoever can
    /// reach the gateway. Absent: `/metrics` is served on every listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Request bodies above this get a 413 (Claude Code sends ~120 KB).
    pub max_body_bytes: usize,
    pub upstream_connect_timeout_ms: u64,
    /// Longest a whole upstream answer may take (streams included).
    pub upstream_timeout_secs: u64,
    /// How long shutdown waits for in-flight requests and the pipeline.
    pub shutdown_grace_secs: u64,
    /// How long a client connection may take to send a request's headers,
    /// counted from when the connection opens or its last answer ends: a
    /// client that trickles headers (or idles on a keep-alive connection)
    /// past it is disconnected, so it cannot hold a connection forever.
    pub header_read_timeout_secs: u64,
    /// Most client connections each listener serves at once; more wait to
    /// be accepted until one closes. Keep it below the process's
    /// open-file limit (`ulimit -n`), which also covers upstream
    /// connections and the log's files.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            api_listen: None,
            metrics_listen: None,
            max_body_bytes: 32 * 1024 * 1024,
            upstream_connect_timeout_ms: 10_000,
            upstream_timeout_secs: 600,
            shutdown_grace_secs: 30,
            header_read_timeout_secs: 60,
            max_connections: 4096,
        }
    }
}

/// Where the embedded log and the lake live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Relative paths are taken from the config file's directory.
    pub dir: PathBuf,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dir: PathBuf::from("./tollgate-data"),
        }
    }
}

impl DataConfig {
    /// The embedded bus's directory.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }
    /// The Parquet lake's root.
    pub fn lake_dir(&self) -> PathBuf {
        self.dir.join("lake")
    }
    /// The gateway's local journal in front of Kafka (events wait here
    /// while the broker is unreachable).
    pub fn journal_dir(&self) -> PathBuf {
        self.dir.join("journal")
    }
}

/// Which bus carries events between roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// The on-disk log inside this process: nothing to install.
    #[default]
    Embedded,
    /// Kafka (or a Kafka-protocol broker), for roles on several machines.
    Kafka,
}

/// The bus and the gateway's hand-off queue in front of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    pub kind: BusKind,
    /// Events the gateway may hold before the bus takes them (as many
    /// again wait for room). 65,536 rides out a bus stall of several
    /// seconds at a busy gateway's rate without losing an event; the queue
    /// allocates as it fills, so the room costs memory only during a
    /// stall (the pipeline benchmark, whose injector keeps it full, peaks
    /// at 264-276 MiB with it, 159-174 MiB with 8,192).
    pub queue_capacity: usize,
    /// Required when `kind = "kafka"`.
    pub kafka: Option<KafkaConfig>,
    /// Embedded log: segments of the events, costed and alerts topics last
    /// written more than this many days ago are deleted once every consumer
    /// has committed past them (0 keeps everything). The budgets topic is
    /// compacted instead: it keeps the latest state of every ledger.
    pub retention_days: u32,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            kind: BusKind::Embedded,
            queue_capacity: 65_536,
            kafka: None,
            retention_days: 30,
        }
    }
}

/// How tollgate talks to Kafka.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma separated (`host:port,host:port`).
    pub brokers: String,
    /// Partitions of the events and costed topics when tollgate creates
    /// them; the most accountants or sinks that can share the work.
    pub partitions: u32,
    /// Replication factor of topics tollgate creates.
    pub replication: u32,
    /// Consumer-group session timeout: how long a dead consumer keeps its
    /// partitions (a group join takes about half of it).
    pub session_timeout_ms: u64,
    /// How long the producer keeps retrying one batch before it counts as
    /// failed and is retried from the journal.
    pub delivery_timeout_ms: u64,
    /// Producer batching delay.
    pub linger_ms: u64,
    /// Producer compression: none, gzip, snappy, lz4 or zstd.
    pub compression: String,
    /// Extra librdkafka properties (e.g. `"security.protocol" = "SASL_SSL"`),
    /// applied to producers and consumers after tollgate's own.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: String::new(),
            partitions: 6,
            replication: 1,
            session_timeout_ms: 10_000,
            delivery_timeout_ms: 120_000,
            linger_ms: 5,
            compression: "lz4".into(),
            properties: BTreeMap::new(),
        }
    }
}

/// Who may read the lake through the query API, and how much one SQL
/// query may take.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Bearer tokens with full read access; empty entries are ignored, so
    /// an unset `${TOLLGATE_ADMIN_TOKEN:-}` simply grants nothing.
    pub admin_tokens: Vec<String>,
    /// Tokens that read one team's rows only, in every endpoint.
    pub team_tokens: Vec<TeamTokenConfig>,
    /// Admin tokens limited to scopes (`admin:read`, `admin:write`,
    /// `keys:write`, `budgets:write`) and optionally one workspace.
    pub scoped_tokens: Vec<ScopedTokenConfig>,
    /// Most rows one `POST /v1/sql` returns.
    pub sql_max_rows: usize,
    /// Longest one `POST /v1/sql` may run before it is cancelled.
    pub sql_timeout_secs: u64,
    /// Most events one trace or session view (`/v1/traces/{id}`,
    /// `/v1/sessions/{id}`) holds; a larger one is refused with a pointer
    /// to `/v1/logs`, which pages. The IDs are the client's, so without a
    /// bound one reused ID could make a view of millions of events.
    pub max_view_events: usize,
    /// Memory all lake queries of the process may hold together; a query
    /// needing more fails with an error naming the limit.
    pub query_memory_mb: usize,
    /// Parquet footers and page indexes the query API keeps between
    /// queries (0: none kept).
    pub metadata_cache_mb: usize,
    /// Bytes read from a bucket lake the query API keeps between queries
    /// (0: none kept; a local lake uses the OS page cache instead).
    pub object_cache_mb: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            admin_tokens: Vec::new(),
            team_tokens: Vec::new(),
            scoped_tokens: Vec::new(),
            sql_max_rows: 10_000,
            sql_timeout_secs: 10,
            max_view_events: 10_000,
            query_memory_mb: 2048,
            metadata_cache_mb: 256,
            object_cache_mb: 256,
        }
    }
}

/// An admin-API token with only some scopes (see `control` and
/// `api::admin`): the token itself or its `sha256:` hash.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopedTokenConfig {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub hash: Option<String>,
    /// Any of `admin:read`, `admin:write`, `keys:write`, `budgets:write`.
    pub scopes: Vec<String>,
    /// Only keys, teams (and workspace budgets) of this workspace.
    #[serde(default)]
    pub workspace: Option<String>,
    /// Who the token is in the audit log (default: `token:<hash prefix>`).
    #[serde(default)]
    pub name: Option<String>,
}

/// A query-API token limited to one team's rows: the token itself (from
/// the environment, say) or its `sha256:` hash.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamTokenConfig {
    pub team: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub hash: Option<String>,
}

impl TeamTokenConfig {
    /// The token's SHA-256 digest; `None` when unset (an empty `${VAR:-}`).
    pub fn digest(&self) -> Option<[u8; 32]> {
        match (&self.token, &self.hash) {
            (Some(t), _) if !t.is_empty() => {
                use sha2::Digest;
                Some(sha2::Sha256::digest(t.as_bytes()).into())
            }
            (_, Some(h)) => parse_key_hash(h),
            _ => None,
        }
    }
}

/// Which price tables the accountant uses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PricingConfig {
    /// A directory of price tables (like the repo's `pricing/`); absent
    /// means the tables compiled into the binary.
    pub dir: Option<PathBuf>,
    /// What a model of no known line costs until a table has it (USD per
    /// million tokens: input, output, cache_write_5m, cache_write_1h,
    /// cache_read); absent means the dearest rates in force.
    pub unknown_model_rates: Option<crate::pricing::Rates>,
}

/// The kinds of upstream tollgate can forward to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Anthropic,
    Bedrock,
    Vertex,
}

/// One upstream target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Anthropic: required. Bedrock and Vertex: derived from `region`
    /// unless set (a proxy, or a mock in tests).
    #[serde(default)]
    pub base_url: String,
    /// Anthropic's credential; never shown to clients.
    #[serde(default)]
    pub api_key: String,
    /// Bedrock region (`us-east-1`) or Vertex location (`us-east5`, `global`).
    #[serde(default)]
    pub region: String,
    /// Bedrock SigV4 credentials (or `bearer_token`).
    #[serde(default)]
    pub access_key_id: String,
    #[serde(default)]
    pub secret_access_key: String,
    #[serde(default)]
    pub session_token: String,
    /// Bedrock API key (`AWS_BEARER_TOKEN_BEDROCK`), instead of SigV4.
    #[serde(default)]
    pub bearer_token: String,
    /// Vertex: the Google Cloud project.
    #[serde(default)]
    pub project_id: String,
    /// Vertex: path of a service-account JSON key.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Anthropic model name → this provider's model ID, over the built-in
    /// catalog.
    #[serde(default)]
    pub model_map: BTreeMap<String, String>,
    /// anthropic-beta flags this provider accepts, instead of the catalog's.
    #[serde(default)]
    pub beta_allowlist: Option<Vec<String>>,
}

impl Config {
    /// Reads, interpolates and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg = Config::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if cfg.data.dir.is_relative() {
            cfg.data.dir = base.join(&cfg.data.dir);
        }
        cfg.lake.resolve_relative(base);
        if let Some(dir) = cfg.pricing.dir.as_mut().filter(|d| d.is_relative()) {
            *dir = base.join(&*dir);
        }
        for p in cfg.providers.values_mut() {
            if let Some(file) = p.credentials_file.as_mut().filter(|f| f.is_relative()) {
                *file = base.join(&*file);
            }
        }
        Ok(cfg)
    }

    /// Parses config text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let syntax = |message: String| ConfigError::Syntax {
            path: path.to_owned(),
            message,
        };
        let mut value: toml::Value = toml::from_str(text).map_err(|e| syntax(e.to_string()))?;
        interpolate(&mut value, "", path)?;
        let cfg: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| syntax(e.to_string()))?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        for (name, p) in &self.providers {
            let url = p.base_url.trim_end_matches('/');
            let derived = p.kind != ProviderKind::Anthropic && url.is_empty();
            if !derived && !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(invalid(format!(
                    "providers.{name}.base_url must start with http:// or https://, got {:?}",
                    p.base_url
                )));
            }
            let need = |field: &str, value: &str| {
                if value.is_empty() {
                    Err(invalid(format!(
                        "providers.{name}.{field} is required for kind {:?}",
                        p.kind
                    )))
                } else {
                    Ok(())
                }
            };
            match p.kind {
                ProviderKind::Anthropic => {}
                ProviderKind::Bedrock => {
                    need("region", &p.region)?;
                    if p.bearer_token.is_empty()
                        && (p.access_key_id.is_empty() || p.secret_access_key.is_empty())
                    {
                        return Err(invalid(format!(
                            "providers.{name} (bedrock) needs access_key_id and secret_access_key, or bearer_token"
                        )));
                    }
                }
                ProviderKind::Vertex => {
                    need("region", &p.region)?;
                    need("project_id", &p.project_id)?;
                    if p.credentials_file.is_none() {
                        return Err(invalid(format!(
                            "providers.{name}.credentials_file is required for kind Vertex (a service-account JSON key)"
                        )));
                    }
                }
            }
        }
        let mut ids = std::collections::HashSet::new();
        for k in &self.keys {
            if parse_key_hash(&k.hash).is_none() {
                return Err(invalid(format!(
                    "keys[{}].hash must be \"sha256:\" followed by 64 hex digits",
                    k.id
                )));
            }
            if !ids.insert(&k.id) {
                return Err(invalid(format!("keys: id {:?} appears twice", k.id)));
            }
            if let Some(route) = &k.route
                && !self.routes.contains_key(route)
            {
                return Err(invalid(format!(
                    "keys[{}].route names {route:?}, which is not a [routes.*] entry",
                    k.id
                )));
            }
            if let Some(route) = k
                .client_routes
                .iter()
                .find(|r| !self.routes.contains_key(*r))
            {
                return Err(invalid(format!(
                    "keys[{}].client_routes names {route:?}, which is not a [routes.*] entry",
                    k.id
                )));
            }
            if !self.providers.contains_key(&k.provider) {
                return Err(invalid(format!(
                    "keys[{}].provider names {:?}, which is not a [providers.*] entry",
                    k.id, k.provider
                )));
            }
        }
        if self.bus.kind == BusKind::Kafka {
            let Some(kafka) = &self.bus.kafka else {
                return Err(invalid(
                    "bus.kind = \"kafka\" needs a [bus.kafka] table with brokers".into(),
                ));
            };
            if kafka.brokers.trim().is_empty() {
                return Err(invalid(
                    "bus.kafka.brokers is empty (set TOLLGATE_KAFKA_BROKERS)".into(),
                ));
            }
            if kafka.partitions == 0 || kafka.replication == 0 {
                return Err(invalid(
                    "bus.kafka.partitions and bus.kafka.replication must be at least 1".into(),
                ));
            }
            if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&kafka.compression.as_str()) {
                return Err(invalid(format!(
                    "bus.kafka.compression must be none, gzip, snappy, lz4 or zstd, got {:?}",
                    kafka.compression
                )));
            }
        }
        crate::budget::BudgetSpec::from_config(&self.budgets).map_err(invalid)?;
        if self.routing.max_attempts == 0 {
            return Err(invalid("routing.max_attempts must be at least 1".into()));
        }
        for (name, r) in &self.routes {
            r.validated()
                .map_err(|reason| invalid(format!("routes.{name}: {reason}")))?;
            for t in &r.targets {
                if !self.providers.contains_key(&t.provider) {
                    return Err(invalid(format!(
                        "routes.{name} names provider {:?}, which is not a [providers.*] entry",
                        t.provider
                    )));
                }
            }
        }
        for (name, r) in &self.routes {
            if r.passthrough {
                self.check_passthrough_route(&format!("routes.{name}"), r)
                    .map_err(&invalid)?;
            }
        }
        for k in self.keys.iter().filter(|k| k.is_passthrough(&self.routes)) {
            let at = format!("keys[{}] (passthrough)", k.id);
            match k.route.as_ref().and_then(|r| self.routes.get(r)) {
                Some(r) => self.check_passthrough_route(&at, r).map_err(&invalid)?,
                None => self
                    .check_passthrough_provider(&at, &k.provider)
                    .map_err(&invalid)?,
            }
        }
        for (i, r) in self.rate_limits.iter().enumerate() {
            if !matches!(
                r.scope,
                BudgetScope::Key | BudgetScope::User | BudgetScope::Team
            ) {
                return Err(invalid(format!(
                    "rate_limits[{i}].scope must be key, user or team"
                )));
            }
            if r.requests_per_minute.is_none() && r.tokens_per_minute.is_none()
                || r.requests_per_minute == Some(0)
                || r.tokens_per_minute == Some(0)
            {
                return Err(invalid(format!(
                    "rate_limits[{i}] needs a positive requests_per_minute or tokens_per_minute"
                )));
            }
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(invalid(format!(
                    "webhooks[{i}].url must start with http:// or https://, got {:?}",
                    w.url
                )));
            }
        }
        let factor = self.admission.token_safety_factor;
        // NaN compares false with everything: refused too.
        if factor.is_nan() || factor < 1.0 {
            return Err(invalid(
                "admission.token_safety_factor must be at least 1.0".into(),
            ));
        }
        for (i, t) in self.api.scoped_tokens.iter().enumerate() {
            check_scoped_token(i, t).map_err(&invalid)?;
        }
        for (i, t) in self.api.team_tokens.iter().enumerate() {
            if t.team.is_empty() {
                return Err(invalid(format!("api.team_tokens[{i}].team is empty")));
            }
            match (&t.token, &t.hash) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(invalid(format!(
                        "api.team_tokens[{i}] (team {}) needs exactly one of token or hash",
                        t.team
                    )));
                }
                (None, Some(h)) if parse_key_hash(h).is_none() => {
                    return Err(invalid(format!(
                        "api.team_tokens[{i}].hash must be \"sha256:\" followed by 64 hex digits"
                    )));
                }
                _ => {}
            }
        }
        if self.api.sql_max_rows == 0 || self.api.sql_timeout_secs == 0 {
            return Err(invalid(
                "api.sql_max_rows and api.sql_timeout_secs must be at least 1".into(),
            ));
        }
        if self.api.max_view_events == 0 {
            return Err(invalid("api.max_view_events must be at least 1".into()));
        }
        if self.server.header_read_timeout_secs == 0 || self.server.max_connections == 0 {
            return Err(invalid(
                "server.header_read_timeout_secs and server.max_connections must be at least 1"
                    .into(),
            ));
        }
        if self.bus.queue_capacity == 0 || self.sink.flush_rows == 0 {
            return Err(invalid(
                "bus.queue_capacity and sink.flush_rows must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// A passthrough route may only reach Anthropic (the client's
    /// credential is Anthropic's), must not rewrite the body, and must not
    /// cache (an answer would be served across credentials).
    fn check_passthrough_route(
        &self,
        at: &str,
        route: &crate::gateway::route::RouteConfig,
    ) -> Result<(), String> {
        if route.cache.is_some() {
            return Err(format!(
                "{at}: a passthrough route cannot have a cache (answers would be shared across the clients' own credentials)"
            ));
        }
        for t in &route.targets {
            self.check_passthrough_provider(at, &t.provider)?;
            if !t.override_params.is_empty() {
                return Err(format!(
                    "{at}: target {:?} has override_params, but passthrough sends the client's body byte for byte",
                    t.provider
                ));
            }
        }
        Ok(())
    }

    fn check_passthrough_provider(&self, at: &str, provider: &str) -> Result<(), String> {
        match self.providers.get(provider).map(|p| p.kind) {
            Some(ProviderKind::Anthropic) | None => Ok(()),
            Some(kind) => Err(format!(
                "{at}: provider {provider:?} is kind {kind:?}, but passthrough forwards the client's own Anthropic credential and works with kind \"anthropic\" only"
            )),
        }
    }

    /// What a gateway checks before it starts: every key that is not
    /// passthrough must reach Anthropic providers that hold an `api_key`
    /// (a provider without one serves passthrough keys only).
    pub fn check_gateway_credentials(&self) -> Result<(), String> {
        for k in self.keys.iter().filter(|k| !k.is_passthrough(&self.routes)) {
            let providers: Vec<&str> = match k.route.as_ref().and_then(|r| self.routes.get(r)) {
                Some(r) => r.targets.iter().map(|t| t.provider.as_str()).collect(),
                None => vec![k.provider.as_str()],
            };
            for name in providers {
                let Some(p) = self.providers.get(name) else {
                    continue;
                };
                if p.kind == ProviderKind::Anthropic && p.api_key.is_empty() {
                    return Err(format!(
                        "providers.{name}.api_key is empty, but key {:?} is not passthrough and sends its requests there: set the key (ANTHROPIC_API_KEY), or mark the key `passthrough = true` so clients use their own Claude subscription or Anthropic key",
                        k.id
                    ));
                }
            }
        }
        Ok(())
    }

    /// Admin tokens that are actually set.
    pub fn admin_tokens(&self) -> impl Iterator<Item = &str> {
        self.api
            .admin_tokens
            .iter()
            .map(String::as_str)
            .filter(|t| !t.is_empty())
    }
}

/// The scopes an `[[api.scoped_tokens]]` entry may hold.
pub const ADMIN_SCOPES: [&str; 4] = ["admin:read", "admin:write", "keys:write", "budgets:write"];

/// One `[[api.scoped_tokens]]` entry: exactly one of token or hash, and
/// only known scopes (a typo would otherwise grant less than meant, silently).
fn check_scoped_token(i: usize, t: &ScopedTokenConfig) -> Result<(), String> {
    match (&t.token, &t.hash) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(format!(
                "api.scoped_tokens[{i}] needs exactly one of token or hash"
            ));
        }
        (None, Some(h)) if parse_key_hash(h).is_none() => {
            return Err(format!(
                "api.scoped_tokens[{i}].hash must be \"sha256:\" followed by 64 hex digits"
            ));
        }
        _ => {}
    }
    if t.scopes.is_empty() {
        return Err(format!("api.scoped_tokens[{i}].scopes is empty"));
    }
    match t
        .scopes
        .iter()
        .find(|s| !ADMIN_SCOPES.contains(&s.as_str()))
    {
        Some(s) => Err(format!(
            "api.scoped_tokens[{i}].scopes: unknown scope {s:?} (known: {})",
            ADMIN_SCOPES.join(", ")
        )),
        None => Ok(()),
    }
}

/// Expands `${VAR}` and `${VAR:-default}` in every string of the document.
fn interpolate(value: &mut toml::Value, at: &str, path: &Path) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) if s.contains('$') => {
            let expanded = shellexpand::env(s).map_err(|e| ConfigError::Interpolate {
                path: path.to_owned(),
                field: at.to_owned(),
                message: format!(
                    "environment variable {} is not set ({})",
                    e.var_name, e.cause
                ),
            })?;
            *s = expanded.into_owned();
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{at}[{i}]"), path)?;
            }
        }
        toml::Value::Table(table) => {
            for (k, item) in table.iter_mut() {
                let field = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                interpolate(item, &field, path)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The `[bus]` section of the starter config: Kafka when the installer
/// has brokers (`TOLLGATE_KAFKA_BROKERS`), the embedded log otherwise.
fn starter_bus(kafka: bool) -> &'static str {
    if kafka {
        include_str!("config_templates/bus_kafka.toml")
    } else {
        include_str!("config_templates/bus_embedded.toml")
    }
}

/// The commented starter config `tollgate init` writes, for one key; on
/// Kafka when `kafka` (the installer set `TOLLGATE_KAFKA_BROKERS`). The
/// text is a template file, so it reads as the TOML it produces; `@NAME@`
/// placeholders cannot clash with TOML or `${VAR}` interpolation.
pub fn starter_config(key: &str, key_id: &str, kafka: bool) -> String {
    include_str!("config_templates/starter.toml")
        .replace("@BUS@", starter_bus(kafka))
        .replace("@KEY_ID@", key_id)
        .replace("@KEY_HASH@", &hash_key(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starter_config_parses_and_its_key_matches_its_hash() {
        let key = generate_key();
        let cfg = Config::parse(&starter_config(&key, "k1", false), Path::new("t.toml")).unwrap();
        assert_eq!(
            parse_key_hash(&cfg.keys[0].hash),
            parse_key_hash(&hash_key(&key))
        );
        assert_eq!(cfg.providers["anthropic"].kind, ProviderKind::Anthropic);
        assert_eq!(cfg.bus.kind, BusKind::Embedded);
    }

    #[test]
    fn starter_config_serves_metrics_on_their_own_loopback_listener() {
        let cfg = Config::parse(&starter_config("tg-x", "k1", false), Path::new("t.toml")).unwrap();
        let metrics = cfg.server.metrics_listen.expect("metrics_listen is set");
        assert!(metrics.ip().is_loopback(), "{metrics}");
        assert_ne!(metrics, cfg.server.listen);
    }

    #[test]
    fn kafka_starter_config_reads_brokers_from_the_environment() {
        // SAFETY: this is the only test reading or writing this variable.
        unsafe { std::env::set_var("TOLLGATE_TEST_STARTER_BROKERS", "127.0.0.1:9092") };
        let text = starter_config("tg-x", "k1", true)
            .replace("TOLLGATE_KAFKA_BROKERS", "TOLLGATE_TEST_STARTER_BROKERS");
        let cfg = Config::parse(&text, Path::new("t.toml")).unwrap();
        assert_eq!(cfg.bus.kind, BusKind::Kafka);
        assert_eq!(cfg.bus.kafka.unwrap().brokers, "127.0.0.1:9092");
    }

    #[test]
    fn a_token_safety_factor_below_one_or_not_a_number_is_refused_by_name() {
        for factor in ["0.5", "nan", "-inf"] {
            let text = format!("[admission]\ntoken_safety_factor = {factor}\n");
            let err = Config::parse(&text, Path::new("t.toml"))
                .expect_err(factor)
                .to_string();
            assert!(
                err.contains("admission.token_safety_factor"),
                "{factor}: {err}"
            );
        }
        let ok = "[admission]\ntoken_safety_factor = 1.0\n";
        assert!(Config::parse(ok, Path::new("t.toml")).is_ok());
    }

    #[test]
    fn a_header_read_timeout_or_connection_limit_of_zero_is_refused_by_name() {
        let err = Config::parse(
            "[server]\nheader_read_timeout_secs = 0\n",
            Path::new("t.toml"),
        )
        .expect_err("0 would cut every connection off at once")
        .to_string();
        assert!(err.contains("server.header_read_timeout_secs"), "{err}");
        let err = Config::parse("[server]\nmax_connections = 0\n", Path::new("t.toml"))
            .expect_err("0 would serve nobody")
            .to_string();
        assert!(err.contains("server.max_connections"), "{err}");
        let ok = "[server]\nheader_read_timeout_secs = 5\nmax_connections = 10\n";
        let cfg = Config::parse(ok, Path::new("t.toml")).unwrap();
        assert_eq!(cfg.server.header_read_timeout_secs, 5);
        assert_eq!(cfg.server.max_connections, 10);
    }

    #[test]
    fn kafka_bus_without_brokers_is_rejected_by_name() {
        let err = Config::parse("[bus]\nkind = \"kafka\"\n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("[bus.kafka]"), "{err}");
        let err = Config::parse(
            "[bus]\nkind = \"kafka\"\n[bus.kafka]\nbrokers = \"\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bus.kafka.brokers"), "{err}");
    }

    #[test]
    fn interpolation_uses_default_when_variable_unset() {
        let text = r#"
            [providers.a]
            kind = "anthropic"
            base_url = "${TOLLGATE_TEST_SURELY_UNSET_VAR:-http://x}"
        "#;
        let cfg = Config::parse(text, Path::new("t.toml")).unwrap();
        assert_eq!(cfg.providers["a"].base_url, "http://x");
    }

    #[test]
    fn unset_variable_without_default_is_an_error_naming_field_and_variable() {
        let text = r#"
            [providers.a]
            kind = "anthropic"
            base_url = "${TOLLGATE_TEST_SURELY_UNSET_VAR}"
        "#;
        let err = Config::parse(text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("providers.a.base_url"), "{err}");
        assert!(err.contains("TOLLGATE_TEST_SURELY_UNSET_VAR"), "{err}");
    }

    #[test]
    fn budgets_rate_limits_and_webhooks_parse_and_bad_ones_are_named() {
        let text = r#"
            [[budgets]]
            name = "eng-monthly"
            scope = "team"
            subject = "eng"
            period = "monthly"
            timezone = "Europe/Berlin"
            limit_usd = "500.25"
            [[budgets]]
            name = "per-user-daily"
            scope = "user"
            period = "daily"
            limit_tokens = 1000000
            [[rate_limits]]
            scope = "key"
            requests_per_minute = 60
            [[webhooks]]
            url = "https://hooks.slack.com/services/x"
            format = "slack"
        "#;
        let cfg = Config::parse(text, Path::new("t.toml")).unwrap();
        assert_eq!(
            cfg.budgets[0].limit_usd,
            Some(rust_decimal::Decimal::new(50025, 2))
        );
        assert_eq!(cfg.budgets[1].thresholds, vec![50, 80, 100]);
        let bad_tz = text.replace("Europe/Berlin", "Mars/Olympus");
        let err = Config::parse(&bad_tz, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("eng-monthly") && err.contains("Mars/Olympus"),
            "{err}"
        );
        let no_limit = "[[budgets]]\nname = \"x\"\nscope = \"all\"\nperiod = \"daily\"\n";
        let err = Config::parse(no_limit, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("budgets[x]") && err.contains("limit_usd"),
            "{err}"
        );
    }

    #[test]
    fn unknown_field_is_rejected_by_name() {
        let err = Config::parse("[server]\nlistn = \"x\"\n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn key_naming_missing_provider_is_rejected() {
        let text = format!(
            "[[keys]]\nid='a'\nhash='{}'\nteam='t'\nuser='u'\nprovider='nope'\n",
            hash_key("x")
        );
        let err = Config::parse(&text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }

    fn passthrough_config(extra: &str) -> String {
        format!(
            r#"
            [providers.anthropic]
            kind = "anthropic"
            base_url = "https://api.anthropic.com"
            [providers.bedrock]
            kind = "bedrock"
            region = "us-east-1"
            bearer_token = "b"
            [[keys]]
            id = "sub"
            hash = "{}"
            team = "t"
            user = "u"
            provider = "anthropic"
            passthrough = true
            {extra}
            "#,
            hash_key("x")
        )
    }

    #[test]
    fn passthrough_key_without_provider_key_is_fine_a_plain_one_is_named() {
        let cfg = Config::parse(&passthrough_config(""), Path::new("t.toml")).unwrap();
        assert!(cfg.keys[0].is_passthrough(&cfg.routes));
        cfg.check_gateway_credentials().unwrap();
        let plain = format!(
            "[[keys]]\nid = \"api\"\nhash = \"{}\"\nteam = \"t\"\nuser = \"u\"\nprovider = \"anthropic\"\n",
            hash_key("y")
        );
        let cfg = Config::parse(&passthrough_config(&plain), Path::new("t.toml")).unwrap();
        let err = cfg.check_gateway_credentials().unwrap_err();
        assert!(
            err.contains("providers.anthropic.api_key")
                && err.contains("\"api\"")
                && err.contains("passthrough = true"),
            "{err}"
        );
    }

    #[test]
    fn passthrough_toward_bedrock_or_with_body_rewrites_is_rejected_by_name() {
        let text = passthrough_config("").replace(
            "provider = \"anthropic\"\n            passthrough",
            "provider = \"bedrock\"\n            passthrough",
        );
        let err = Config::parse(&text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("keys[sub]") && err.contains("bedrock") && err.contains("anthropic"),
            "{err}"
        );

        let route = r#"
            [routes.sub]
            passthrough = true
            targets = [{ provider = "anthropic", override_params = { model = "claude-haiku-4-5" } }]
        "#;
        let err = Config::parse(&passthrough_config(route), Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("routes.sub") && err.contains("override_params"),
            "{err}"
        );

        // A plain key on a passthrough route is passthrough.
        let route = r#"
            [routes.sub]
            passthrough = true
            targets = [{ provider = "anthropic" }]
        "#;
        let text = passthrough_config(route).replacen(
            "            passthrough = true\n",
            "            route = \"sub\"\n",
            1,
        );
        let cfg = Config::parse(&text, Path::new("t.toml")).unwrap();
        assert!(!cfg.keys[0].passthrough && cfg.keys[0].is_passthrough(&cfg.routes));
    }
}
