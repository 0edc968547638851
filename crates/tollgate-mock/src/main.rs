//! `tollgate-mock`: the mock provider as its own process, for benchmarks
//! and manual runs (tests start it in-process with `tollgate_mock::spawn`).
//! Prints `mock provider listening on <url>` once it accepts connections.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use tollgate_mock::MockOptions;

/// Run the mock LLM provider (Anthropic, Bedrock and Vertex AI APIs).
#[derive(Parser)]
#[command(name = "tollgate-mock", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Credential the mock requires; none accepts any.
    #[arg(long)]
    api_key: Option<String>,
    /// Scenario for requests that name none (e.g. `delay:20`).
    #[arg(long)]
    scenario: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let options = MockOptions {
        api_key: args.api_key,
        default_scenario: args.scenario,
        ..MockOptions::default()
    };
    let mock = tollgate_mock::spawn(listener, options)?;
    println!("mock provider listening on {}", mock.url());
    std::io::stdout().flush()?;
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    Ok(())
}
