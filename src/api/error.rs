//! Errors of the query API, as JSON bodies with the matching status.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::lake::LakeError;

/// Why a query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("send an admin token as `Authorization: Bearer <token>`")]
    Unauthorized,
    #[error(
        "the query API has no admin token configured (set TOLLGATE_ADMIN_TOKEN, or api.admin_tokens in the config)"
    )]
    NoAdminToken,
    #[error("invalid query parameter {name}: {reason}")]
    BadParam { name: String, reason: String },
    #[error("no event with id {0}")]
    NotFound(String),
    #[error("{0}")]
    Lake(#[from] LakeError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            ApiError::Unauthorized | ApiError::NoAdminToken => {
                (StatusCode::UNAUTHORIZED, "authentication_error")
            }
            ApiError::BadParam { .. } => (StatusCode::BAD_REQUEST, "invalid_request_error"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found_error"),
            ApiError::Lake(e) => {
                tracing::error!(error = %e, "lake query failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "api_error")
            }
        };
        let body = serde_json::json!({
            "type": "error",
            "error": { "type": kind, "message": self.to_string() },
        });
        (status, axum::Json(body)).into_response()
    }
}
