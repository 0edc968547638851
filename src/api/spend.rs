//! `GET /v1/spend`, `/v1/spend/top-sessions` and `/v1/spend/cache-savings`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ErrorBody;
use super::params::{Filtered, Filters, bad, int, text};
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

/// `/v1/spend`'s and `/v1/spend/cache-savings`' own parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SpendParams {
    /// Comma-separated: team, user, key, model, provider, day, hour, session, agent, billed_by, `metadata.<key>` (default team)
    pub group_by: Option<String>,
    /// Most groups returned, 1-10000 (default 1000)
    #[param(value_type = Option<usize>)]
    pub limit: Option<String>,
}

/// `/v1/spend/top-sessions`' own parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopSessionsParams {
    /// How many sessions, 1-10000 (default 10)
    #[param(value_type = Option<usize>)]
    pub limit: Option<String>,
    /// spend_usd (default), subscription_value_usd or total_tokens
    pub order_by: Option<String>,
}

/// The grouping, filters and row cap of `/v1/spend` and its cousins
/// (grouped by team unless `group_by` says otherwise).
fn spend_query(
    Filtered { params, filters }: Filtered<SpendParams>,
    scope: &Scope,
) -> Result<SpendQuery, ApiError> {
    Ok(SpendQuery {
        group_by: group_by(text(&params.group_by), &[GroupBy::Team])?,
        filter: filters.filter(scope)?,
        limit: int("limit", &params.limit, 1, MAX_ROWS, 1000)?,
    })
}

/// Cost per token class and tokens, grouped; spend counts API-billed
/// events only, and subscription-billed list-price value is its own column.
#[utoipa::path(get, path = "/v1/spend", tag = "spend",
    params(SpendParams, Filters),
    responses((status = 200, description = "One row per group: requests, tokens per class, spend per class, subscription value, cache savings", body = SpendResult),
        (status = 400, description = "An invalid parameter, named", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn spend(
    State(api): State<Arc<ApiState>>,
    Reader(scope): Reader,
    params: Filtered<SpendParams>,
) -> Result<Json<SpendResult>, ApiError> {
    let q = spend_query(params, &scope)?;
    Ok(Json(api.lake.spend(&scope, &q).await?))
}

/// The top sessions by spend (or subscription value, or tokens).
#[utoipa::path(get, path = "/v1/spend/top-sessions", tag = "spend",
    params(TopSessionsParams, Filters),
    responses((status = 200, description = "Sessions, costliest first", body = SpendResult),
        (status = 400, description = "An invalid parameter, named", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn top_sessions(
    State(api): State<Arc<ApiState>>,
    Reader(scope): Reader,
    Filtered { params, filters }: Filtered<TopSessionsParams>,
) -> Result<Json<SpendResult>, ApiError> {
    let order_by = match text(&params.order_by).as_deref() {
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
        filter: filters.filter(&scope)?,
        limit: int("limit", &params.limit, 1, MAX_ROWS, 10)?,
        order_by,
    };
    Ok(Json(api.lake.top_sessions(&scope, &q).await?))
}

/// What prompt-cache reads saved against paying full input price, per
/// team (or another grouping).
#[utoipa::path(get, path = "/v1/spend/cache-savings", tag = "spend",
    params(SpendParams, Filters),
    responses((status = 200, description = "cache_read_tokens, cache_read_usd (paid), full_price_usd (as plain input), savings_usd; subscription-billed savings apart", body = SpendResult)),
    security(("bearer" = [])))]
pub async fn cache_savings(
    State(api): State<Arc<ApiState>>,
    Reader(scope): Reader,
    params: Filtered<SpendParams>,
) -> Result<Json<SpendResult>, ApiError> {
    let q = spend_query(params, &scope)?;
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
