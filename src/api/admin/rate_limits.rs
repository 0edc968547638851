//! `/v1/admin/rate_limits`: list, set and delete rate limits (scope
//! `budgets:write`: they are admission limits like budgets). An id is
//! chosen by the caller; the body is a `[[rate_limits]]` table as JSON.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use bytes::Bytes;

use super::{AdminError, AdminState, CanRead, CanWriteBudgets, Granted, check_name, parse_body};
use crate::config::{BudgetScope, RateLimitConfig};
use crate::control::event::RateLimitEntry;
use crate::control::{ControlEvent, Kind, Origin};

/// The config's rules for one rate limit; a failure names the field.
fn validate(l: &RateLimitConfig) -> Result<(), AdminError> {
    if matches!(l.scope, BudgetScope::Workspace | BudgetScope::All) {
        return Err(AdminError::field("scope", "must be key, user or team"));
    }
    if let Some(s) = &l.subject {
        check_name("subject", s)?;
    }
    let positive = |n: Option<u32>| n.is_none_or(|n| n > 0);
    if l.requests_per_minute.is_none() && l.tokens_per_minute.is_none()
        || !positive(l.requests_per_minute)
        || !positive(l.tokens_per_minute)
    {
        return Err(AdminError::field(
            "requests_per_minute",
            "a positive requests_per_minute or tokens_per_minute is needed",
        ));
    }
    Ok(())
}

/// `GET /v1/admin/rate_limits`: `{data: [{id, limit, origin}]}`.
#[utoipa::path(get, path = "/v1/admin/rate_limits", tag = "admin",
    responses((status = 200, description = "`{data: [{id, limit, origin}]}`", body = serde_json::Value)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AdminState>>,
    _: Granted<CanRead>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let current = state.state()?;
    let data: Vec<serde_json::Value> = current
        .rate_limits
        .iter()
        .map(|(id, e)| serde_json::json!({"id": id, "limit": e.limit, "origin": e.origin}))
        .collect();
    Ok(Json(serde_json::json!({ "data": data })))
}

/// `PUT /v1/admin/rate_limits/{id}`: creates or replaces one.
#[utoipa::path(put, path = "/v1/admin/rate_limits/{id}", tag = "admin", request_body = serde_json::Value,
    params(("id" = String, Path, description = "The rate limit's id")),
    responses((status = 200, description = "The entry", body = serde_json::Value), (status = 400, description = "A field is invalid (named)", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn put(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteBudgets>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, AdminError> {
    if grant.workspace.is_some() {
        return Err(AdminError::Workspace(grant.workspace.unwrap_or_default()));
    }
    check_name("id", &id)?;
    let limit: RateLimitConfig = parse_body(&body)?;
    validate(&limit)?;
    let before = state
        .state()?
        .rate_limits
        .get(&id)
        .and_then(|e| serde_json::to_value(e).ok());
    let entry = RateLimitEntry {
        limit,
        origin: Origin::Api,
    };
    let after = serde_json::to_value(&entry).unwrap_or_default();
    let event = ControlEvent::new(
        Kind::RateLimitSet,
        &id,
        &grant.actor,
        before,
        Some(after.clone()),
    );
    state.write(&[event]).await?;
    Ok(Json(after))
}

/// `DELETE /v1/admin/rate_limits/{id}`.
#[utoipa::path(delete, path = "/v1/admin/rate_limits/{id}", tag = "admin",
    params(("id" = String, Path, description = "The rate limit's id")),
    responses((status = 200, description = "Removed", body = serde_json::Value), (status = 404, description = "No such rate limit", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteBudgets>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    if grant.workspace.is_some() {
        return Err(AdminError::Workspace(grant.workspace.unwrap_or_default()));
    }
    let before = state
        .state()?
        .rate_limits
        .get(&id)
        .cloned()
        .ok_or_else(|| AdminError::NotFound(format!("no rate limit {id:?}")))?;
    let event = ControlEvent::new(
        Kind::RateLimitRemoved,
        &id,
        &grant.actor,
        serde_json::to_value(before).ok(),
        None,
    );
    state.write(&[event]).await?;
    Ok(Json(serde_json::json!({ "id": id, "removed": true })))
}
