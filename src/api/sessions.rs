//! `POST /v1/sessions/{id}/resume`: a person lifts the block a runaway
//! guard put on a session.
//!
//! The API does not change state itself: it appends a `resumed` record
//! for each block in force on the session (one per key that sent it) to
//! the budgets topic, which every gateway follows, and the block ends
//! there as it began (the data path stays one-way: the accountant blocks,
//! the topic carries it, gateways obey).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use bytes::Bytes;

use super::error::ApiError;
use super::{ApiState, Reader};
use crate::budget::BudgetRecord;
use crate::bus::BUDGETS_TOPIC;
use crate::lake::query::Scope;

/// Longest session ID accepted in the path (events keep 256 bytes).
const MAX_SESSION_ID: usize = 256;

/// Resumes a blocked session (admin tokens only).
#[utoipa::path(post, path = "/v1/sessions/{session_id}/resume", tag = "sessions",
    params(("session_id" = String, Path, description = "Claude Code session ID")),
    responses((status = 200, description = "The blocks lifted", body = serde_json::Value),
        (status = 401, description = "Missing or unknown token", body = super::ErrorBody),
        (status = 403, description = "Not an admin token", body = super::ErrorBody),
        (status = 404, description = "The session is not blocked", body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn resume(
    State(state): State<Arc<ApiState>>,
    Path(session): Path<String>,
    Reader(scope): Reader,
) -> Result<Json<serde_json::Value>, ApiError> {
    if scope != Scope::All {
        return Err(ApiError::Forbidden(
            "resuming a session needs an admin token".into(),
        ));
    }
    if session.is_empty() || session.len() > MAX_SESSION_ID {
        return Err(ApiError::BadParam {
            name: "session_id".into(),
            reason: format!("must be 1 to {MAX_SESSION_ID} bytes"),
        });
    }
    let blocks = state.budgets.blocks_of(&session);
    if blocks.is_empty() {
        return Err(ApiError::NotFound(format!(
            "session {session} is not blocked by any guard"
        )));
    }
    let log = state.log.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "this API process has no bus to write to (on the embedded bus, call the API of `tollgate serve`)"
                .into(),
        )
    })?;
    let now = chrono::Utc::now();
    let mut records = Vec::new();
    let mut lifted = Vec::new();
    for mut b in blocks {
        b.at = now;
        lifted
            .push(serde_json::json!({"key_id": b.key_id, "guard": b.guard, "episode": b.episode}));
        let key = Bytes::from(b.bus_key());
        let json = serde_json::to_vec(&BudgetRecord::Resumed(b))
            .map_err(|e| ApiError::Unavailable(format!("resume record: {e}")))?;
        records.push((key, Bytes::from(json)));
    }
    log.append(BUDGETS_TOPIC, records)
        .await
        .map_err(|e| ApiError::Unavailable(format!("the bus refused the resume: {e}")))?;
    tracing::info!(%session, "session resumed by an admin");
    Ok(Json(
        serde_json::json!({"session": session, "resumed": lifted}),
    ))
}
