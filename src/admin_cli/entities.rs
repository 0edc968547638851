//! `tollgate admin routes|webhooks|teams|workspaces …`: list, create (or
//! replace) and delete over the admin API, printed as a table or JSON.

use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::{AdminCliError, Target, call, print_list, print_one};

/// `tollgate admin routes …`.
#[derive(Debug, Subcommand)]
pub enum RoutesCommand {
    List,
    /// Creates or replaces route `name` from a `[routes.NAME]` table as
    /// JSON (`--json '{"targets": [{"provider": "anthropic"}]}'`).
    Create {
        name: String,
        #[arg(long)]
        json: String,
    },
    Delete {
        name: String,
    },
}

/// Body shape of a webhook (as `[[webhooks]]`' `format`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Json,
    Slack,
}

/// `tollgate admin webhooks …`.
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    List,
    /// Creates or replaces a webhook.
    Create {
        /// The receiver's URL (`--url` is the API's).
        #[arg(long)]
        webhook_url: String,
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
        /// The environment variable holding the signing secret (a secret
        /// on the command line would show in `ps`).
        #[arg(long)]
        secret_env: Option<String>,
        /// Default: `webhook-<digest of the URL>`.
        #[arg(long)]
        id: Option<String>,
    },
    Delete {
        id: String,
    },
}

/// `tollgate admin teams …`.
#[derive(Debug, Subcommand)]
pub enum TeamsCommand {
    List,
    /// Creates or replaces team `name` (in the token's workspace, else
    /// `default`, unless `--workspace`).
    Create {
        name: String,
        #[arg(long)]
        workspace: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    Delete {
        name: String,
        #[arg(long, default_value = "default")]
        workspace: String,
    },
}

/// `tollgate admin workspaces …`.
#[derive(Debug, Subcommand)]
pub enum WorkspacesCommand {
    List,
    Create {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    Delete {
        name: String,
    },
}

/// Path segments are sent as given: one with a `/` or `?` would name
/// another endpoint.
fn segment(field: &str, value: &str) -> Result<String, AdminCliError> {
    if value.is_empty() || value.contains(['/', '?', '#']) {
        return Err(AdminCliError::Arg(format!(
            "{field} {value:?} must be non-empty without '/', '?' or '#'"
        )));
    }
    Ok(value.to_owned())
}

/// Runs `tollgate admin routes …`.
pub async fn routes(command: RoutesCommand, t: &Target) -> Result<(), AdminCliError> {
    match command {
        RoutesCommand::List => {
            let list = call(t, http::Method::GET, "/v1/admin/routes", None).await?;
            let rows: Vec<Value> = list["data"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let targets: Vec<&str> = r["route"]["targets"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t["provider"].as_str())
                        .collect();
                    json!({"name": r["name"], "strategy": r["route"]["strategy"],
                        "targets": targets.join(","), "origin": r["origin"]})
                })
                .collect();
            let rows = json!({ "data": rows });
            let shown = if matches!(t.output, super::Output::Json) {
                &list
            } else {
                &rows
            };
            print_list(shown, &["name", "strategy", "targets", "origin"], t.output);
        }
        RoutesCommand::Create { name, json } => {
            let body: Value = serde_json::from_str(&json)
                .map_err(|e| AdminCliError::Arg(format!("--json is not JSON: {e}")))?;
            let path = format!("/v1/admin/routes/{}", segment("name", &name)?);
            let set = call(t, http::Method::PUT, &path, Some(body)).await?;
            print_one(&set, &["name", "origin"], t.output);
        }
        RoutesCommand::Delete { name } => {
            let path = format!("/v1/admin/routes/{}", segment("name", &name)?);
            let done = call(t, http::Method::DELETE, &path, None).await?;
            print_one(&done, &["name", "removed"], t.output);
        }
    }
    Ok(())
}

/// Runs `tollgate admin webhooks …`.
pub async fn webhooks(command: WebhooksCommand, t: &Target) -> Result<(), AdminCliError> {
    let columns = [
        "id",
        "url_redacted",
        "format",
        "secret",
        "fingerprint",
        "origin",
    ];
    match command {
        WebhooksCommand::List => {
            let list = call(t, http::Method::GET, "/v1/admin/webhooks", None).await?;
            print_list(&list, &columns, t.output);
        }
        WebhooksCommand::Create {
            webhook_url,
            format,
            secret_env,
            id,
        } => {
            let format = match format {
                Format::Json => "json",
                Format::Slack => "slack",
            };
            let mut body = json!({"url": webhook_url, "format": format});
            if let Some(var) = secret_env {
                let secret = std::env::var(&var)
                    .map_err(|_| AdminCliError::Arg(format!("--secret-env: ${var} is not set")))?;
                body["secret"] = json!(secret);
            }
            if let Some(id) = id {
                body["id"] = json!(id);
            }
            let made = call(t, http::Method::POST, "/v1/admin/webhooks", Some(body)).await?;
            print_one(&made, &columns, t.output);
        }
        WebhooksCommand::Delete { id } => {
            let path = format!("/v1/admin/webhooks/{}", segment("id", &id)?);
            let done = call(t, http::Method::DELETE, &path, None).await?;
            print_one(&done, &["id", "removed"], t.output);
        }
    }
    Ok(())
}

/// Runs `tollgate admin teams …`.
pub async fn teams(command: TeamsCommand, t: &Target) -> Result<(), AdminCliError> {
    let columns = ["workspace", "name", "description", "origin"];
    match command {
        TeamsCommand::List => {
            let list = call(t, http::Method::GET, "/v1/admin/teams", None).await?;
            print_list(&list, &columns, t.output);
        }
        TeamsCommand::Create {
            name,
            workspace,
            description,
        } => {
            let mut body = json!({"name": name});
            if let Some(w) = workspace {
                body["workspace"] = json!(w);
            }
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            let made = call(t, http::Method::POST, "/v1/admin/teams", Some(body)).await?;
            print_one(&made, &columns, t.output);
        }
        TeamsCommand::Delete { name, workspace } => {
            let path = format!(
                "/v1/admin/teams/{}/{}",
                segment("workspace", &workspace)?,
                segment("name", &name)?
            );
            let done = call(t, http::Method::DELETE, &path, None).await?;
            print_one(&done, &["workspace", "name", "removed"], t.output);
        }
    }
    Ok(())
}

/// Runs `tollgate admin workspaces …`.
pub async fn workspaces(command: WorkspacesCommand, t: &Target) -> Result<(), AdminCliError> {
    let columns = ["name", "description", "origin"];
    match command {
        WorkspacesCommand::List => {
            let list = call(t, http::Method::GET, "/v1/admin/workspaces", None).await?;
            print_list(&list, &columns, t.output);
        }
        WorkspacesCommand::Create { name, description } => {
            let mut body = json!({"name": name});
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            let made = call(t, http::Method::POST, "/v1/admin/workspaces", Some(body)).await?;
            print_one(&made, &columns, t.output);
        }
        WorkspacesCommand::Delete { name } => {
            let path = format!("/v1/admin/workspaces/{}", segment("name", &name)?);
            let done = call(t, http::Method::DELETE, &path, None).await?;
            print_one(&done, &["name", "removed"], t.output);
        }
    }
    Ok(())
}
