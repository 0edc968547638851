//! `GET /v1/audit`: who changed what, when, before and after — the
//! control topic itself (no secrets are ever on it).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{AdminError, AdminState, CanRead, Grant, Granted};
use crate::control::ControlEvent;

/// Most entries one answer holds.
const MAX_LIMIT: usize = 10_000;

/// The audit filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only changes at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<DateTime<Utc>>,
    /// Only changes before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<DateTime<Utc>>,
    /// Only changes by this actor.
    pub actor: Option<String>,
    /// Only this kind (`key.created`) or family (`key`).
    pub kind: Option<String>,
    /// Most entries (default 1000, newest kept).
    pub limit: Option<usize>,
}

/// One audit entry: the control event as stored.
pub type AuditEntry = ControlEvent;

/// Whether a workspace-limited token may see `e`: events about its
/// workspace's keys and teams, budgets on its workspace, the workspace.
fn visible(grant: &Grant, e: &ControlEvent) -> bool {
    let Some(w) = &grant.workspace else {
        return true;
    };
    [&e.before, &e.after].into_iter().flatten().any(|v| {
        v.get("workspace").and_then(|x| x.as_str()) == Some(w)
            || (e.kind.family() == "workspace" && e.id == *w)
            || (v["budget"]["scope"] == "workspace" && v["budget"]["subject"].as_str() == Some(w))
    })
}

/// `GET /v1/audit?from=&to=&actor=&kind=&limit=`.
#[utoipa::path(get, path = "/v1/audit", tag = "admin", params(AuditQuery),
    responses((status = 200, description = "`{data: [{event_id, kind, id, actor, at, before, after}]}`, oldest first", body = serde_json::Value),
        (status = 403, description = "The token lacks admin:read", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanRead>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let Query(q) = query.map_err(|e| AdminError::field("query", e.body_text()))?;
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(AdminError::field(
            "limit",
            format!("must be 1 to {MAX_LIMIT}"),
        ));
    }
    let kind_matches = |e: &ControlEvent| match &q.kind {
        None => true,
        Some(k) => e.kind.as_str() == k || e.kind.family() == k,
    };
    let events = state.control()?.history(|e| {
        q.from.is_none_or(|f| e.at >= f)
            && q.to.is_none_or(|t| e.at < t)
            && q.actor.as_ref().is_none_or(|a| &e.actor == a)
            && kind_matches(e)
            && visible(&grant, e)
    });
    let skip = events.len().saturating_sub(limit);
    let data: Vec<serde_json::Value> = events[skip..]
        .iter()
        .filter_map(|e| serde_json::to_value(e.as_ref()).ok())
        .collect();
    Ok(Json(serde_json::json!({ "data": data })))
}
