//! The query API: logs from the lake over HTTP.

mod error;
mod logs;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

pub use error::ApiError;

use crate::lake::query::Lake;

/// What the API handlers share.
pub struct ApiState {
    pub lake: Lake,
    /// SHA-256 digests of the admin tokens (compared in constant time).
    admin_digests: Vec<[u8; 32]>,
}

impl ApiState {
    /// State over an opened lake and the configured admin tokens.
    pub fn new<'a>(lake: Lake, admin_tokens: impl Iterator<Item = &'a str>) -> ApiState {
        ApiState {
            lake,
            admin_digests: admin_tokens.map(digest).collect(),
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
        .with_state(state)
}
