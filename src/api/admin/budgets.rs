//! `/v1/admin/budgets`: create, replace, list and delete budgets. A body
//! is a `[[budgets]]` table as JSON, validated as the config file is.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use bytes::Bytes;

use super::{
    AdminError, AdminState, CanRead, CanWriteBudgets, Grant, Granted, check_name, parse_body,
};
use crate::budget::BudgetSpec;
use crate::config::{BudgetConfig, BudgetScope};
use crate::control::event::BudgetEntry;
use crate::control::{ControlEvent, Kind, Origin};

/// A workspace-limited token manages only budgets of scope `workspace`
/// on its own workspace.
fn check_scope(grant: &Grant, b: &BudgetConfig) -> Result<(), AdminError> {
    match &grant.workspace {
        Some(w) if !(b.scope == BudgetScope::Workspace && b.subject.as_deref() == Some(w)) => {
            Err(AdminError::Workspace(w.clone()))
        }
        _ => Ok(()),
    }
}

/// Validates `b` as the config's budgets are; a failure names the budget
/// and field.
pub(super) fn validate(b: &BudgetConfig) -> Result<(), AdminError> {
    check_name("name", &b.name)?;
    if let Some(s) = &b.subject {
        check_name("subject", s)?;
    }
    BudgetSpec::from_config(std::slice::from_ref(b))
        .map(drop)
        .map_err(|reason| AdminError::field("budget", reason))
}

/// Sets budget `b` (created or replaced) as `grant`'s actor.
pub(super) async fn put(
    state: &AdminState,
    grant: &Grant,
    b: BudgetConfig,
) -> Result<serde_json::Value, AdminError> {
    validate(&b)?;
    check_scope(grant, &b)?;
    let current = state.state()?;
    let before = current.budgets.get(&b.name);
    if let Some(old) = before {
        check_scope(grant, &old.budget)?;
    }
    let entry = BudgetEntry {
        budget: b,
        origin: Origin::Api,
    };
    let after = serde_json::to_value(&entry).unwrap_or_default();
    let before = before.and_then(|e| serde_json::to_value(e).ok());
    let event = ControlEvent::new(
        Kind::BudgetSet,
        &entry.budget.name,
        &grant.actor,
        before,
        Some(after.clone()),
    );
    state.write(&[event]).await?;
    Ok(after)
}

/// `POST /v1/admin/budgets`: creates (or replaces) the budget the body names.
#[utoipa::path(post, path = "/v1/admin/budgets", tag = "admin", request_body = serde_json::Value,
    responses((status = 201, description = "The budget entry", body = serde_json::Value),
        (status = 400, description = "A field is invalid (named)", body = crate::api::ErrorBody),
        (status = 403, description = "The token lacks budgets:write", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteBudgets>,
    body: Bytes,
) -> Result<(http::StatusCode, Json<serde_json::Value>), AdminError> {
    let b: BudgetConfig = parse_body(&body)?;
    Ok((
        http::StatusCode::CREATED,
        Json(put(&state, &grant, b).await?),
    ))
}

/// `PUT /v1/admin/budgets/{name}`: replaces (or creates) budget `name`;
/// the body's `name`, if any, must agree.
#[utoipa::path(put, path = "/v1/admin/budgets/{name}", tag = "admin", request_body = serde_json::Value,
    params(("name" = String, Path, description = "The budget's name")),
    responses((status = 200, description = "The budget entry", body = serde_json::Value),
        (status = 400, description = "A field is invalid (named)", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn replace(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteBudgets>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, AdminError> {
    let mut value: serde_json::Value = parse_body(&body)?;
    let Some(obj) = value.as_object_mut() else {
        return Err(AdminError::field("body", "must be a JSON object"));
    };
    match obj.get("name").and_then(|n| n.as_str()) {
        Some(n) if n != name => {
            return Err(AdminError::field(
                "name",
                format!("{n:?} differs from the path's {name:?}"),
            ));
        }
        _ => {
            obj.insert("name".into(), serde_json::Value::String(name));
        }
    }
    let b: BudgetConfig =
        serde_json::from_value(value).map_err(|e| AdminError::field("body", e.to_string()))?;
    Ok(Json(put(&state, &grant, b).await?))
}

/// `GET /v1/admin/budgets`: every budget the token may see.
#[utoipa::path(get, path = "/v1/admin/budgets", tag = "admin",
    responses((status = 200, description = "`{data: [budget entries]}`", body = serde_json::Value)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanRead>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let current = state.state()?;
    let data: Vec<serde_json::Value> = current
        .budgets
        .values()
        .filter(|b| check_scope(&grant, &b.budget).is_ok())
        .filter_map(|b| serde_json::to_value(b).ok())
        .collect();
    Ok(Json(serde_json::json!({ "data": data })))
}

/// The budget `name`: 404 if there is none, 403 naming the token's
/// workspace if it is not a budget of that workspace.
fn find(state: &AdminState, grant: &Grant, name: &str) -> Result<BudgetEntry, AdminError> {
    let b = state
        .state()?
        .budgets
        .get(name)
        .cloned()
        .ok_or_else(|| AdminError::NotFound(format!("no budget {name:?}")))?;
    check_scope(grant, &b.budget)?;
    Ok(b)
}

/// `GET /v1/admin/budgets/{name}`.
#[utoipa::path(get, path = "/v1/admin/budgets/{name}", tag = "admin",
    params(("name" = String, Path, description = "The budget's name")),
    responses((status = 200, description = "The budget entry", body = serde_json::Value),
        (status = 404, description = "No such budget", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn one(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanRead>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let b = find(&state, &grant, &name)?;
    Ok(Json(serde_json::to_value(b).unwrap_or_default()))
}

/// Removes budget `name` as `grant`'s actor.
pub(super) async fn delete(
    state: &AdminState,
    grant: &Grant,
    name: &str,
) -> Result<(), AdminError> {
    let before = find(state, grant, name)?;
    let event = ControlEvent::new(
        Kind::BudgetRemoved,
        name,
        &grant.actor,
        serde_json::to_value(before).ok(),
        None,
    );
    state.write(&[event]).await
}

/// `DELETE /v1/admin/budgets/{name}`.
#[utoipa::path(delete, path = "/v1/admin/budgets/{name}", tag = "admin",
    params(("name" = String, Path, description = "The budget's name")),
    responses((status = 200, description = "Removed", body = serde_json::Value),
        (status = 404, description = "No such budget", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteBudgets>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    delete(&state, &grant, &name).await?;
    Ok(Json(serde_json::json!({ "name": name, "removed": true })))
}
