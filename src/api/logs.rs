//! `GET /v1/logs`, `GET /v1/logs/{event_id}` and `GET /v1/traces/{trace_id}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ErrorBody;
use super::params::{Filtered, Filters, bad, int, text};
use super::{ApiError, ApiState, Reader};
use crate::lake::query::{Cursor, LogPage, LogQuery, SessionView, SortKey, TraceView};

/// Default and largest page size.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// `/v1/logs`' own parameters (beside the [`Filters`]).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsParams {
    /// started_at, latency_ms, cost_usd or total_tokens; prefix `-` for descending (default -started_at)
    pub sort: Option<String>,
    /// Page size, 1-1000 (default 100)
    #[param(value_type = Option<usize>)]
    pub limit: Option<String>,
    /// next_cursor of the previous page
    pub cursor: Option<String>,
}

/// Lists events matching the filters, newest first unless `sort` says
/// otherwise.
#[utoipa::path(get, path = "/v1/logs", tag = "logs",
    params(Filters, LogsParams),
    responses((status = 200, description = "A page of events", body = LogPage),
        (status = 400, description = "An invalid parameter, named", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "A team token asked for another team", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(api): State<Arc<ApiState>>,
    Reader(scope): Reader,
    Filtered { params, filters }: Filtered<LogsParams>,
) -> Result<Json<LogPage>, ApiError> {
    let (sort, descending) = sort_param(text(&params.sort))?;
    let cursor = match text(&params.cursor) {
        Some(c) => Some(
            Cursor::decode(&c)
                .filter(|c| c.key == sort && c.descending == descending)
                .ok_or_else(|| bad("cursor", "is not a cursor this API returned for this sort"))?,
        ),
        None => None,
    };
    let query = LogQuery {
        filter: filters.filter(&scope)?,
        sort,
        descending,
        limit: int("limit", &params.limit, 1, MAX_LIMIT, DEFAULT_LIMIT)?,
        cursor,
    };
    Ok(Json(api.lake.logs(&scope, &query).await?))
}

/// `sort=-cost_usd` → (cost, descending); absent → newest first.
fn sort_param(sort: Option<String>) -> Result<(SortKey, bool), ApiError> {
    let Some(sort) = sort else {
        return Ok((SortKey::StartedAt, true));
    };
    let (name, descending) = match sort.strip_prefix('-') {
        Some(name) => (name, true),
        None => (sort.as_str(), false),
    };
    SortKey::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| (*k, descending))
        .ok_or_else(|| {
            bad(
                "sort",
                "must be started_at, latency_ms, cost_usd or total_tokens, with `-` for descending",
            )
        })
}

/// One event by id.
#[utoipa::path(get, path = "/v1/logs/{event_id}", tag = "logs",
    params(("event_id" = String, Path, description = "The event's UUID (x-tollgate-event-id)")),
    responses((status = 200, description = "The event", body = serde_json::Value),
        (status = 404, description = "No such event (or not visible to this token)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn one(
    State(api): State<Arc<ApiState>>,
    Reader(scope): Reader,
    Path(event_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if uuid::Uuid::parse_str(&event_id).is_err() {
        return Err(bad("event_id", "must be a UUID"));
    }
    match api.lake.event(&scope, &event_id).await? {
        Some(event) => Ok(Json(event)),
        None => Err(ApiError::NotFound(format!("no event with id {event_id}"))),
    }
}

/// Every event of a trace, oldest first, with totals of tokens, cost and
/// latency.
#[utoipa::path(get, path = "/v1/traces/{trace_id}", tag = "logs",
    params(("trace_id" = String, Path, description = "The trace id (x-tollgate-trace-id)")),
    responses((status = 200, description = "The trace", body = TraceView),
        (status = 422, description = "The trace has more events than api.max_view_events (page with /v1/logs?trace_id=)", body = ErrorBody),
        (status = 404, description = "No events for this trace (or none visible to this token)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn trace(
    State(api): State<Arc<ApiState>>,
    Reader(scope): Reader,
    Path(trace_id): Path<String>,
) -> Result<Json<TraceView>, ApiError> {
    match api
        .lake
        .trace(&scope, &trace_id, api.max_view_events)
        .await?
    {
        Some(view) => Ok(Json(view)),
        None => Err(ApiError::NotFound(format!(
            "no events for trace {trace_id}"
        ))),
    }
}

/// Every event of one Claude Code session (`x-claude-code-session-id`),
/// oldest first, with totals and the session's agent tree: each subagent
/// under the agent that started it, with its own and its subtree's spend.
#[utoipa::path(get, path = "/v1/sessions/{session_id}", tag = "logs",
    params(("session_id" = String, Path, description = "Claude Code's session id")),
    responses((status = 200, description = "The session and its agent tree", body = SessionView),
        (status = 422, description = "The session has more events than api.max_view_events (page with /v1/logs?session_id=)", body = ErrorBody),
        (status = 404, description = "No events for this session (or none visible to this token)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn session(
    State(api): State<Arc<ApiState>>,
    Reader(scope): Reader,
    Path(session_id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    match api
        .lake
        .session(&scope, &session_id, api.max_view_events)
        .await?
    {
        Some(view) => Ok(Json(view)),
        None => Err(ApiError::NotFound(format!(
            "no events for session {session_id}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_parameter_reads_direction_and_names_bad_values() {
        assert_eq!(sort_param(None).unwrap(), (SortKey::StartedAt, true));
        assert_eq!(
            sort_param(Some("-cost_usd".into())).unwrap(),
            (SortKey::CostUsd, true)
        );
        assert_eq!(
            sort_param(Some("latency_ms".into())).unwrap(),
            (SortKey::LatencyMs, false)
        );
        assert!(
            sort_param(Some("price".into()))
                .unwrap_err()
                .to_string()
                .contains("sort")
        );
    }
}
