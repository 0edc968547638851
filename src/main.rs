//! The `tollgate` command line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tollgate::config::{Config, generate_key, hash_key, starter_config};
use tollgate::mock_provider::{self, MockOptions};
use tollgate::roles;

/// Gateway and cost-accounting pipeline for Claude Code.
#[derive(Parser)]
#[command(name = "tollgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a commented starter tollgate.toml with one new key (printed
    /// once, on the last line).
    Init,
    /// Run every role in one process (gateway, bus, sink, query API).
    Serve {
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
    },
    /// Manage tollgate keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Show every request of a trace, from the query API.
    Logs {
        #[arg(long)]
        trace_id: String,
        /// The query API's base URL.
        #[arg(long, env = "TOLLGATE_API_URL", default_value = "http://127.0.0.1:8787")]
        url: String,
        #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Run the mock LLM provider (tests and benchmarks).
    #[command(hide = true)]
    MockProvider {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Credential the mock requires; none accepts any.
        #[arg(long)]
        api_key: Option<String>,
        /// Scenario for requests that name none (e.g. `delay:20`).
        #[arg(long)]
        scenario: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Make a new key and print the [[keys]] entry to add to the config.
    New {
        #[arg(long)]
        team: String,
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "default")]
        workspace: String,
        #[arg(long, default_value = "anthropic")]
        provider: String,
        /// The key's non-secret id (defaults to a random one).
        #[arg(long)]
        id: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Init => init(),
        Command::Key { command: KeyCommand::New { team, user, workspace, provider, id } } => {
            let key = generate_key();
            let id = id.unwrap_or_else(|| format!("key_{}", &hash_key(&key)[7..19]));
            println!("# add to tollgate.toml:");
            println!("[[keys]]\nid = \"{id}\"\nhash = \"{}\"\nworkspace = \"{workspace}\"\nteam = \"{team}\"\nuser = \"{user}\"\nprovider = \"{provider}\"\n", hash_key(&key));
            println!("# the key (shown once):");
            println!("{key}");
            Ok(())
        }
        Command::Serve { config } => runtime()?.block_on(serve(config)),
        Command::Logs { trace_id, url, token } => runtime()?.block_on(logs(trace_id, url, token)),
        Command::MockProvider { listen, api_key, scenario } => runtime()?.block_on(async move {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let options = MockOptions { api_key, default_scenario: scenario, record: false };
            let mock = mock_provider::spawn(listener, options)?;
            println!("mock provider listening on {}", mock.url());
            std::io::stdout().flush()?;
            roles::shutdown_signal().await;
            Ok(())
        }),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init() -> anyhow::Result<()> {
    let path = PathBuf::from("tollgate.toml");
    let key = generate_key();
    let id = format!("key_{}", &hash_key(&key)[7..19]);
    let mut file = match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} already exists; not overwriting it", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    };
    file.write_all(starter_config(&key, &id).as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {} (data under ./tollgate-data)", path.display());
    println!("start it with: tollgate serve");
    println!("point Claude Code at it: ANTHROPIC_BASE_URL=http://127.0.0.1:8787 ANTHROPIC_AUTH_TOKEN=<key below>");
    println!("your team key (shown once, only its hash is stored):");
    println!("{key}");
    Ok(())
}

async fn serve(config: PathBuf) -> anyhow::Result<()> {
    let cfg = Config::load(&config)?;
    roles::serve(cfg, roles::shutdown_signal(), |gateway, api| {
        println!("tollgate gateway listening on http://{gateway}");
        println!("tollgate query API listening on http://{api}");
        let _ = std::io::stdout().flush();
    })
    .await?;
    Ok(())
}

async fn logs(trace_id: String, url: String, token: String) -> anyhow::Result<()> {
    let url = format!("{}/v1/logs", url.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .get(&url)
        .query(&[("trace_id", trace_id.as_str())])
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let bytes = response.bytes().await.with_context(|| format!("reading the answer of {url}"))?;
    let body: serde_json::Value =
        serde_json::from_slice(&bytes).context("the API's answer is not JSON")?;
    if !status.is_success() {
        bail!("{url} answered {status}: {}", body.pointer("/error/message").and_then(|m| m.as_str()).unwrap_or("(no message)"));
    }
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}
