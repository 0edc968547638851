//! `GET /v1/logs` and `GET /v1/logs/{event_id}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, NaiveDate, Utc};
use http::HeaderMap;

use super::{ApiError, ApiState};
use crate::lake::query::{Cursor, LogFilter, LogPage};

/// Default and largest page size.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

const KNOWN_PARAMS: &[&str] = &[
    "trace_id",
    "session_id",
    "team",
    "user",
    "model",
    "status",
    "from",
    "to",
    "limit",
    "cursor",
];

/// Lists events matching the filters, newest first.
pub async fn list(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<LogPage>, ApiError> {
    api.authorize(&headers)?;
    let query = LogQuery::parse(&params)?;
    let page = api
        .lake
        .logs(&query.filter, query.limit, query.cursor.as_ref())
        .await?;
    Ok(Json(page))
}

/// One event by id.
pub async fn one(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(event_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    api.authorize(&headers)?;
    if uuid::Uuid::parse_str(&event_id).is_err() {
        return Err(bad("event_id", "must be a UUID"));
    }
    match api.lake.event(&event_id).await? {
        Some(event) => Ok(Json(event)),
        None => Err(ApiError::NotFound(event_id)),
    }
}

/// A validated `/v1/logs` query.
#[derive(Debug)]
struct LogQuery {
    filter: LogFilter,
    limit: usize,
    cursor: Option<Cursor>,
}

fn bad(name: &str, reason: &str) -> ApiError {
    ApiError::BadParam {
        name: name.to_owned(),
        reason: reason.to_owned(),
    }
}

impl LogQuery {
    fn parse(params: &HashMap<String, String>) -> Result<LogQuery, ApiError> {
        if let Some(unknown) = params.keys().find(|k| !KNOWN_PARAMS.contains(&k.as_str())) {
            return Err(bad(
                unknown,
                &format!("unknown parameter; known: {}", KNOWN_PARAMS.join(", ")),
            ));
        }
        let text = |name: &str| params.get(name).filter(|v| !v.is_empty()).cloned();
        let status = match params.get("status") {
            Some(s) => Some(
                s.parse::<u16>()
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                    .ok_or_else(|| bad("status", "must be an HTTP status code (100-599)"))?,
            ),
            None => None,
        };
        let limit = match params.get("limit") {
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|l| (1..=MAX_LIMIT).contains(l))
                .ok_or_else(|| {
                    bad(
                        "limit",
                        &format!("must be an integer from 1 to {MAX_LIMIT}"),
                    )
                })?,
            None => DEFAULT_LIMIT,
        };
        let cursor = match params.get("cursor") {
            Some(c) => Some(
                Cursor::decode(c)
                    .ok_or_else(|| bad("cursor", "is not a cursor this API returned"))?,
            ),
            None => None,
        };
        let filter = LogFilter {
            trace_id: text("trace_id"),
            session_id: text("session_id"),
            team: text("team"),
            user: text("user"),
            model: text("model"),
            status,
            from: time_param(params, "from")?,
            to: time_param(params, "to")?,
        };
        if let (Some(from), Some(to)) = (filter.from, filter.to) {
            if from > to {
                return Err(bad("from", "must not be after `to`"));
            }
        }
        Ok(LogQuery {
            filter,
            limit,
            cursor,
        })
    }
}

/// RFC 3339 time or a plain date (midnight UTC).
fn time_param(
    params: &HashMap<String, String>,
    name: &str,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(v) = params.get(name) else {
        return Ok(None);
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()));
    }
    Err(bad(
        name,
        "must be an RFC 3339 time (2026-11-22T10:00:00Z) or a date (2026-11-22)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn bad_parameters_are_named() {
        for (p, v) in [
            ("status", "abc"),
            ("limit", "0"),
            ("from", "yesterday"),
            ("cursor", "x"),
            ("trace", "t"),
        ] {
            let err = LogQuery::parse(&params(&[(p, v)])).unwrap_err().to_string();
            assert!(err.contains(p), "{p}: {err}");
        }
    }

    #[test]
    fn dates_and_times_are_both_accepted() {
        let q = LogQuery::parse(&params(&[
            ("from", "2026-11-01"),
            ("to", "2026-11-22T10:00:00Z"),
        ]))
        .unwrap();
        assert!(q.filter.from.unwrap() < q.filter.to.unwrap());
    }
}
