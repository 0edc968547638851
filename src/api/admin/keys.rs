//! `/v1/admin/keys`: create, list, show, revoke and rotate tollgate keys.
//! The key itself is in the create and rotate answers only; the state and
//! the audit log hold its `sha256:` hash.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{
    AdminError, AdminState, CanRead, CanWriteKeys, Grant, Granted, check_name, parse_body,
};
use crate::config::{ProviderKind, generate_key, hash_key};
use crate::control::event::{KeyEntry, PreviousHash};
use crate::control::{ControlEvent, Kind, Origin};

/// Longest grace period of a rotated-away key.
const MAX_GRACE_SECS: u64 = 30 * 86_400;
/// Grace period of a rotated-away key unless the request says otherwise.
const DEFAULT_GRACE_SECS: u64 = 86_400;
/// Most metadata entries of a key, and their sizes.
const MAX_METADATA: usize = 32;

/// `POST /v1/admin/keys`'s body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub team: String,
    pub user: String,
    /// Default: the token's workspace, else `default`.
    #[serde(default)]
    pub workspace: Option<String>,
    /// A `[providers.NAME]`; default: the only provider, if there is one.
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub passthrough: bool,
    #[serde(default)]
    pub allow_client_config: bool,
    #[serde(default)]
    pub client_routes: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// `POST /v1/admin/keys/{id}/rotate`'s body (optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// How long the old key keeps working (default 86400, at most 30 days).
    #[serde(default)]
    pub grace_seconds: Option<u64>,
}

/// `POST /v1/admin/keys`: a new key, valid on every gateway within a
/// second; the answer holds the key once.
#[utoipa::path(post, path = "/v1/admin/keys", tag = "admin", request_body = NewKey,
    responses((status = 201, description = "The key's entry, with `key` (shown once)", body = serde_json::Value),
        (status = 400, description = "A field is invalid (named)", body = crate::api::ErrorBody),
        (status = 403, description = "The token lacks keys:write", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteKeys>,
    body: Bytes,
) -> Result<(http::StatusCode, Json<serde_json::Value>), AdminError> {
    let new: NewKey = parse_body(&body)?;
    let key = generate_key();
    let id = format!("key-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let entry = entry_of(&state, &grant, new, id, hash_key(&key))?;
    let event = ControlEvent::new(
        Kind::KeyCreated,
        &entry.id,
        &grant.actor,
        None,
        Some(to_json(&entry)),
    );
    state.write(&[event]).await?;
    let mut out = to_json(&entry);
    out["key"] = serde_json::Value::String(key);
    Ok((http::StatusCode::CREATED, Json(out)))
}

/// The entry a validated request makes, with its id and key hash.
fn entry_of(
    state: &AdminState,
    grant: &Grant,
    new: NewKey,
    id: String,
    hash: String,
) -> Result<KeyEntry, AdminError> {
    let workspace = new
        .workspace
        .or_else(|| grant.workspace.clone())
        .unwrap_or_else(|| "default".into());
    check_workspace(grant, &workspace)?;
    check_name("team", &new.team)?;
    check_name("user", &new.user)?;
    check_name("workspace", &workspace)?;
    let provider = match new.provider {
        Some(p) => p,
        None if state.providers.len() == 1 => {
            state.providers.keys().next().cloned().unwrap_or_default()
        }
        None => {
            return Err(AdminError::field(
                "provider",
                "is required (more than one provider is configured)",
            ));
        }
    };
    let kind = state.providers.get(&provider).ok_or_else(|| {
        AdminError::field(
            "provider",
            format!("{provider:?} is not a [providers.*] entry"),
        )
    })?;
    let current = state.state()?;
    for (field, route) in new
        .route
        .iter()
        .map(|r| ("route", r))
        .chain(new.client_routes.iter().map(|r| ("client_routes", r)))
    {
        if !current.routes.contains_key(route) {
            return Err(AdminError::field(
                field,
                format!("{route:?} is not a [routes.*] entry"),
            ));
        }
    }
    if new.passthrough && *kind != ProviderKind::Anthropic {
        return Err(AdminError::field(
            "passthrough",
            format!(
                "provider {provider:?} is kind {kind:?}; passthrough forwards the client's own Anthropic credential and works with kind \"anthropic\" only"
            ),
        ));
    }
    if !new.passthrough && new.route.is_none() && state.keyless.contains(&provider) {
        return Err(AdminError::field(
            "provider",
            format!(
                "{provider:?} has no api_key, so it serves passthrough keys only: set passthrough = true"
            ),
        ));
    }
    if new.expires_at.is_some_and(|e| e <= Utc::now()) {
        return Err(AdminError::field("expires_at", "is in the past"));
    }
    check_metadata(&new.metadata)?;
    Ok(KeyEntry {
        id,
        hash,
        workspace,
        team: new.team,
        user: new.user,
        provider,
        route: new.route,
        passthrough: new.passthrough,
        allow_client_config: new.allow_client_config,
        client_routes: new.client_routes,
        expires_at: new.expires_at,
        metadata: new.metadata,
        previous: None,
        origin: Origin::Api,
    })
}

/// Metadata is bounded: a few short strings.
pub(super) fn check_metadata(m: &BTreeMap<String, String>) -> Result<(), AdminError> {
    if m.len() > MAX_METADATA {
        return Err(AdminError::field(
            "metadata",
            format!("at most {MAX_METADATA} entries"),
        ));
    }
    match m
        .iter()
        .find(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 512)
    {
        Some((k, _)) => Err(AdminError::field(
            &format!("metadata.{k}"),
            "keys are 1 to 64 characters, values at most 512",
        )),
        None => Ok(()),
    }
}

/// A workspace-limited token acts only in its workspace.
pub(super) fn check_workspace(grant: &Grant, workspace: &str) -> Result<(), AdminError> {
    match &grant.workspace {
        Some(w) if w != workspace => Err(AdminError::Workspace(w.clone())),
        _ => Ok(()),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// `GET /v1/admin/keys`: every key the token may see (hashes, no keys).
#[utoipa::path(get, path = "/v1/admin/keys", tag = "admin",
    responses((status = 200, description = "`{data: [key entries]}`", body = serde_json::Value),
        (status = 403, description = "The token lacks admin:read", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanRead>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let current = state.state()?;
    let data: Vec<serde_json::Value> = current
        .keys
        .values()
        .filter(|k| check_workspace(&grant, &k.workspace).is_ok())
        .map(to_json)
        .collect();
    Ok(Json(serde_json::json!({ "data": data })))
}

/// The key `id`: 404 if there is none, 403 naming the token's workspace
/// if it is in another.
fn find(state: &AdminState, grant: &Grant, id: &str) -> Result<KeyEntry, AdminError> {
    let current = state.state()?;
    let entry = current
        .keys
        .get(id)
        .ok_or_else(|| AdminError::NotFound(format!("no key {id:?}")))?;
    check_workspace(grant, &entry.workspace)?;
    Ok(entry.clone())
}

/// `GET /v1/admin/keys/{id}`.
#[utoipa::path(get, path = "/v1/admin/keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 200, description = "The key's entry", body = serde_json::Value),
        (status = 404, description = "No such key", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn one(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanRead>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    Ok(Json(to_json(&find(&state, &grant, &id)?)))
}

/// `DELETE /v1/admin/keys/{id}`: revoked on every gateway within a second.
#[utoipa::path(delete, path = "/v1/admin/keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 200, description = "The revoked entry", body = serde_json::Value),
        (status = 404, description = "No such key", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteKeys>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let entry = find(&state, &grant, &id)?;
    let event = ControlEvent::new(
        Kind::KeyRevoked,
        &id,
        &grant.actor,
        Some(to_json(&entry)),
        None,
    );
    state.write(&[event]).await?;
    Ok(Json(serde_json::json!({ "id": id, "revoked": true })))
}

/// `POST /v1/admin/keys/{id}/rotate`: a new key; the old one keeps working
/// for the grace period.
#[utoipa::path(post, path = "/v1/admin/keys/{id}/rotate", tag = "admin", request_body = Rotate,
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 200, description = "The entry with the new `key` (shown once)", body = serde_json::Value),
        (status = 404, description = "No such key", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn rotate(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteKeys>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, AdminError> {
    let ask: Rotate = if body.is_empty() {
        Rotate::default()
    } else {
        parse_body(&body)?
    };
    let grace = ask.grace_seconds.unwrap_or(DEFAULT_GRACE_SECS);
    if grace > MAX_GRACE_SECS {
        return Err(AdminError::field(
            "grace_seconds",
            format!("at most {MAX_GRACE_SECS}"),
        ));
    }
    let before = find(&state, &grant, &id)?;
    let key = generate_key();
    let mut after = before.clone();
    after.previous = Some(PreviousHash {
        hash: before.hash.clone(),
        valid_until: Utc::now() + chrono::Duration::seconds(grace as i64),
    });
    after.hash = hash_key(&key);
    let event = ControlEvent::new(
        Kind::KeyRotated,
        &id,
        &grant.actor,
        Some(to_json(&before)),
        Some(to_json(&after)),
    );
    state.write(&[event]).await?;
    let mut out = to_json(&after);
    out["key"] = serde_json::Value::String(key);
    Ok(Json(out))
}

/// The request a key's entry would have been created by (what `PATCH`
/// merges its changes into).
fn request_of(e: &KeyEntry) -> serde_json::Value {
    serde_json::json!({
        "team": e.team, "user": e.user, "workspace": e.workspace,
        "provider": e.provider, "route": e.route, "passthrough": e.passthrough,
        "allow_client_config": e.allow_client_config, "client_routes": e.client_routes,
        "expires_at": e.expires_at, "metadata": e.metadata,
    })
}

/// `PATCH /v1/admin/keys/{id}`: changes a key's non-secret fields (a
/// JSON merge patch of the create body: `{"route": "fast"}`, `{"route":
/// null}`), validated as a new key is; in use on every gateway within a
/// second. The key itself and its id stay.
#[utoipa::path(patch, path = "/v1/admin/keys/{id}", tag = "admin", request_body = serde_json::Value,
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 200, description = "The key's entry", body = serde_json::Value),
        (status = 400, description = "A field is invalid (named)", body = crate::api::ErrorBody),
        (status = 404, description = "No such key", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteKeys>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, AdminError> {
    let before = find(&state, &grant, &id)?;
    let patch: serde_json::Value = parse_body(&body)?;
    let Some(patch) = patch.as_object() else {
        return Err(AdminError::field("body", "must be a JSON object"));
    };
    let mut merged = request_of(&before);
    for (field, value) in patch {
        merged[field] = value.clone();
    }
    let new: NewKey =
        serde_json::from_value(merged).map_err(|e| AdminError::field("body", e.to_string()))?;
    let mut after = entry_of(&state, &grant, new, before.id.clone(), before.hash.clone())?;
    after.previous = before.previous.clone();
    let event = ControlEvent::new(
        Kind::KeyUpdated,
        &id,
        &grant.actor,
        Some(to_json(&before)),
        Some(to_json(&after)),
    );
    state.write(&[event]).await?;
    Ok(Json(to_json(&after)))
}
