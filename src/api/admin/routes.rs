//! `/v1/admin/routes`: create, replace, list and delete routes (scope
//! `admin:write`: a route decides where every request of its keys goes
//! and how often it is retried). A body is a `[routes.NAME]` table as
//! JSON, validated as the config file is; gateways swap their route
//! table within a second, and a request in flight keeps the route it
//! started with.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use bytes::Bytes;

use super::{
    AdminError, AdminState, CanRead, CanWriteAdmin, Grant, Granted, check_name, check_unlimited,
    parse_body, unknown_field,
};
use crate::config::ProviderKind;
use crate::control::event::RouteEntry;
use crate::control::{ControlEvent, Kind, Origin};
use crate::gateway::route::RouteConfig;

/// Most targets and conditions one route may hold.
const MAX_TARGETS: usize = 32;

/// Parses and validates a route as the config file's are; a failure
/// names the field (`targets[1].provider`, `retry.on_status_codes`).
fn validate(state: &AdminState, value: &serde_json::Value) -> Result<RouteConfig, AdminError> {
    let route: RouteConfig = serde_json::from_value(value.clone())
        .map_err(|e| AdminError::field("body", e.to_string()))?;
    let known = serde_json::to_value(&route).unwrap_or_default();
    if let Some(field) = unknown_field(value, &known, "") {
        return Err(AdminError::field(&field, "is not a field of a route"));
    }
    if route.targets.len() > MAX_TARGETS || route.conditions.len() > MAX_TARGETS {
        return Err(AdminError::field(
            "targets",
            format!("at most {MAX_TARGETS} targets and {MAX_TARGETS} conditions"),
        ));
    }
    route
        .check_fields()
        .map_err(|(field, reason)| AdminError::field(&field, reason))?;
    for (i, t) in route.targets.iter().enumerate() {
        let kind = state.providers.get(&t.provider).ok_or_else(|| {
            AdminError::field(
                &format!("targets[{i}].provider"),
                format!("{:?} is not a [providers.*] entry", t.provider),
            )
        })?;
        if route.passthrough && *kind != ProviderKind::Anthropic {
            return Err(AdminError::field(
                "passthrough",
                format!(
                    "target {:?} is kind {kind:?}; passthrough works with kind \"anthropic\" only",
                    t.provider
                ),
            ));
        }
        if route.passthrough && !t.override_params.is_empty() {
            return Err(AdminError::field(
                &format!("targets[{i}].override_params"),
                "passthrough sends the client's body byte for byte",
            ));
        }
    }
    if route.passthrough && route.cache.is_some() {
        return Err(AdminError::field(
            "cache",
            "a passthrough route cannot cache (answers would be shared across the clients' own credentials)",
        ));
    }
    Ok(route)
}

/// Sets route `name` from the body `value` as `grant`'s actor.
async fn put(
    state: &AdminState,
    grant: &Grant,
    name: &str,
    value: &serde_json::Value,
) -> Result<serde_json::Value, AdminError> {
    check_unlimited(grant)?;
    check_name("name", name)?;
    let route = validate(state, value)?;
    let before = state.state()?.routes.get(name).cloned();
    let entry = RouteEntry {
        route,
        origin: Origin::Api,
    };
    let event = ControlEvent::new(
        Kind::RouteSet,
        name,
        &grant.actor,
        before.and_then(|b| serde_json::to_value(b).ok()),
        serde_json::to_value(&entry).ok(),
    );
    state.write(&[event]).await?;
    Ok(shown(name, &entry))
}

/// A route as the API shows it.
fn shown(name: &str, e: &RouteEntry) -> serde_json::Value {
    serde_json::json!({ "name": name, "route": e.route, "origin": e.origin })
}

/// `POST /v1/admin/routes`: `{"name": …, <route fields>}` creates (or
/// replaces) route `name`.
#[utoipa::path(post, path = "/v1/admin/routes", tag = "admin", request_body = serde_json::Value,
    responses((status = 201, description = "`{name, route, origin}`", body = serde_json::Value),
        (status = 400, description = "A field is invalid (named)", body = crate::api::ErrorBody),
        (status = 403, description = "The token lacks admin:write", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteAdmin>,
    body: Bytes,
) -> Result<(http::StatusCode, Json<serde_json::Value>), AdminError> {
    let mut value: serde_json::Value = parse_body(&body)?;
    let name = match value.as_object_mut().map(|o| o.remove("name")) {
        Some(Some(serde_json::Value::String(n))) => n,
        Some(_) => return Err(AdminError::field("name", "a string is required")),
        None => return Err(AdminError::field("body", "must be a JSON object")),
    };
    let shown = put(&state, &grant, &name, &value).await?;
    Ok((http::StatusCode::CREATED, Json(shown)))
}

/// `PUT /v1/admin/routes/{name}`: replaces (or creates) route `name`.
#[utoipa::path(put, path = "/v1/admin/routes/{name}", tag = "admin", request_body = serde_json::Value,
    params(("name" = String, Path, description = "The route's name")),
    responses((status = 200, description = "`{name, route, origin}`", body = serde_json::Value),
        (status = 400, description = "A field is invalid (named)", body = crate::api::ErrorBody),
        (status = 403, description = "The token lacks admin:write", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn replace(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteAdmin>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, AdminError> {
    let value: serde_json::Value = parse_body(&body)?;
    Ok(Json(put(&state, &grant, &name, &value).await?))
}

/// `GET /v1/admin/routes`: every route.
#[utoipa::path(get, path = "/v1/admin/routes", tag = "admin",
    responses((status = 200, description = "`{data: [{name, route, origin}]}`", body = serde_json::Value),
        (status = 403, description = "The token lacks admin:read", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanRead>,
) -> Result<Json<serde_json::Value>, AdminError> {
    check_unlimited(&grant)?;
    Ok(Json(super::listing(&state.state()?.routes, shown)))
}

/// The route `name`, or 404.
fn find(state: &AdminState, name: &str) -> Result<RouteEntry, AdminError> {
    super::entry_of(&state.state()?.routes, "route", name)
}

/// `GET /v1/admin/routes/{name}`.
#[utoipa::path(get, path = "/v1/admin/routes/{name}", tag = "admin",
    params(("name" = String, Path, description = "The route's name")),
    responses((status = 200, description = "`{name, route, origin}`", body = serde_json::Value),
        (status = 404, description = "No such route", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn one(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanRead>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    check_unlimited(&grant)?;
    Ok(Json(shown(&name, &find(&state, &name)?)))
}

/// `DELETE /v1/admin/routes/{name}`: refused (409) while a key uses it.
#[utoipa::path(delete, path = "/v1/admin/routes/{name}", tag = "admin",
    params(("name" = String, Path, description = "The route's name")),
    responses((status = 200, description = "Removed", body = serde_json::Value),
        (status = 404, description = "No such route", body = crate::api::ErrorBody),
        (status = 409, description = "Keys still use the route (named)", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteAdmin>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    check_unlimited(&grant)?;
    let before = find(&state, &name)?;
    let current = state.state()?;
    let users: Vec<&str> = current
        .keys
        .values()
        .filter(|k| k.route.as_ref() == Some(&name) || k.client_routes.contains(&name))
        .map(|k| k.id.as_str())
        .take(10)
        .collect();
    if !users.is_empty() {
        return Err(AdminError::Conflict(format!(
            "route {name:?} is used by keys {users:?}: point them elsewhere first"
        )));
    }
    let event = ControlEvent::new(
        Kind::RouteRemoved,
        &name,
        &grant.actor,
        serde_json::to_value(before).ok(),
        None,
    );
    state.write(&[event]).await?;
    Ok(Json(serde_json::json!({ "name": name, "removed": true })))
}
