//! `POST /v1/sql`: one read-only query over `events`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use serde::Deserialize;

use super::error::ErrorBody;
use super::params::bad;
use super::{ApiError, ApiState, Reader};
use crate::lake::query::{SqlLimits, SqlResult};

/// The request body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// One SELECT statement over the table `events`.
    pub sql: String,
    /// Fewer rows than the configured cap, if wanted.
    #[serde(default)]
    pub max_rows: Option<usize>,
}

/// Runs one SELECT over `events` (only the caller's team's rows for a team
/// token), capped in rows and time.
#[utoipa::path(post, path = "/v1/sql", tag = "sql",
    request_body = SqlRequest,
    responses((status = 200, description = "Columns and rows; truncated when the row cap cut the result", body = SqlResult),
        (status = 400, description = "Refused (not one SELECT) or failed SQL, with the reason", body = ErrorBody),
        (status = 408, description = "The query passed its time limit and was cancelled", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn run(
    State(api): State<Arc<ApiState>>,
    Reader(scope): Reader,
    body: Result<Json<SqlRequest>, JsonRejection>,
) -> Result<Json<SqlResult>, ApiError> {
    let Json(request) = body.map_err(|e| bad("body", &e.body_text()))?;
    let max_rows = match request.max_rows {
        Some(n) if n == 0 || n > api.sql_limits.max_rows => {
            return Err(bad(
                "max_rows",
                &format!("must be from 1 to {}", api.sql_limits.max_rows),
            ));
        }
        Some(n) => n,
        None => api.sql_limits.max_rows,
    };
    let limits = SqlLimits {
        max_rows,
        ..api.sql_limits
    };
    Ok(Json(api.lake.sql(&scope, &request.sql, limits).await?))
}
