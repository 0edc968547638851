//! Wiring of the roles into a running process.
//!
//! `tollgate serve` runs every role in one process on the embedded bus:
//! gateway → publisher → log → accountant → log → sink → lake ← query API. Shutdown runs the
//! same path in order: stop accepting, let in-flight requests finish (their
//! events queue up), drain the queue onto the log, let the sink write
//! everything the log holds, then exit.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::bus::embedded_bus::EmbeddedBus;
use crate::accounting::accountant::Accountant;
use crate::accounting::pricing::PriceBook;
use crate::bus::{self, BusError, COSTED_TOPIC, EVENTS_TOPIC, Log};
use crate::config::Config;
use crate::gateway::{self, Gateway};
use crate::handoff;
use crate::lake::files::LakeLayout;
use crate::lake::query::Lake;
use crate::lake::sink::{Sink, SinkOptions};
use crate::lake::LakeError;
use crate::providers::{self, ProviderError};

/// Consumer group of the lake sink.
pub const SINK_GROUP: &str = "tollgate-sink";

/// Why a role could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Pricing(#[from] crate::accounting::pricing::PricingError),
}

/// Runs every role in this process until `shutdown` resolves.
///
/// `on_listening` is told the gateway's and the API's addresses once both
/// accept connections (the CLI prints them; tests read them).
pub async fn serve(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr, SocketAddr),
) -> Result<(), RoleError> {
    let bus: Arc<dyn Log> = EmbeddedBus::open(&cfg.data.log_dir())?;
    let layout = LakeLayout::new(cfg.data.lake_dir());

    let (handoff, queue) = handoff::channel(cfg.bus.queue_capacity);
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move { bus::publisher::run(queue, bus, EVENTS_TOPIC).await })
    };

    let accountant_stop = CancellationToken::new();
    let book = match &cfg.pricing.dir {
        Some(dir) => PriceBook::load_dir(dir)?,
        None => PriceBook::embedded(),
    };
    tracing::info!(version = book.version(), "price tables loaded");
    let accountant = Accountant::new(book, bus.clone()).await?;
    let accountant_task = tokio::spawn(accountant.run(accountant_stop.clone()));

    let sink_stop = CancellationToken::new();
    let sink = Sink::new(
        bus.subscribe(SINK_GROUP, COSTED_TOPIC).await?,
        layout.clone(),
        SinkOptions {
            flush_rows: cfg.sink.flush_rows,
            flush_interval: Duration::from_millis(cfg.sink.flush_interval_ms),
        },
    )
    .await?;
    let sink_task = tokio::spawn(sink.run(sink_stop.clone()));

    let gateway = Arc::new(Gateway::new(&cfg, providers::from_config(&cfg)?, handoff));
    let api_state = Arc::new(ApiState::new(Lake::open(&layout).await?, cfg.admin_tokens()));
    if cfg.admin_tokens().next().is_none() {
        tracing::warn!("no admin token configured: the query API will refuse every request (set TOLLGATE_ADMIN_TOKEN)");
    }

    let gateway_listener = bind(cfg.server.listen).await?;
    let gateway_addr = local_addr(&gateway_listener, cfg.server.listen)?;
    let stop_http = CancellationToken::new();
    let mut servers = Vec::new();
    let api_addr = match cfg.server.api_listen {
        Some(addr) => {
            let api_listener = bind(addr).await?;
            let api_addr = local_addr(&api_listener, addr)?;
            servers.push(spawn_http(api_listener, api::router(api_state), stop_http.clone()));
            servers.push(spawn_http(gateway_listener, gateway::router(gateway), stop_http.clone()));
            api_addr
        }
        None => {
            let app = gateway::router(gateway).merge(api::router(api_state));
            servers.push(spawn_http(gateway_listener, app, stop_http.clone()));
            gateway_addr
        }
    };
    on_listening(gateway_addr, api_addr);

    shutdown.await;
    tracing::info!("shutting down: finishing in-flight requests");
    stop_http.cancel();
    let grace = Duration::from_secs(cfg.server.shutdown_grace_secs);
    for server in servers {
        match tokio::time::timeout(grace, server).await {
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "HTTP server stopped with an error"),
            Err(_) => tracing::warn!("requests still open after the shutdown grace period; their events are lost"),
            _ => {}
        }
    }
    if tokio::time::timeout(grace, publisher).await.is_err() {
        tracing::warn!("event publisher did not drain within the grace period");
    }
    accountant_stop.cancel();
    match tokio::time::timeout(grace, accountant_task).await {
        Ok(Ok(result)) => result?,
        Ok(Err(e)) => tracing::error!(error = %e, "accountant task failed"),
        Err(_) => tracing::warn!("accountant did not finish within the grace period; the log keeps its events for the next start"),
    }
    sink_stop.cancel();
    match tokio::time::timeout(grace, sink_task).await {
        Ok(Ok(result)) => result?,
        Ok(Err(e)) => tracing::error!(error = %e, "sink task failed"),
        Err(_) => tracing::warn!("sink did not finish within the grace period; the log keeps its events for the next start"),
    }
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, RoleError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RoleError::Listen { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, RoleError> {
    listener
        .local_addr()
        .map_err(|source| RoleError::Listen { addr, source })
}

/// Serves `app` until `stop` is cancelled, then waits for open requests.
fn spawn_http(
    listener: TcpListener,
    app: axum::Router,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Result<(), RoleError>> {
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .map_err(RoleError::Serve)
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
