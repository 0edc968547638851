//! `/v1/admin/teams` and `/v1/admin/workspaces`: create, replace, list
//! and delete the teams keys belong to and the workspaces teams live in.
//!
//! Teams need `keys:write` (they are who keys belong to) and a
//! workspace-limited token manages only its workspace's teams; workspaces
//! need `admin:write` and a workspace-limited token cannot change them.
//! A team's workspace must exist (`default` always does); a workspace is
//! not removed while teams or keys are in it (409 naming them).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use bytes::Bytes;
use serde::Deserialize;

use super::keys::{check_metadata, check_workspace};
use super::{
    AdminError, AdminState, CanRead, CanWriteAdmin, CanWriteKeys, Grant, Granted, check_name,
    check_unlimited, parse_body,
};
use crate::control::event::{TeamEntry, WorkspaceEntry};
use crate::control::{ControlEvent, ControlState, Kind, Origin};

/// The workspace every installation has without creating it.
const DEFAULT_WORKSPACE: &str = "default";
/// Longest description.
const MAX_DESCRIPTION: usize = 1024;

/// A team or workspace as the API takes it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    pub name: String,
    /// Teams: default the token's workspace, else `default`. Ignored
    /// (refused) for workspaces.
    #[serde(default)]
    pub workspace: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The checks teams and workspaces share; a failure names the field.
fn check_common(new: &NewTeam) -> Result<(), AdminError> {
    check_name("name", &new.name)?;
    if new
        .description
        .as_ref()
        .is_some_and(|d| d.len() > MAX_DESCRIPTION)
    {
        return Err(AdminError::field(
            "description",
            format!("at most {MAX_DESCRIPTION} bytes"),
        ));
    }
    check_metadata(&new.metadata)
}

/// The team a validated request makes.
fn team_of(state: &ControlState, grant: &Grant, new: NewTeam) -> Result<TeamEntry, AdminError> {
    check_common(&new)?;
    let workspace = new
        .workspace
        .or_else(|| grant.workspace.clone())
        .unwrap_or_else(|| DEFAULT_WORKSPACE.into());
    check_name("workspace", &workspace)?;
    check_workspace(grant, &workspace)?;
    if workspace != DEFAULT_WORKSPACE && !state.workspaces.contains_key(&workspace) {
        return Err(AdminError::field(
            "workspace",
            format!("{workspace:?} does not exist (POST /v1/admin/workspaces first)"),
        ));
    }
    Ok(TeamEntry {
        name: new.name,
        workspace,
        description: new.description,
        metadata: new.metadata,
        origin: Origin::Api,
    })
}

/// Writes one set event for `id` with `after`, `before` as the state has it.
async fn set<T: serde::Serialize>(
    state: &AdminState,
    grant: &Grant,
    kind: Kind,
    id: &str,
    before: Option<serde_json::Value>,
    after: &T,
) -> Result<serde_json::Value, AdminError> {
    let after = serde_json::to_value(after).unwrap_or_default();
    let event = ControlEvent::new(kind, id, &grant.actor, before, Some(after.clone()));
    state.write(&[event]).await?;
    Ok(after)
}

/// `POST /v1/admin/teams`: creates (or replaces) a team.
#[utoipa::path(post, path = "/v1/admin/teams", tag = "admin", request_body = NewTeam,
    responses((status = 201, description = "The team", body = serde_json::Value),
        (status = 400, description = "A field is invalid (named)", body = crate::api::ErrorBody),
        (status = 403, description = "The token lacks keys:write or is limited to another workspace", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_team(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteKeys>,
    body: Bytes,
) -> Result<(http::StatusCode, Json<serde_json::Value>), AdminError> {
    let new: NewTeam = parse_body(&body)?;
    let current = state.state()?;
    let team = team_of(&current, &grant, new)?;
    let id = team.id();
    let before = current
        .teams
        .get(&id)
        .and_then(|t| serde_json::to_value(t).ok());
    let after = set(&state, &grant, Kind::TeamSet, &id, before, &team).await?;
    Ok((http::StatusCode::CREATED, Json(after)))
}

/// `PUT /v1/admin/teams/{workspace}/{name}`: replaces (or creates) a team.
#[utoipa::path(put, path = "/v1/admin/teams/{workspace}/{name}", tag = "admin", request_body = NewTeam,
    params(("workspace" = String, Path, description = "The team's workspace"), ("name" = String, Path, description = "The team's name")),
    responses((status = 200, description = "The team", body = serde_json::Value),
        (status = 400, description = "A field is invalid (named)", body = crate::api::ErrorBody),
        (status = 403, description = "The token lacks keys:write or is limited to another workspace", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn replace_team(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteKeys>,
    Path((workspace, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, AdminError> {
    let mut new: NewTeam = parse_body(&body)?;
    if new.name != name || new.workspace.as_ref().is_some_and(|w| *w != workspace) {
        return Err(AdminError::field(
            "name",
            "the body's name and workspace must agree with the path",
        ));
    }
    new.workspace = Some(workspace);
    let current = state.state()?;
    let team = team_of(&current, &grant, new)?;
    let id = team.id();
    let before = current
        .teams
        .get(&id)
        .and_then(|t| serde_json::to_value(t).ok());
    Ok(Json(
        set(&state, &grant, Kind::TeamSet, &id, before, &team).await?,
    ))
}

/// `GET /v1/admin/teams`: the teams the token may see.
#[utoipa::path(get, path = "/v1/admin/teams", tag = "admin",
    responses((status = 200, description = "`{data: [teams]}`", body = serde_json::Value),
        (status = 403, description = "The token lacks admin:read", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_teams(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanRead>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let current = state.state()?;
    let data: Vec<serde_json::Value> = current
        .teams
        .values()
        .filter(|t| check_workspace(&grant, &t.workspace).is_ok())
        .filter_map(|t| serde_json::to_value(t).ok())
        .collect();
    Ok(Json(serde_json::json!({ "data": data })))
}

/// The team `workspace/name` if the token may see it (403 naming the
/// token's workspace otherwise), or 404.
fn find_team(
    state: &AdminState,
    grant: &Grant,
    workspace: &str,
    name: &str,
) -> Result<TeamEntry, AdminError> {
    check_workspace(grant, workspace)?;
    state
        .state()?
        .teams
        .get(&format!("{workspace}/{name}"))
        .cloned()
        .ok_or_else(|| AdminError::NotFound(format!("no team {name:?} in workspace {workspace:?}")))
}

/// `GET /v1/admin/teams/{workspace}/{name}`.
#[utoipa::path(get, path = "/v1/admin/teams/{workspace}/{name}", tag = "admin",
    params(("workspace" = String, Path, description = "The team's workspace"), ("name" = String, Path, description = "The team's name")),
    responses((status = 200, description = "The team", body = serde_json::Value),
        (status = 403, description = "The token is limited to another workspace", body = crate::api::ErrorBody),
        (status = 404, description = "No such team", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn one_team(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanRead>,
    Path((workspace, name)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let team = find_team(&state, &grant, &workspace, &name)?;
    Ok(Json(serde_json::to_value(team).unwrap_or_default()))
}

/// `DELETE /v1/admin/teams/{workspace}/{name}`.
#[utoipa::path(delete, path = "/v1/admin/teams/{workspace}/{name}", tag = "admin",
    params(("workspace" = String, Path, description = "The team's workspace"), ("name" = String, Path, description = "The team's name")),
    responses((status = 200, description = "Removed", body = serde_json::Value),
        (status = 403, description = "The token is limited to another workspace", body = crate::api::ErrorBody),
        (status = 404, description = "No such team", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove_team(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteKeys>,
    Path((workspace, name)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let before = find_team(&state, &grant, &workspace, &name)?;
    let id = before.id();
    let event = ControlEvent::new(
        Kind::TeamRemoved,
        &id,
        &grant.actor,
        serde_json::to_value(before).ok(),
        None,
    );
    state.write(&[event]).await?;
    Ok(Json(
        serde_json::json!({ "workspace": workspace, "name": name, "removed": true }),
    ))
}

/// Sets workspace `new.name` as `grant`'s actor.
async fn put_workspace(
    state: &AdminState,
    grant: &Grant,
    new: NewTeam,
) -> Result<serde_json::Value, AdminError> {
    check_unlimited(grant)?;
    check_common(&new)?;
    if new.workspace.is_some() {
        return Err(AdminError::field(
            "workspace",
            "a workspace is not in a workspace",
        ));
    }
    let entry = WorkspaceEntry {
        name: new.name,
        description: new.description,
        metadata: new.metadata,
        origin: Origin::Api,
    };
    let before = state
        .state()?
        .workspaces
        .get(&entry.name)
        .and_then(|w| serde_json::to_value(w).ok());
    set(
        state,
        grant,
        Kind::WorkspaceSet,
        &entry.name.clone(),
        before,
        &entry,
    )
    .await
}

/// `POST /v1/admin/workspaces`: creates (or replaces) a workspace.
#[utoipa::path(post, path = "/v1/admin/workspaces", tag = "admin", request_body = NewTeam,
    responses((status = 201, description = "The workspace", body = serde_json::Value),
        (status = 400, description = "A field is invalid (named)", body = crate::api::ErrorBody),
        (status = 403, description = "The token lacks admin:write or is limited to a workspace", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_workspace(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteAdmin>,
    body: Bytes,
) -> Result<(http::StatusCode, Json<serde_json::Value>), AdminError> {
    let new: NewTeam = parse_body(&body)?;
    Ok((
        http::StatusCode::CREATED,
        Json(put_workspace(&state, &grant, new).await?),
    ))
}

/// `PUT /v1/admin/workspaces/{name}`: replaces (or creates) a workspace.
#[utoipa::path(put, path = "/v1/admin/workspaces/{name}", tag = "admin", request_body = NewTeam,
    params(("name" = String, Path, description = "The workspace's name")),
    responses((status = 200, description = "The workspace", body = serde_json::Value),
        (status = 400, description = "A field is invalid (named)", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn replace_workspace(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteAdmin>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, AdminError> {
    let new: NewTeam = parse_body(&body)?;
    if new.name != name {
        return Err(AdminError::field(
            "name",
            format!("{:?} differs from the path's {name:?}", new.name),
        ));
    }
    Ok(Json(put_workspace(&state, &grant, new).await?))
}

/// `GET /v1/admin/workspaces`: every workspace (a limited token: its own).
#[utoipa::path(get, path = "/v1/admin/workspaces", tag = "admin",
    responses((status = 200, description = "`{data: [workspaces]}`", body = serde_json::Value)),
    security(("bearer" = [])))]
pub async fn list_workspaces(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanRead>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let current = state.state()?;
    let data: Vec<serde_json::Value> = current
        .workspaces
        .values()
        .filter(|w| check_workspace(&grant, &w.name).is_ok())
        .filter_map(|w| serde_json::to_value(w).ok())
        .collect();
    Ok(Json(serde_json::json!({ "data": data })))
}

/// `GET /v1/admin/workspaces/{name}`.
#[utoipa::path(get, path = "/v1/admin/workspaces/{name}", tag = "admin",
    params(("name" = String, Path, description = "The workspace's name")),
    responses((status = 200, description = "The workspace", body = serde_json::Value),
        (status = 404, description = "No such workspace", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn one_workspace(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanRead>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    check_workspace(&grant, &name)?;
    let w = state
        .state()?
        .workspaces
        .get(&name)
        .cloned()
        .ok_or_else(|| AdminError::NotFound(format!("no workspace {name:?}")))?;
    Ok(Json(serde_json::to_value(w).unwrap_or_default()))
}

/// `DELETE /v1/admin/workspaces/{name}`: refused (409) while teams or
/// keys are in it.
#[utoipa::path(delete, path = "/v1/admin/workspaces/{name}", tag = "admin",
    params(("name" = String, Path, description = "The workspace's name")),
    responses((status = 200, description = "Removed", body = serde_json::Value),
        (status = 404, description = "No such workspace", body = crate::api::ErrorBody),
        (status = 409, description = "Teams or keys are in it (named)", body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove_workspace(
    State(state): State<Arc<AdminState>>,
    Granted(grant, _): Granted<CanWriteAdmin>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    check_unlimited(&grant)?;
    let current = state.state()?;
    let before = current
        .workspaces
        .get(&name)
        .cloned()
        .ok_or_else(|| AdminError::NotFound(format!("no workspace {name:?}")))?;
    let teams = current
        .teams
        .values()
        .filter(|t| t.workspace == name)
        .map(|t| t.name.as_str());
    let keys = current
        .keys
        .values()
        .filter(|k| k.workspace == name)
        .map(|k| k.id.as_str());
    let inside: Vec<&str> = teams.chain(keys).take(10).collect();
    if !inside.is_empty() {
        return Err(AdminError::Conflict(format!(
            "workspace {name:?} still holds teams or keys {inside:?}: remove or move them first"
        )));
    }
    let event = ControlEvent::new(
        Kind::WorkspaceRemoved,
        &name,
        &grant.actor,
        serde_json::to_value(before).ok(),
        None,
    );
    state.write(&[event]).await?;
    Ok(Json(serde_json::json!({ "name": name, "removed": true })))
}
