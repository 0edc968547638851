//! The query API: logs from the lake over HTTP.

mod error;
mod logs;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

pub use error::ApiError;

use crate::gateway::admission::Admission;
use crate::lake::query::Lake;

/// What the API handlers share.
pub struct ApiState {
    pub lake: Lake,
    /// SHA-256 digests of the admin tokens (compared in constant time).
    admin_digests: Vec<[u8; 32]>,
    /// Live budget state (what gateways admit against).
    pub budgets: Arc<Admission>,
}

impl ApiState {
    /// State over an opened lake and the configured admin tokens.
    pub fn new<'a>(
        lake: Lake,
        admin_tokens: impl Iterator<Item = &'a str>,
        budgets: Arc<Admission>,
    ) -> ApiState {
        ApiState {
            lake,
            admin_digests: admin_tokens.map(digest).collect(),
            budgets,
        }
    }

    /// Checks `Authorization: Bearer <admin token>`.
    fn authorize(&self, headers: &http::HeaderMap) -> Result<(), ApiError> {
        if self.admin_digests.is_empty() {
            return Err(ApiError::NoAdminToken);
        }
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        let presented = digest(token);
        // Comparing fixed-size digests keeps timing independent of where a
        // guess first differs from the real token.
        let ok = self.admin_digests.iter().any(|d| {
            d.iter()
                .zip(presented.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
        });
        ok.then_some(()).ok_or(ApiError::Unauthorized)
    }
}

fn digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// The API's routes.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/logs", get(logs::list))
        .route("/v1/logs/{event_id}", get(logs::one))
        .route("/v1/budgets", get(budgets))
        .with_state(state)
}

/// `GET /v1/budgets`: every budget ledger of the current periods with
/// spend (from the accountant's state) and what this process reserved.
async fn budgets(
    axum::extract::State(state): axum::extract::State<Arc<ApiState>>,
    headers: http::HeaderMap,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    state.authorize(&headers)?;
    let data: Vec<serde_json::Value> = state
        .budgets
        .ledgers()
        .into_iter()
        .map(|(id, total, reserved)| {
            serde_json::json!({
                "budget": id.budget,
                "subject": id.subject,
                "period_start": id.period_start,
                "period_end": total.period_end,
                "spent_usd": total.spent_usd.to_string(),
                "spent_tokens": total.spent_tokens,
                "reserved_usd": reserved.to_string(),
            })
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "data": data })))
}
