//! The admin API: keys, budgets and the audit log, written as control
//! events (see `control`), plus Anthropic's spend-limits Admin API mapped
//! onto budgets.
//!
//! Admin tokens are scoped: `api.admin_tokens` hold every scope;
//! `[[api.scoped_tokens]]` hold some of `admin:read`, `admin:write`,
//! `keys:write`, `budgets:write`, optionally limited to one workspace. A
//! request whose token lacks the scope gets 403 naming it.

pub(crate) mod audit;
pub(crate) mod budgets;
pub(crate) mod keys;
pub(crate) mod rate_limits;
pub(crate) mod routes;
pub(crate) mod spend_limits;
pub(crate) mod teams;
pub(crate) mod webhooks;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;

use crate::config::{Config, ProviderKind};
use crate::control::follow::Control;
use crate::control::{ControlError, ControlEvent, ControlState};

pub use audit::AuditEntry;

/// What an admin request needs its token to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Reading keys, budgets or the audit log.
    Read,
    KeysWrite,
    BudgetsWrite,
    /// Webhooks, routes and workspaces: `admin:write` only.
    AdminWrite,
}

impl Need {
    /// The scope named in a refusal.
    fn scope(self) -> &'static str {
        match self {
            Need::Read => "admin:read",
            Need::KeysWrite => "keys:write",
            Need::BudgetsWrite => "budgets:write",
            Need::AdminWrite => "admin:write",
        }
    }
}

/// What one token may do.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The actor in the audit log.
    pub actor: String,
    /// `None`: every scope (`api.admin_tokens`).
    scopes: Option<Vec<String>>,
    /// Only keys, teams and budgets of this workspace.
    pub workspace: Option<String>,
}

impl Grant {
    /// Whether the grant holds `need` (`admin:write` holds every write and
    /// reading; a write scope holds reading too).
    fn allows(&self, need: Need) -> bool {
        let Some(scopes) = &self.scopes else {
            return true;
        };
        let has = |s: &str| scopes.iter().any(|x| x == s);
        match need {
            Need::Read => !scopes.is_empty(),
            write => has("admin:write") || has(write.scope()),
        }
    }
}

/// Why an admin request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("send an admin token as `Authorization: Bearer <token>`")]
    Unauthorized,
    #[error("forbidden: this token lacks the scope {0}{or}", or = if *.0 == "admin:write" { "" } else { " (or admin:write)" })]
    Scope(&'static str),
    #[error("forbidden: this token is limited to workspace {0:?}")]
    Workspace(String),
    #[error("invalid {field}: {reason}")]
    BadField { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    /// The change would leave the state inconsistent (a route keys use).
    #[error("{0}")]
    Conflict(String),
    #[error(
        "the control plane is not available in this process (an API-only process on the embedded bus cannot write the log: use `tollgate serve`)"
    )]
    Unavailable,
    #[error("control plane: {0}")]
    Control(#[from] ControlError),
}

impl AdminError {
    /// A 400 naming `field`.
    pub fn field(field: &str, reason: impl Into<String>) -> AdminError {
        AdminError::BadField {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            AdminError::Unauthorized => (StatusCode::UNAUTHORIZED, "authentication_error"),
            AdminError::Scope(_) | AdminError::Workspace(_) => {
                (StatusCode::FORBIDDEN, "permission_error")
            }
            AdminError::BadField { .. } => (StatusCode::BAD_REQUEST, "invalid_request_error"),
            AdminError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found_error"),
            AdminError::Conflict(_) => (StatusCode::CONFLICT, "invalid_request_error"),
            AdminError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "api_error"),
            AdminError::Control(e) => {
                tracing::error!(error = %e, "control-plane write failed");
                (StatusCode::SERVICE_UNAVAILABLE, "api_error")
            }
        };
        let body = serde_json::json!({
            "type": "error",
            "error": { "type": kind, "message": self.to_string() },
        });
        (status, axum::Json(body)).into_response()
    }
}

/// What the admin handlers share.
pub struct AdminState {
    control: Option<Arc<Control>>,
    /// Token digests and what each may do.
    tokens: Vec<([u8; 32], Grant)>,
    /// Provider names and kinds a key may name.
    providers: BTreeMap<String, ProviderKind>,
    /// Anthropic providers without an `api_key`: they serve passthrough
    /// keys only (as `Config::check_gateway_credentials` says of the file).
    keyless: Vec<String>,
}

impl AdminState {
    /// The admin API over `control` (none: every write answers 503).
    pub fn new(cfg: &Config, control: Option<Arc<Control>>) -> AdminState {
        AdminState {
            control,
            tokens: grants(cfg),
            providers: cfg
                .providers
                .iter()
                .map(|(n, p)| (n.clone(), p.kind))
                .collect(),
            keyless: cfg
                .providers
                .iter()
                .filter(|(_, p)| p.kind == ProviderKind::Anthropic && p.api_key.is_empty())
                .map(|(n, _)| n.clone())
                .collect(),
        }
    }

    /// The caller's grant, if its token holds `need`.
    pub fn authorize(&self, headers: &http::HeaderMap, need: Need) -> Result<Grant, AdminError> {
        let token = crate::http_headers::bearer_token(headers)
            .or_else(|| headers.get("x-api-key").map(|v| v.as_bytes()))
            .ok_or(AdminError::Unauthorized)?;
        let grant = super::lookup_token(&self.tokens, token)
            .cloned()
            .ok_or(AdminError::Unauthorized)?;
        if grant.allows(need) {
            Ok(grant)
        } else {
            Err(AdminError::Scope(need.scope()))
        }
    }

    /// The control plane, or 503.
    fn control(&self) -> Result<&Arc<Control>, AdminError> {
        self.control.as_ref().ok_or(AdminError::Unavailable)
    }

    /// The state now (503 without a control plane).
    fn state(&self) -> Result<Arc<ControlState>, AdminError> {
        Ok(self.control()?.current())
    }

    /// Writes `events` atomically (one batch) and waits until they show.
    async fn write(&self, events: &[ControlEvent]) -> Result<(), AdminError> {
        Ok(self.control()?.write(events).await?)
    }
}

/// Every configured admin token with its grant.
fn grants(cfg: &Config) -> Vec<([u8; 32], Grant)> {
    let full = cfg.admin_tokens().map(|t| {
        let d = super::digest(t.as_bytes());
        let grant = Grant {
            actor: format!("admin:{}", &hex::encode(d)[..8]),
            scopes: None,
            workspace: None,
        };
        (d, grant)
    });
    let scoped = cfg.api.scoped_tokens.iter().filter_map(|t| {
        let d = match (&t.token, &t.hash) {
            (Some(tok), _) if !tok.is_empty() => super::digest(tok.as_bytes()),
            (_, Some(h)) => crate::config::parse_key_hash(h)?,
            _ => return None,
        };
        let grant = Grant {
            actor: t
                .name
                .clone()
                .unwrap_or_else(|| format!("token:{}", &hex::encode(d)[..8])),
            scopes: Some(t.scopes.clone()),
            workspace: t.workspace.clone(),
        };
        Some((d, grant))
    });
    full.chain(scoped).collect()
}

/// The scope an admin handler needs, named in its signature as a type:
/// [`CanRead`], [`CanWriteKeys`], [`CanWriteBudgets`].
pub trait Needs {
    const NEED: Need;
}

/// Reading keys, budgets, rate limits or the audit log.
pub struct CanRead;
/// Creating, rotating or revoking keys.
pub struct CanWriteKeys;
/// Setting or removing budgets, spend limits and rate limits.
pub struct CanWriteBudgets;
/// Setting or removing webhooks, routes and workspaces.
pub struct CanWriteAdmin;

impl Needs for CanRead {
    const NEED: Need = Need::Read;
}
impl Needs for CanWriteKeys {
    const NEED: Need = Need::KeysWrite;
}
impl Needs for CanWriteBudgets {
    const NEED: Need = Need::BudgetsWrite;
}
impl Needs for CanWriteAdmin {
    const NEED: Need = Need::AdminWrite;
}

/// The caller's grant when its token holds scope `N`: an extractor (like
/// the query API's `Reader`), so no admin handler can forget to ask.
pub struct Granted<N>(pub Grant, std::marker::PhantomData<N>);

impl<N: Needs> axum::extract::FromRequestParts<Arc<AdminState>> for Granted<N> {
    type Rejection = AdminError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &Arc<AdminState>,
    ) -> Result<Self, Self::Rejection> {
        let grant = state.authorize(&parts.headers, N::NEED)?;
        Ok(Granted(grant, std::marker::PhantomData))
    }
}

/// Parses a JSON body strictly: an unknown or ill-typed field is a 400
/// naming it (serde's message names the field and line).
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    serde_json::from_slice(body).map_err(|e| AdminError::field("body", e.to_string()))
}

/// The first field of `input` that parsing dropped (`known` is the parsed
/// value serialized back), as a path like `targets[0].weights`: a field
/// the config does not have is a 400 naming it, even where the config's
/// own parser tolerates it (Portkey's shapes, say).
pub fn unknown_field(
    input: &serde_json::Value,
    known: &serde_json::Value,
    at: &str,
) -> Option<String> {
    use serde_json::Value;
    match (input, known) {
        (Value::Object(given), Value::Object(kept)) => given.iter().find_map(|(name, v)| {
            let path = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}.{name}")
            };
            match kept.get(name) {
                None => Some(path),
                Some(k) => unknown_field(v, k, &path),
            }
        }),
        (Value::Array(given), Value::Array(kept)) => given
            .iter()
            .zip(kept)
            .enumerate()
            .find_map(|(i, (v, k))| unknown_field(v, k, &format!("{at}[{i}]"))),
        _ => None,
    }
}

/// Installation-wide entities (webhooks, routes, workspaces, rate
/// limits): a workspace-limited token gets 403 naming its workspace.
pub fn check_unlimited(grant: &Grant) -> Result<(), AdminError> {
    match &grant.workspace {
        Some(w) => Err(AdminError::Workspace(w.clone())),
        None => Ok(()),
    }
}

/// The entry `name` of one kind of the control state (`what` names the
/// kind in the 404), cloned out of the shared state.
pub fn entry_of<E: Clone>(
    entries: &BTreeMap<String, E>,
    what: &str,
    name: &str,
) -> Result<E, AdminError> {
    entries
        .get(name)
        .cloned()
        .ok_or_else(|| AdminError::NotFound(format!("no {what} {name:?}")))
}

/// `{data: [...]}`: every entry of one kind, as `show` presents it.
pub fn listing<E>(
    entries: &BTreeMap<String, E>,
    show: impl Fn(&str, &E) -> serde_json::Value,
) -> serde_json::Value {
    let data: Vec<serde_json::Value> = entries.iter().map(|(k, e)| show(k, e)).collect();
    serde_json::json!({ "data": data })
}

/// A free-text identifier (team, user, workspace, names): non-empty,
/// bounded, printable.
pub fn check_name(field: &str, value: &str) -> Result<(), AdminError> {
    if value.is_empty() || value.len() > 128 {
        return Err(AdminError::field(field, "must be 1 to 128 characters"));
    }
    if value.chars().any(|c| c.is_control() || c == '/') {
        return Err(AdminError::field(
            field,
            "must not hold control characters or '/'",
        ));
    }
    Ok(())
}

/// The admin routes.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/v1/admin/keys", post(keys::create).get(keys::list))
        .route(
            "/v1/admin/keys/{id}",
            get(keys::one).patch(keys::update).delete(keys::revoke),
        )
        .route("/v1/admin/keys/{id}/rotate", post(keys::rotate))
        .route(
            "/v1/admin/budgets",
            post(budgets::create).get(budgets::list),
        )
        .route(
            "/v1/admin/budgets/{name}",
            get(budgets::one)
                .put(budgets::replace)
                .delete(budgets::remove),
        )
        .route("/v1/admin/rate_limits", get(rate_limits::list))
        .route(
            "/v1/admin/rate_limits/{id}",
            axum::routing::put(rate_limits::put).delete(rate_limits::remove),
        )
        .route(
            "/v1/admin/webhooks",
            post(webhooks::create).get(webhooks::list),
        )
        .route(
            "/v1/admin/webhooks/{id}",
            get(webhooks::one)
                .put(webhooks::replace)
                .delete(webhooks::remove),
        )
        .route("/v1/admin/routes", post(routes::create).get(routes::list))
        .route(
            "/v1/admin/routes/{name}",
            get(routes::one).put(routes::replace).delete(routes::remove),
        )
        .route(
            "/v1/admin/teams",
            post(teams::create_team).get(teams::list_teams),
        )
        .route(
            "/v1/admin/teams/{workspace}/{name}",
            get(teams::one_team)
                .put(teams::replace_team)
                .delete(teams::remove_team),
        )
        .route(
            "/v1/admin/workspaces",
            post(teams::create_workspace).get(teams::list_workspaces),
        )
        .route(
            "/v1/admin/workspaces/{name}",
            get(teams::one_workspace)
                .put(teams::replace_workspace)
                .delete(teams::remove_workspace),
        )
        .route("/v1/audit", get(audit::list))
        .route(
            "/v1/organizations/spend_limits",
            get(spend_limits::list).post(spend_limits::set),
        )
        .route(
            "/v1/organizations/spend_limits/{id}",
            get(spend_limits::one).delete(spend_limits::remove),
        )
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_describes_every_admin_route() {
        use utoipa::OpenApi;
        let doc = serde_json::to_value(crate::api::openapi::ApiDoc::openapi()).unwrap();
        for path in [
            "/v1/admin/keys",
            "/v1/admin/keys/{id}",
            "/v1/admin/keys/{id}/rotate",
            "/v1/admin/budgets",
            "/v1/admin/budgets/{name}",
            "/v1/admin/rate_limits",
            "/v1/admin/rate_limits/{id}",
            "/v1/admin/webhooks",
            "/v1/admin/webhooks/{id}",
            "/v1/admin/routes",
            "/v1/admin/routes/{name}",
            "/v1/admin/teams",
            "/v1/admin/teams/{workspace}/{name}",
            "/v1/admin/workspaces",
            "/v1/admin/workspaces/{name}",
            "/v1/audit",
            "/v1/organizations/spend_limits",
            "/v1/organizations/spend_limits/{id}",
        ] {
            assert!(
                doc["paths"][path].is_object(),
                "{path} missing from the OpenAPI document"
            );
        }
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let given =
            serde_json::json!({"targets": [{"provider": "a", "wieght": 2}], "strategy": "single"});
        let kept = serde_json::json!({"targets": [{"provider": "a", "weight": 1.0}], "strategy": "single", "retry": null});
        assert_eq!(
            unknown_field(&given, &kept, "").as_deref(),
            Some("targets[0].wieght")
        );
        assert_eq!(unknown_field(&kept, &kept, ""), None);
    }

    #[test]
    fn scopes_grant_what_they_name_and_admin_write_grants_every_write() {
        let g = |s: &[&str]| Grant {
            actor: "t".into(),
            scopes: Some(s.iter().map(|x| x.to_string()).collect()),
            workspace: None,
        };
        assert!(g(&["keys:write"]).allows(Need::KeysWrite));
        assert!(!g(&["keys:write"]).allows(Need::BudgetsWrite));
        assert!(!g(&["admin:read"]).allows(Need::KeysWrite));
        assert!(g(&["admin:read"]).allows(Need::Read));
        assert!(g(&["admin:write"]).allows(Need::BudgetsWrite));
        assert!(!g(&["keys:write", "budgets:write"]).allows(Need::AdminWrite));
        assert_eq!(
            AdminError::Scope(Need::AdminWrite.scope()).to_string(),
            "forbidden: this token lacks the scope admin:write"
        );
        assert_eq!(
            AdminError::Scope(Need::BudgetsWrite.scope()).to_string(),
            "forbidden: this token lacks the scope budgets:write (or admin:write)"
        );
    }
}
