//! Errors of the query API, as JSON bodies with the matching status.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::lake::LakeError;

/// The error body every endpoint answers with on failure: the shape
/// `ApiError` serialises to, described for the OpenAPI document.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Always `error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `{type, message}`; the message names the parameter or rule.
    pub error: serde_json::Value,
}

/// Why a query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("send an admin or team token as `Authorization: Bearer <token>`")]
    Unauthorized,
    #[error(
        "the query API has no token configured (set TOLLGATE_ADMIN_TOKEN, or api.admin_tokens / api.team_tokens in the config)"
    )]
    NoToken,
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("invalid query parameter {name}: {reason}")]
    BadParam { name: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Lake(#[from] LakeError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            ApiError::Unauthorized | ApiError::NoToken => {
                (StatusCode::UNAUTHORIZED, "authentication_error")
            }
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "permission_error"),
            ApiError::BadParam { .. }
            | ApiError::Lake(LakeError::Refused(_) | LakeError::BadSql(_)) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error")
            }
            ApiError::Lake(LakeError::TooManyEvents { .. }) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request_error")
            }
            ApiError::Lake(LakeError::TimedOut(_)) => {
                (StatusCode::REQUEST_TIMEOUT, "timeout_error")
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found_error"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "api_error"),
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
