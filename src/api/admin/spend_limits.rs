//! Anthropic's Admin API for spend limits, over tollgate budgets.
//!
//! `GET/POST /v1/organizations/spend_limits`, `GET/DELETE
//! /v1/organizations/spend_limits/{id}` with Anthropic's wire shapes: a
//! limit is `{type: "spend_limit", id: "spl_…", scope: {type, …}, amount:
//! "<cents>"|null, currency, period, created_at, is_enabled}`. Scopes map
//! onto budgets: `user` (`user_id`) → scope user, `rbac_group`
//! (`rbac_group_id`) → scope team, `organization` → scope all. A limit's
//! id is `spl_` + the budget's name; every budget of those scopes with a
//! USD limit and a daily, weekly or monthly period is listed. Setting is an
//! upsert keyed on (scope, period), as Anthropic's is; `amount: null`
//! (no cap at this scope and period) removes the budget.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use bytes::Bytes;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{AdminError, AdminState, CanRead, CanWriteBudgets, Granted, parse_body};
use crate::config::{BudgetConfig, BudgetPeriod, BudgetScope};
use crate::control::event::BudgetEntry;

/// What a spend limit applies to (a tagged union on `type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Scope {
    User { user_id: String },
    RbacGroup { rbac_group_id: String },
    Organization,
}

/// The periods a spend limit resets over.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
}

/// `POST /v1/organizations/spend_limits`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSpendLimit {
    pub scope: Scope,
    /// Cents as a decimal string; `null`: no cap at this scope and period.
    pub amount: Option<String>,
    pub period: Period,
}

/// `GET /v1/organizations/spend_limits`'s paging (other parameters, such
/// as `scope_type`, are accepted and ignored).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Most limits per page (1 to 1000, default 20)
    pub limit: Option<usize>,
    /// A previous answer's next_page
    pub page: Option<String>,
}

/// The budget scope, subject and period a spend limit maps onto.
fn budget_terms(scope: &Scope, period: Period) -> (BudgetScope, Option<String>, BudgetPeriod) {
    let (s, subject) = match scope {
        Scope::User { user_id } => (BudgetScope::User, Some(user_id.clone())),
        Scope::RbacGroup { rbac_group_id } => (BudgetScope::Team, Some(rbac_group_id.clone())),
        Scope::Organization => (BudgetScope::All, None),
    };
    let p = match period {
        Period::Daily => BudgetPeriod::Daily,
        Period::Weekly => BudgetPeriod::Weekly,
        Period::Monthly => BudgetPeriod::Monthly,
    };
    (s, subject, p)
}

/// The spend limit a budget shows as, if it maps onto one.
fn as_spend_limit(
    b: &BudgetConfig,
    created_at: chrono::DateTime<chrono::Utc>,
) -> Option<serde_json::Value> {
    let scope = match (b.scope, &b.subject) {
        (BudgetScope::User, Some(u)) => Scope::User { user_id: u.clone() },
        (BudgetScope::Team, Some(t)) => Scope::RbacGroup {
            rbac_group_id: t.clone(),
        },
        (BudgetScope::All, None) => Scope::Organization,
        _ => return None,
    };
    let period = match b.period {
        BudgetPeriod::Daily => Period::Daily,
        BudgetPeriod::Weekly => Period::Weekly,
        BudgetPeriod::Monthly => Period::Monthly,
        BudgetPeriod::Total => return None,
    };
    let cents = (b.limit_usd? * Decimal::from(100)).round();
    Some(serde_json::json!({
        "type": "spend_limit",
        "id": format!("spl_{}", b.name),
        "scope": scope,
        "amount": cents.to_string(),
        "currency": "USD",
        "period": period,
        "created_at": created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "is_enabled": true,
    }))
}

/// When budget `name` was first set, as far as this process's history
/// goes (the start of the process's history otherwise).
fn created_at(state: &AdminState, name: &str) -> chrono::DateTime<chrono::Utc> {
    let control = state.control.as_ref();
    control
        .and_then(|c| {
            c.history(|e| e.id == name && e.kind.family() == "budget")
                .first()
                .map(|e| e.at)
        })
        .unwrap_or_else(chrono::Utc::now)
}

/// Every budget that shows as a spend limit, by name.
fn all(state: &AdminState) -> Result<Vec<serde_json::Value>, AdminError> {
    let current = state.state()?;
    Ok(current
        .budgets
        .values()
        .filter_map(|b| as_spend_limit(&b.budget, created_at(state, &b.budget.name)))
        .collect())
}

/// `GET /v1/organizations/spend_limits`: `{data, next_page}`.
#[utoipa::path(get, path = "/v1/organizations/spend_limits", tag = "spend_limits",
    params(Paging),
    responses((status = 200, description = "`{data: [spend_limit], next_page}`", body = serde_json::Value)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AdminState>>,
    _: Granted<CanRead>,
    Query(paging): Query<Paging>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let limit = paging.limit.unwrap_or(20);
    if !(1..=1000).contains(&limit) {
        return Err(AdminError::field("limit", "must be 1 to 1000"));
    }
    let start: usize = match &paging.page {
        None => 0,
        Some(p) => p
            .parse()
            .map_err(|_| AdminError::field("page", "is not a cursor this API returned"))?,
    };
    let limits = all(&state)?;
    let end = (start + limit).min(limits.len());
    let data = limits.get(start..end).unwrap_or_default().to_vec();
    let next_page = (end < limits.len()).then(|| end.to_string());
    Ok(Json(
        serde_json::json!({ "data": data, "next_page": next_page }),
    ))
}

/// The budget behind spend limit `id`, or 404.
fn find(state: &AdminState, id: &str) -> Result<BudgetEntry, AdminError> {
    let not_found = || AdminError::NotFound(format!("no spend limit {id:?}"));
    let name = id.strip_prefix("spl_").ok_or_else(not_found)?;
    let b = state
        .state()?
        .budgets
        .get(name)
        .cloned()
        .ok_or_else(not_found)?;
    as_spend_limit(&b.budget, chrono::Utc::now()).ok_or_else(not_found)?;
    Ok(b)
}

/// `GET /v1/organizations/spend_limits/{id}`.
#[utoipa::path(get, path = "/v1/organizations/spend_limits/{id}", tag = "spend_limits",
    params(("id" = String, Path, description = "`spl_` + the budget's name")),
    responses((status = 200, description = "The spend limit", body = serde_json::Value), (status = 404, description = "No such limit", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn one(
    State(state): State<Arc<AdminState>>,
    _: Granted<CanRead>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let b = find(&state, &id)?;
    let at = created_at(&state, &b.budget.name);
    Ok(Json(as_spend_limit(&b.budget, at).unwrap_or_default()))
}

/// `DELETE /v1/organizations/spend_limits/{id}`: `{id, type: "spend_limit_deleted"}`.
#[utoipa::path(delete, path = "/v1/organizations/spend_limits/{id}", tag = "spend_limits",
    params(("id" = String, Path, description = "`spl_` + the budget's name")),
    responses((status = 200, description = "`{id, type: spend_limit_deleted}`", body = serde_json::Value), (status = 404, description = "No such limit", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteBudgets>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let b = find(&state, &id)?;
    super::budgets::delete(&state, &grant, &b.budget.name).await?;
    Ok(Json(
        serde_json::json!({ "id": id, "type": "spend_limit_deleted" }),
    ))
}

/// Cents as a positive whole number of cents, in USD.
fn parse_amount(amount: &str) -> Result<Decimal, AdminError> {
    let bad = || {
        AdminError::field(
            "amount",
            format!(
                "{amount:?} is not a positive whole number of cents (a decimal string, e.g. \"50000\" for $500.00)"
            ),
        )
    };
    if amount.is_empty() || amount.len() > 15 || !amount.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let cents: i64 = amount.parse().map_err(|_| bad())?;
    if cents == 0 {
        return Err(AdminError::field(
            "amount",
            "tollgate budgets need a positive limit; send null for no cap",
        ));
    }
    Ok(Decimal::new(cents, 2))
}

/// `POST /v1/organizations/spend_limits`: upsert on (scope, period).
#[utoipa::path(post, path = "/v1/organizations/spend_limits", tag = "spend_limits", request_body = serde_json::Value,
    responses((status = 200, description = "The spend limit set", body = serde_json::Value), (status = 400, description = "A field is invalid (named)", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn set(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteBudgets>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, AdminError> {
    let ask: SetSpendLimit = parse_body(&body)?;
    let (scope, subject, period) = budget_terms(&ask.scope, ask.period);
    let current = state.state()?;
    let existing = current.budgets.values().find(|b| {
        b.budget.scope == scope
            && b.budget.subject == subject
            && b.budget.period == period
            && b.budget.limit_usd.is_some()
    });
    let name = match existing {
        Some(b) => b.budget.name.clone(),
        None => new_name(&ask.scope, ask.period),
    };
    let Some(amount) = &ask.amount else {
        if existing.is_some() {
            super::budgets::delete(&state, &grant, &name).await?;
        }
        return Ok(Json(serde_json::json!({
            "type": "spend_limit", "id": format!("spl_{name}"), "scope": ask.scope, "amount": null,
            "currency": "USD", "period": ask.period, "is_enabled": true,
            "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })));
    };
    let mut budget = existing.map(|b| b.budget.clone()).unwrap_or(BudgetConfig {
        name: name.clone(),
        scope,
        subject,
        period,
        timezone: "UTC".into(),
        limit_usd: None,
        limit_tokens: None,
        thresholds: vec![50, 80, 100],
        output_estimate: Default::default(),
        max_subjects_per_key: crate::config::default_max_subjects_per_key(),
        forget_idle_hours: crate::config::default_forget_idle_hours(),
    });
    budget.limit_usd = Some(parse_amount(amount)?);
    super::budgets::put(&state, &grant, budget.clone()).await?;
    let at = created_at(&state, &name);
    Ok(Json(as_spend_limit(&budget, at).unwrap_or_default()))
}

/// The name of a budget made for a new spend limit: `user-alice-daily`,
/// `rbac_group-eng-weekly`, `organization-monthly`.
fn new_name(scope: &Scope, period: Period) -> String {
    let period = match period {
        Period::Daily => "daily",
        Period::Weekly => "weekly",
        Period::Monthly => "monthly",
    };
    match scope {
        Scope::User { user_id } => format!("user-{user_id}-{period}"),
        Scope::RbacGroup { rbac_group_id } => format!("rbac_group-{rbac_group_id}-{period}"),
        Scope::Organization => format!("organization-{period}"),
    }
}
