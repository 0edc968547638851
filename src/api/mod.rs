//! The query API: logs, traces, spend and read-only SQL over the lake,
//! budgets from the live state, and its own OpenAPI description.
//!
//! Every data endpoint takes a [`Reader`] (an extractor over the bearer
//! token) holding its [`Scope`]: admin tokens see every row, a team token
//! only its team's, and the lake applies that scope to every query.

pub mod admin;
mod error;
mod logs;
pub mod openapi;
mod params;
mod sessions;
mod spend;
mod sql;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};

pub use error::{ApiError, ErrorBody};

use crate::config::ApiConfig;
use crate::gateway::admission::Admission;
use crate::lake::query::{Lake, Scope, SqlLimits};

/// What the API handlers share.
pub struct ApiState {
    pub lake: Lake,
    /// SHA-256 digests of the tokens and the rows each may read (compared
    /// in constant time; plaintext tokens are not kept).
    tokens: Vec<([u8; 32], Scope)>,
    /// Live budget state (what gateways admit against).
    pub budgets: Arc<Admission>,
    /// Caps of `POST /v1/sql`.
    pub sql_limits: SqlLimits,
    /// Most events a trace or session view may hold
    /// (`api.max_view_events`).
    pub max_view_events: usize,
    /// The bus, where `POST /v1/sessions/{id}/resume` writes; `None` in an
    /// API-only process on the embedded bus (the serving process holds it).
    log: Option<Arc<dyn crate::bus::Log>>,
}

impl ApiState {
    /// State over an opened lake and the configured tokens.
    pub fn new(lake: Lake, config: &ApiConfig, budgets: Arc<Admission>) -> ApiState {
        let admins = config
            .admin_tokens
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| (digest(t.as_bytes()), Scope::All));
        let teams = config
            .team_tokens
            .iter()
            .filter_map(|t| Some((t.digest()?, Scope::Team(t.team.clone()))));
        ApiState {
            lake,
            tokens: admins.chain(teams).collect(),
            budgets,
            sql_limits: SqlLimits {
                max_rows: config.sql_max_rows,
                timeout: Duration::from_secs(config.sql_timeout_secs),
            },
            max_view_events: config.max_view_events,
            log: None,
        }
    }

    /// Lets the API write resumes of blocked sessions to the bus.
    pub fn with_log(mut self, log: Option<Arc<dyn crate::bus::Log>>) -> ApiState {
        self.log = log;
        self
    }

    /// The rows the caller's `Authorization: Bearer <token>` may read.
    fn authorize(&self, headers: &http::HeaderMap) -> Result<Scope, ApiError> {
        if self.tokens.is_empty() {
            return Err(ApiError::NoToken);
        }
        let token = crate::http_headers::bearer_token(headers).ok_or(ApiError::Unauthorized)?;
        lookup_token(&self.tokens, token)
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}

/// The rows the caller may read, from its `Authorization: Bearer <token>`:
/// an extractor, so no data handler can forget to ask and each states in
/// its signature that it reads scoped rows.
pub struct Reader(pub Scope);

impl axum::extract::FromRequestParts<Arc<ApiState>> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        state.authorize(&parts.headers).map(Reader)
    }
}

/// A token's SHA-256: API tokens are held as digests only.
fn digest(token: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token).into()
}

/// What `token` is worth among `tokens` (digest → value), for both the
/// query and the admin API. Comparing fixed-size digests keeps timing
/// independent of where a guess first differs from a real token.
fn lookup_token<'a, T>(tokens: &'a [([u8; 32], T)], token: &[u8]) -> Option<&'a T> {
    let presented = digest(token);
    tokens
        .iter()
        .find(|(d, _)| {
            d.iter()
                .zip(presented.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
        })
        .map(|(_, value)| value)
}

/// The API's routes.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/logs", get(logs::list))
        .route("/v1/logs/{event_id}", get(logs::one))
        .route("/v1/traces/{trace_id}", get(logs::trace))
        .route("/v1/sessions/{session_id}", get(logs::session))
        .route("/v1/sessions/{session_id}/resume", post(sessions::resume))
        .route("/v1/spend", get(spend::spend))
        .route("/v1/spend/top-sessions", get(spend::top_sessions))
        .route("/v1/spend/cache-savings", get(spend::cache_savings))
        .route("/v1/sql", post(sql::run))
        .route("/v1/budgets", get(budgets))
        .route("/openapi.json", get(openapi::serve))
        .route_layer(axum::middleware::from_fn(track))
        .with_state(state)
}

/// Counts and times every API request by its route (never its raw path:
/// trace IDs in paths must not become labels).
async fn track(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let endpoint = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let m = &crate::metrics::METRICS;
    m.api_requests
        .with_label_values(&[&endpoint, response.status().as_str()])
        .inc();
    m.api_duration
        .with_label_values(&[&endpoint])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// `GET /v1/budgets`: every budget ledger of the current periods with
/// spend (from the accountant's state) and what this process reserved. A
/// team token sees the ledgers whose subject is its team.
#[utoipa::path(get, path = "/v1/budgets", tag = "budgets",
    responses((status = 200, description = "Budget ledgers of the current periods", body = serde_json::Value),
        (status = 401, description = "Missing or unknown token", body = ErrorBody)),
    security(("bearer" = [])))]
async fn budgets(
    axum::extract::State(state): axum::extract::State<Arc<ApiState>>,
    Reader(scope): Reader,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let data: Vec<serde_json::Value> = state
        .budgets
        .ledgers()
        .into_iter()
        .filter(|(id, ..)| match &scope {
            Scope::All => true,
            Scope::Team(team) => id.subject == *team,
        })
        .map(|(id, total, (reserved_usd, reserved_tokens))| {
            serde_json::json!({
                "budget": id.budget,
                "subject": id.subject,
                "period_start": id.period_start,
                "period_end": total.period_end,
                "spent_usd": total.spent_usd.to_string(),
                "spent_tokens": total.spent_tokens,
                "reserved_usd": reserved_usd.to_string(),
                "reserved_tokens": reserved_tokens,
            })
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "data": data })))
}
