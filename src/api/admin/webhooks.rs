//! `/v1/admin/webhooks`: create, replace, list and delete the webhooks
//! budget alerts go to (scope `admin:write`: a webhook receives every
//! alert). The URL and secret go to the credentials topic
//! (`control::secrets`), the entry — redacted URL, fingerprint, whether
//! it signs — to the control topic; no answer and no audit entry ever
//! holds the URL's path or the secret.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use bytes::Bytes;
use serde::Deserialize;

use super::{
    AdminError, AdminState, CanRead, CanWriteAdmin, Grant, Granted, check_name, check_unlimited,
    parse_body,
};
use crate::config::{WebhookConfig, WebhookFormat};
use crate::control::event::{WebhookEntry, webhook_id};
use crate::control::{ControlEvent, Kind, Origin};

/// Longest webhook URL and secret taken.
const MAX_URL: usize = 2048;
const MAX_SECRET: usize = 512;

/// A webhook as the API takes it (the `[[webhooks]]` table as JSON, with
/// an optional id).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// Default on create: `webhook-<digest of the URL>`, as for the file.
    #[serde(default)]
    pub id: Option<String>,
    /// `http://` or `https://`; Slack keeps its credential in the path.
    pub url: String,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub format: WebhookFormat,
    /// HMAC-SHA256 signing secret (`x-tollgate-signature`).
    #[serde(default)]
    pub secret: Option<String>,
}

/// The config's rules for a webhook; a failure names the field.
fn validate(w: &NewWebhook) -> Result<WebhookConfig, AdminError> {
    if w.url.len() > MAX_URL {
        return Err(AdminError::field("url", format!("at most {MAX_URL} bytes")));
    }
    let url = reqwest::Url::parse(&w.url)
        .map_err(|e| AdminError::field("url", format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(AdminError::field(
            "url",
            "must be http:// or https:// with a host",
        ));
    }
    if w.secret
        .as_ref()
        .is_some_and(|s| s.is_empty() || s.len() > MAX_SECRET)
    {
        return Err(AdminError::field(
            "secret",
            format!("must be 1 to {MAX_SECRET} bytes (omit it for unsigned deliveries)"),
        ));
    }
    Ok(WebhookConfig {
        url: w.url.clone(),
        format: w.format,
        secret: w.secret.clone(),
    })
}

/// What the API shows of a webhook: never its URL's path or its secret.
fn shown(id: &str, e: &WebhookEntry) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "url_redacted": e.url_redacted,
        "format": e.format,
        "fingerprint": e.fingerprint,
        "secret": if e.signed { Some("set") } else { None },
        "origin": e.origin,
    })
}

/// Sets webhook `id` to `hook`: the credential first, then the entry (a
/// credential without its entry is never used).
async fn put(
    state: &AdminState,
    grant: &Grant,
    id: &str,
    hook: WebhookConfig,
) -> Result<serde_json::Value, AdminError> {
    check_unlimited(grant)?;
    check_name("id", id)?;
    let control = state.control()?;
    let before = control.current().webhooks.get(id).cloned();
    let entry = WebhookEntry {
        origin: Origin::Api,
        ..WebhookEntry::from_config(&hook)
    };
    crate::control::secrets::put(control.log().as_ref(), id, Some(&hook)).await?;
    let event = ControlEvent::new(
        Kind::WebhookSet,
        id,
        &grant.actor,
        before.and_then(|b| serde_json::to_value(b).ok()),
        serde_json::to_value(&entry).ok(),
    );
    state.write(&[event]).await?;
    Ok(shown(id, &entry))
}

/// `POST /v1/admin/webhooks`: creates (or replaces) a webhook; alerts go
/// to it within a second.
#[utoipa::path(post, path = "/v1/admin/webhooks", tag = "admin", request_body = NewWebhook,
    responses((status = 201, description = "`{id, url_redacted, format, fingerprint, secret: \"set\"|null, origin}`", body = serde_json::Value),
        (status = 400, description = "A field is invalid (named)", body = crate::api::ErrorBody),
        (status = 403, description = "The token lacks admin:write", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteAdmin>,
    body: Bytes,
) -> Result<(http::StatusCode, Json<serde_json::Value>), AdminError> {
    let new: NewWebhook = parse_body(&body)?;
    let hook = validate(&new)?;
    let id = new.id.clone().unwrap_or_else(|| webhook_id(&hook));
    let shown = put(&state, &grant, &id, hook).await?;
    Ok((http::StatusCode::CREATED, Json(shown)))
}

/// `PUT /v1/admin/webhooks/{id}`: replaces (or creates) webhook `id`;
/// alerts queued for it go to the new URL.
#[utoipa::path(put, path = "/v1/admin/webhooks/{id}", tag = "admin", request_body = NewWebhook,
    params(("id" = String, Path, description = "The webhook's id")),
    responses((status = 200, description = "The webhook, redacted", body = serde_json::Value),
        (status = 400, description = "A field is invalid (named)", body = crate::api::ErrorBody),
        (status = 403, description = "The token lacks admin:write", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn replace(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteAdmin>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, AdminError> {
    let new: NewWebhook = parse_body(&body)?;
    if new.id.as_ref().is_some_and(|i| *i != id) {
        return Err(AdminError::field("id", "differs from the path's id"));
    }
    let hook = validate(&new)?;
    Ok(Json(put(&state, &grant, &id, hook).await?))
}

/// `GET /v1/admin/webhooks`: every webhook, redacted.
#[utoipa::path(get, path = "/v1/admin/webhooks", tag = "admin",
    responses((status = 200, description = "`{data: [webhooks, redacted]}`", body = serde_json::Value),
        (status = 403, description = "The token lacks admin:read", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanRead>,
) -> Result<Json<serde_json::Value>, AdminError> {
    check_unlimited(&grant)?;
    Ok(Json(super::listing(&state.state()?.webhooks, shown)))
}

/// The webhook `id`, or 404.
fn find(state: &AdminState, id: &str) -> Result<WebhookEntry, AdminError> {
    super::entry_of(&state.state()?.webhooks, "webhook", id)
}

/// `GET /v1/admin/webhooks/{id}`.
#[utoipa::path(get, path = "/v1/admin/webhooks/{id}", tag = "admin",
    params(("id" = String, Path, description = "The webhook's id")),
    responses((status = 200, description = "The webhook, redacted", body = serde_json::Value),
        (status = 404, description = "No such webhook", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn one(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanRead>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    check_unlimited(&grant)?;
    Ok(Json(shown(&id, &find(&state, &id)?)))
}

/// `DELETE /v1/admin/webhooks/{id}`: the webhook takes no new alerts
/// (what it holds is still delivered); its credential is then forgotten.
#[utoipa::path(delete, path = "/v1/admin/webhooks/{id}", tag = "admin",
    params(("id" = String, Path, description = "The webhook's id")),
    responses((status = 200, description = "Removed", body = serde_json::Value),
        (status = 404, description = "No such webhook", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteAdmin>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    check_unlimited(&grant)?;
    let before = find(&state, &id)?;
    let event = ControlEvent::new(
        Kind::WebhookRemoved,
        &id,
        &grant.actor,
        serde_json::to_value(before).ok(),
        None,
    );
    state.write(&[event]).await?;
    let log = state.control()?.log().clone();
    if let Err(e) = crate::control::secrets::put(log.as_ref(), &id, None).await {
        tracing::error!(webhook = %id, error = %e, "webhook removed, but its credential could not be forgotten yet");
    }
    Ok(Json(serde_json::json!({ "id": id, "removed": true })))
}
