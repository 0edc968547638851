//! `tollgate admin keys|budgets|routes|webhooks|teams|workspaces …` and
//! `tollgate key new --apply`: the admin API from the command line,
//! printed as a table or JSON.

mod entities;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminCliError {
    #[error("{0} is not a usable API URL")]
    Url(String),
    #[error("no admin token: pass --token or set TOLLGATE_ADMIN_TOKEN")]
    NoToken,
    #[error("{0}")]
    Arg(String),
    #[error("cannot reach {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("{url} answered {status}: {message}")]
    Api {
        url: String,
        status: u16,
        message: String,
    },
}

/// How results are printed.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Where the admin API is and who calls it.
#[derive(Debug, Args)]
pub struct Target {
    /// The query API's base URL.
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_API_URL",
        default_value = "http://127.0.0.1:8787"
    )]
    pub url: String,
    /// An admin token (full, or scoped to what the command does).
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub output: Output,
}

/// `tollgate admin …`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Keys: list, create, delete (revoke), rotate.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        #[command(flatten)]
        target: Target,
    },
    /// Budgets: list, create (or replace), delete.
    Budgets {
        #[command(subcommand)]
        command: BudgetsCommand,
        #[command(flatten)]
        target: Target,
    },
    /// Routes: list, create (or replace), delete.
    Routes {
        #[command(subcommand)]
        command: entities::RoutesCommand,
        #[command(flatten)]
        target: Target,
    },
    /// Webhooks: list, create (or replace), delete.
    Webhooks {
        #[command(subcommand)]
        command: entities::WebhooksCommand,
        #[command(flatten)]
        target: Target,
    },
    /// Teams: list, create (or replace), delete.
    Teams {
        #[command(subcommand)]
        command: entities::TeamsCommand,
        #[command(flatten)]
        target: Target,
    },
    /// Workspaces: list, create (or replace), delete.
    Workspaces {
        #[command(subcommand)]
        command: entities::WorkspacesCommand,
        #[command(flatten)]
        target: Target,
    },
}

/// `tollgate admin keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    List,
    /// Prints the new key once.
    Create(NewKeyArgs),
    /// Revokes the key.
    Delete {
        id: String,
    },
    /// A new key; the old one works for `--grace-seconds` more.
    Rotate {
        id: String,
        #[arg(long)]
        grace_seconds: Option<u64>,
    },
}

/// The fields of a new key.
#[derive(Debug, Args)]
pub struct NewKeyArgs {
    #[arg(long)]
    pub team: String,
    #[arg(long)]
    pub user: String,
    #[arg(long)]
    pub workspace: Option<String>,
    #[arg(long)]
    pub provider: Option<String>,
    #[arg(long)]
    pub route: Option<String>,
    #[arg(long)]
    pub passthrough: bool,
    /// RFC 3339 time after which the key is refused.
    #[arg(long)]
    pub expires_at: Option<String>,
}

impl NewKeyArgs {
    /// The `POST /v1/admin/keys` body.
    pub fn body(&self) -> Value {
        let mut body =
            json!({"team": self.team, "user": self.user, "passthrough": self.passthrough});
        for (field, value) in [
            ("workspace", &self.workspace),
            ("provider", &self.provider),
            ("route", &self.route),
            ("expires_at", &self.expires_at),
        ] {
            if let Some(v) = value {
                body[field] = json!(v);
            }
        }
        body
    }
}

/// `tollgate admin budgets …`.
#[derive(Debug, Subcommand)]
pub enum BudgetsCommand {
    List,
    /// Creates or replaces budget `name`.
    Create {
        name: String,
        /// key, user, team, workspace or all.
        #[arg(long)]
        scope: String,
        #[arg(long)]
        subject: Option<String>,
        /// daily, weekly, monthly or total.
        #[arg(long)]
        period: String,
        #[arg(long)]
        limit_usd: Option<String>,
        #[arg(long)]
        limit_tokens: Option<u64>,
        #[arg(long)]
        timezone: Option<String>,
    },
    Delete {
        name: String,
    },
}

/// Runs one admin command.
pub async fn run(command: AdminCommand) -> Result<(), AdminCliError> {
    match command {
        AdminCommand::Keys { command, target } => keys(command, &target).await,
        AdminCommand::Budgets { command, target } => budgets(command, &target).await,
        AdminCommand::Routes { command, target } => entities::routes(command, &target).await,
        AdminCommand::Webhooks { command, target } => entities::webhooks(command, &target).await,
        AdminCommand::Teams { command, target } => entities::teams(command, &target).await,
        AdminCommand::Workspaces { command, target } => {
            entities::workspaces(command, &target).await
        }
    }
}

async fn keys(command: KeysCommand, t: &Target) -> Result<(), AdminCliError> {
    let columns = [
        "id",
        "workspace",
        "team",
        "user",
        "provider",
        "origin",
        "expires_at",
    ];
    match command {
        KeysCommand::List => print_list(
            &call(t, http::Method::GET, "/v1/admin/keys", None).await?,
            &columns,
            t.output,
        ),
        KeysCommand::Create(args) => {
            let made = call(t, http::Method::POST, "/v1/admin/keys", Some(args.body())).await?;
            print_one(&made, &["id", "team", "user", "key"], t.output);
        }
        KeysCommand::Delete { id } => {
            let done = call(
                t,
                http::Method::DELETE,
                &format!("/v1/admin/keys/{id}"),
                None,
            )
            .await?;
            print_one(&done, &["id", "revoked"], t.output);
        }
        KeysCommand::Rotate { id, grace_seconds } => {
            let body = grace_seconds.map(|g| json!({"grace_seconds": g}));
            let done = call(
                t,
                http::Method::POST,
                &format!("/v1/admin/keys/{id}/rotate"),
                body,
            )
            .await?;
            print_one(&done, &["id", "key"], t.output);
        }
    }
    Ok(())
}

async fn budgets(command: BudgetsCommand, t: &Target) -> Result<(), AdminCliError> {
    match command {
        BudgetsCommand::List => {
            let list = call(t, http::Method::GET, "/v1/admin/budgets", None).await?;
            let rows: Vec<Value> = list["data"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| {
                    let mut row = b["budget"].clone();
                    row["origin"] = b["origin"].clone();
                    row
                })
                .collect();
            let columns = [
                "name",
                "scope",
                "subject",
                "period",
                "limit_usd",
                "limit_tokens",
                "origin",
            ];
            print_list(&json!({ "data": rows }), &columns, t.output);
        }
        BudgetsCommand::Create {
            name,
            scope,
            subject,
            period,
            limit_usd,
            limit_tokens,
            timezone,
        } => {
            let mut body = json!({"scope": scope, "period": period});
            for (field, value) in [
                ("subject", subject.map(Value::from)),
                ("limit_usd", limit_usd.map(Value::from)),
                ("limit_tokens", limit_tokens.map(Value::from)),
                ("timezone", timezone.map(Value::from)),
            ] {
                if let Some(v) = value {
                    body[field] = v;
                }
            }
            let set = call(
                t,
                http::Method::PUT,
                &format!("/v1/admin/budgets/{name}"),
                Some(body),
            )
            .await?;
            print_one(
                &set["budget"],
                &["name", "scope", "subject", "period", "limit_usd"],
                t.output,
            );
        }
        BudgetsCommand::Delete { name } => {
            let done = call(
                t,
                http::Method::DELETE,
                &format!("/v1/admin/budgets/{name}"),
                None,
            )
            .await?;
            print_one(&done, &["name", "removed"], t.output);
        }
    }
    Ok(())
}

/// One admin API call; a non-2xx answer is an error with its message.
pub async fn call(
    t: &Target,
    method: http::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, AdminCliError> {
    let url = format!("{}{path}", t.url.trim_end_matches('/'));
    reqwest::Url::parse(&url).map_err(|_| AdminCliError::Url(t.url.clone()))?;
    let token = t.token.as_deref().ok_or(AdminCliError::NoToken)?;
    let mut req = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let http = |source| AdminCliError::Http {
        url: url.clone(),
        source,
    };
    let response = req.send().await.map_err(http)?;
    let status = response.status().as_u16();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        let message = value
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("(no message)")
            .to_owned();
        return Err(AdminCliError::Api {
            url,
            status,
            message,
        });
    }
    Ok(value)
}

/// A cell: strings bare, null empty, others as JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `{data: [...]}` as aligned columns, or the JSON as it came.
fn print_list(list: &Value, columns: &[&str], output: Output) {
    if let Output::Json = output {
        println!("{}", serde_json::to_string_pretty(list).unwrap_or_default());
        return;
    }
    let rows: Vec<Vec<String>> = list["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| columns.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(columns.iter().map(|c| c.to_uppercase()).collect());
    for r in rows {
        line(r);
    }
}

/// One object as `field: value` lines, or JSON.
fn print_one(v: &Value, fields: &[&str], output: Output) {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        Output::Table => {
            for f in fields {
                println!("{f}: {}", cell(&v[*f]));
            }
        }
    }
}
