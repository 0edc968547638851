//! `GET /v1/spend`, `/v1/spend/top-sessions` and `/v1/spend/cache-savings`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};

use super::error::ErrorBody;
use super::params::{Params, bad};
use super::{ApiError, ApiState, Reader};
use crate::lake::query::{GroupBy, Scope, SpendQuery, SpendResult, TopSessionsQuery};

/// Largest number of groups or sessions one answer holds.
const MAX_ROWS: usize = 10_000;

/// `group_by=team,model` → the groups, each named if unknown.
fn group_by(text: Option<String>, default: &[GroupBy]) -> Result<Vec<GroupBy>, ApiError> {
    let Some(text) = text else {
        return Ok(default.to_vec());
    };
    let mut out = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let g = GroupBy::parse(name).ok_or_else(|| {
            bad(
                "group_by",
                &format!("{name:?} is not a grouping; use any of {}", GroupBy::NAMES),
            )
        })?;
        if !out.contains(&g) {
            out.push(g);
        }
    }
    Ok(out)
}

/// The grouping, filters and row cap of `/v1/spend` and its cousins
/// (grouped by team unless `group_by` says otherwise).
fn spend_query(params: &HashMap<String, String>, scope: &Scope) -> Result<SpendQuery, ApiError> {
    let p = Params::new(params, &["group_by", "limit"])?;
    Ok(SpendQuery {
        group_by: group_by(p.text("group_by"), &[GroupBy::Team])?,
        filter: p.filter(scope)?,
        limit: p.int("limit", 1, MAX_ROWS, 1000)?,
    })
}

/// Cost per token class and tokens, grouped; spend counts API-billed
/// events only, and subscription-billed list-price value is its own column.
#[utoipa::path(get, path = "/v1/spend", tag = "spend",
    params(
        ("group_by" = Option<String>, Query, description = "Comma-separated: team, user, key, model, provider, day, hour, session, agent, billed_by, metadata.<key> (default team)"),
        ("limit" = Option<usize>, Query, description = "Most groups returned, 1-10000 (default 1000)"),
        ("from" = Option<String>, Query), ("to" = Option<String>, Query),
        ("team" = Option<String>, Query), ("user" = Option<String>, Query), ("key" = Option<String>, Query),
        ("model" = Option<String>, Query), ("provider" = Option<String>, Query),
        ("session_id" = Option<String>, Query), ("metadata.<key>" = Option<String>, Query),
    ),
    responses((status = 200, description = "One row per group: requests, tokens per class, spend per class, subscription value, cache savings", body = SpendResult),
        (status = 400, description = "An invalid parameter, named", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn spend(
    State(api): State<Arc<ApiState>>,
    Reader(scope): Reader,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<SpendResult>, ApiError> {
    let q = spend_query(&params, &scope)?;
    Ok(Json(api.lake.spend(&scope, &q).await?))
}

/// The top sessions by spend (or subscription value, or tokens).
#[utoipa::path(get, path = "/v1/spend/top-sessions", tag = "spend",
    params(
        ("limit" = Option<usize>, Query, description = "How many sessions, 1-10000 (default 10)"),
        ("order_by" = Option<String>, Query, description = "spend_usd (default), subscription_value_usd or total_tokens"),
        ("from" = Option<String>, Query), ("to" = Option<String>, Query),
        ("team" = Option<String>, Query), ("user" = Option<String>, Query), ("model" = Option<String>, Query),
    ),
    responses((status = 200, description = "Sessions, costliest first", body = SpendResult),
        (status = 400, description = "An invalid parameter, named", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn top_sessions(
    State(api): State<Arc<ApiState>>,
    Reader(scope): Reader,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<SpendResult>, ApiError> {
    let p = Params::new(&params, &["limit", "order_by"])?;
    let order_by = match p.text("order_by").as_deref() {
        None | Some("spend_usd") => "spend_usd",
        Some("subscription_value_usd") => "subscription_value_usd",
        Some("total_tokens") => "total_tokens",
        Some(_) => {
            return Err(bad(
                "order_by",
                "must be spend_usd, subscription_value_usd or total_tokens",
            ));
        }
    };
    let q = TopSessionsQuery {
        filter: p.filter(&scope)?,
        limit: p.int("limit", 1, MAX_ROWS, 10)?,
        order_by,
    };
    Ok(Json(api.lake.top_sessions(&scope, &q).await?))
}

/// What prompt-cache reads saved against paying full input price, per
/// team (or another grouping).
#[utoipa::path(get, path = "/v1/spend/cache-savings", tag = "spend",
    params(
        ("group_by" = Option<String>, Query, description = "As for /v1/spend (default team)"),
        ("limit" = Option<usize>, Query),
        ("from" = Option<String>, Query), ("to" = Option<String>, Query), ("team" = Option<String>, Query),
    ),
    responses((status = 200, description = "cache_read_tokens, cache_read_usd (paid), full_price_usd (as plain input), savings_usd; subscription-billed savings apart", body = SpendResult)),
    security(("bearer" = [])))]
pub async fn cache_savings(
    State(api): State<Arc<ApiState>>,
    Reader(scope): Reader,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<SpendResult>, ApiError> {
    let q = spend_query(&params, &scope)?;
    Ok(Json(api.lake.cache_savings(&scope, &q).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_by_lists_parse_and_unknown_names_are_refused_by_name() {
        let g = group_by(Some("team, metadata.repo,day".into()), &[]).unwrap();
        assert_eq!(
            g,
            vec![
                GroupBy::Team,
                GroupBy::Metadata("repo".into()),
                GroupBy::Day
            ]
        );
        let err = group_by(Some("team,colour".into()), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour") && err.contains("group_by"), "{err}");
    }
}
