//! Wiring roles into a running process.
//!
//! `tollgate serve` runs every role in one process; `tollgate gateway`,
//! `accountant`, `sink` and `api` run one each. On the embedded bus the
//! roles share the on-disk log; on Kafka each gateway writes a local
//! journal that a forwarder produces to Kafka, and the other roles consume
//! Kafka topics in consumer groups, so any number of each can run.
//!
//! Shutdown follows the data path: stop accepting, let in-flight requests
//! finish (their events queue up), drain the queue into the log or journal,
//! forward the journal to Kafka, let the accountant and sink take what is
//! left, then exit — each step within the grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::accounting::accountant::Accountant;
#[cfg(feature = "lake")]
use crate::api::{self, ApiState};
use crate::backoff::Backoff;
use crate::budget::BudgetRecord;
#[cfg(feature = "lake")]
use crate::bus::COSTED_TOPIC;
use crate::bus::kafka::KafkaBus;
use crate::bus::local::LocalBus;
use crate::bus::reader::TopicReader;
use crate::bus::{self, BUDGETS_TOPIC, BusError, EVENTS_TOPIC, Log};
use crate::config::{BusKind, Config};
use crate::control::follow::Control;
use crate::gateway::admission::Admission;
use crate::gateway::{self, Gateway};
use crate::handoff;
use crate::http_server::ConnectionLimits;
#[cfg(feature = "lake")]
use crate::lake::LakeError;
#[cfg(feature = "lake")]
use crate::lake::compact::{CompactOptions, compact_owned};
#[cfg(feature = "lake")]
use crate::lake::files::LakeLayout;
#[cfg(feature = "lake")]
use crate::lake::query::Lake;
#[cfg(feature = "lake")]
use crate::lake::sink::{Sink, SinkOptions};
use crate::live;
use crate::metrics;
use crate::pricing::{PriceBook, SharedBook};
use crate::providers::{self, ProviderError};

/// Who start-up's apply of the config file is in the audit log.
pub const CONFIG_ACTOR: &str = "config-file";

/// Consumer group of the lake sink.
pub const SINK_GROUP: &str = "tollgate-sink";

/// One job a process can do; `serve` does all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Gateway,
    Accountant,
    Sink,
    Api,
    Notifier,
}

impl Role {
    /// Every role: what `tollgate serve` runs.
    pub const ALL: [Role; 5] = [
        Role::Gateway,
        Role::Accountant,
        Role::Sink,
        Role::Api,
        Role::Notifier,
    ];
}

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
    #[error(
        "the {role} role needs bus.kind = \"kafka\": on the embedded bus every role runs in one process (`tollgate serve`)"
    )]
    NeedsKafka { role: &'static str },
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[cfg(feature = "lake")]
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(
        "the {role} role is not in this build (built without the `lake` feature: gateway, accountant and notifier only)"
    )]
    NotInThisBuild { role: &'static str },
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Pricing(#[from] crate::pricing::PricingError),
    #[error(transparent)]
    Passthrough(#[from] gateway::passthrough::PassthroughError),
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
}

/// The bus a process talks through.
struct Bus {
    log: Arc<dyn Log>,
    /// Set on Kafka: the forwarder produces through it, start-up creates
    /// topics through it.
    kafka: Option<Arc<KafkaBus>>,
    /// Set on the embedded bus: compacted and trimmed periodically.
    embedded: Option<Arc<LocalBus>>,
}

impl Bus {
    /// Opens the configured bus; the embedded log is opened, recovered and
    /// maintained once on a blocking thread.
    async fn open(cfg: &Config) -> Result<Bus, RoleError> {
        match (cfg.bus.kind, &cfg.bus.kafka) {
            (BusKind::Kafka, Some(kafka)) => {
                let kafka = KafkaBus::new(kafka)?;
                Ok(Bus {
                    log: kafka.clone(),
                    kafka: Some(kafka),
                    embedded: None,
                })
            }
            _ => {
                let embedded =
                    LocalBus::open_maintained(&cfg.data.log_dir(), maintenance(cfg)).await?;
                Ok(Bus {
                    log: embedded.clone(),
                    kafka: None,
                    embedded: Some(embedded),
                })
            }
        }
    }
}

/// How often the embedded log is compacted and old segments deleted.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);
/// The budgets topic's active segment is sealed for compaction past this.
const BUDGETS_ROLL_BYTES: u64 = 4 * 1024 * 1024;

/// The embedded log's upkeep: the budgets topic compacted, the others kept
/// `bus.retention_days`.
fn maintenance(cfg: &Config) -> crate::bus::local::Maintenance {
    crate::bus::local::Maintenance {
        compacted: vec![BUDGETS_TOPIC.to_owned()],
        retention: (cfg.bus.retention_days > 0)
            .then(|| Duration::from_secs(u64::from(cfg.bus.retention_days) * 86_400)),
        roll_above: BUDGETS_ROLL_BYTES,
    }
}

/// Runs the embedded log's upkeep every [`MAINTENANCE_INTERVAL`] until
/// stopped; a failed pass is logged and tried again next time.
async fn maintain_periodically(bus: Arc<LocalBus>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(MAINTENANCE_INTERVAL) => {}
        }
        if let Err(e) = bus.maintain().await {
            tracing::warn!(error = %e, "embedded log compaction or retention failed; retrying next interval");
        }
    }
}

/// A background task of the process, stopped in data-path order.
struct Task {
    name: &'static str,
    stop: CancellationToken,
    handle: JoinHandle<Result<(), RoleError>>,
}

impl Task {
    fn spawn<F>(name: &'static str, work: impl FnOnce(CancellationToken) -> F) -> Task
    where
        F: Future<Output = Result<(), RoleError>> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let handle = tokio::spawn(work(stop.clone()));
        Task { name, stop, handle }
    }

    /// Asks the task to finish and waits up to `grace`.
    async fn finish(self, grace: Duration) -> Result<(), RoleError> {
        self.stop.cancel();
        match tokio::time::timeout(grace, self.handle).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => {
                tracing::error!(task = self.name, error = %e, "task panicked");
                Ok(())
            }
            Err(_) => {
                tracing::warn!(
                    task = self.name,
                    "did not finish within the shutdown grace period; the log keeps its input for the next start"
                );
                Ok(())
            }
        }
    }
}

/// Runs `roles` in this process until `shutdown` resolves.
///
/// `on_listening` is told what listens where once every listener accepts
/// connections (the CLI prints it; tests read it), as `(what, address)`:
/// `gateway`, `query API`, and `metrics` for `server.metrics_listen` (last)
/// or for a process with neither.
pub async fn run(
    cfg: Config,
    roles: &[Role],
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(&[(&'static str, SocketAddr)]),
) -> Result<(), RoleError> {
    let has = |r: Role| roles.contains(&r);
    if cfg.bus.kind == BusKind::Embedded && roles.len() < Role::ALL.len() {
        let role = if has(Role::Gateway) {
            "gateway"
        } else if has(Role::Accountant) {
            "accountant"
        } else if has(Role::Sink) {
            "sink"
        } else if has(Role::Notifier) {
            "notifier"
        } else {
            "api"
        };
        if role != "api" {
            return Err(RoleError::NeedsKafka { role });
        }
    }
    #[cfg(not(feature = "lake"))]
    if let Some(role) = [(Role::Sink, "sink"), (Role::Api, "query API")]
        .into_iter()
        .find_map(|(r, name)| has(r).then_some(name))
    {
        return Err(RoleError::NotInThisBuild { role });
    }
    if has(Role::Gateway) {
        cfg.check_gateway_credentials().map_err(RoleError::Config)?;
    }
    let started = std::time::Instant::now();
    let stopping = CancellationToken::new();
    {
        let stopping = stopping.clone();
        tokio::spawn(async move {
            shutdown.await;
            stopping.cancel();
        });
    }
    let grace = Duration::from_secs(cfg.server.shutdown_grace_secs);
    // The price tables compile (their model patterns are regexes) while
    // the bus opens and the broker answers: a scaling fleet waits on
    // start-up.
    let book_loading = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || load_price_book(&cfg, None))
    };
    // So does the gateway's upstream client, which reads and parses the
    // system's root certificates (5–10 ms, more than the broker's answer
    // leaves idle once the price tables are done).
    let providers_loading = has(Role::Gateway).then(|| {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            let providers = providers::from_config(&cfg);
            tracing::debug!(
                ms = started.elapsed().as_millis(),
                "start-up: upstream client built"
            );
            providers
        })
    });
    let needs_bus =
        has(Role::Gateway) || has(Role::Accountant) || has(Role::Sink) || has(Role::Notifier);
    let bus = if needs_bus {
        let bus = Bus::open(&cfg).await?;
        tracing::debug!(ms = started.elapsed().as_millis(), "start-up: bus open");
        Some(bus)
    } else {
        None
    };
    #[cfg(feature = "lake")]
    let layout = LakeLayout::from_config(&cfg)?;
    #[cfg(not(feature = "lake"))]
    let layout = ();

    // Consumers need their topics; wait for the broker (retrying, logged)
    // rather than fail, so roles can start in any order.
    // Gateways too: they read the control topic (their keys) before they
    // serve.
    if let Some(kafka) = bus.as_ref().and_then(|b| b.kafka.clone()) {
        let ready = wait_for_topics(&kafka, &stopping).await;
        if !ready {
            return Ok(());
        }
        tracing::debug!(ms = started.elapsed().as_millis(), "start-up: topics ready");
    }

    let book = match book_loading.await {
        Ok(book) => SharedBook::new(book?),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    tracing::debug!(
        ms = started.elapsed().as_millis(),
        "start-up: price tables loaded"
    );
    register_model_labels(&cfg, &book);
    let budgets =
        crate::budget::BudgetSpec::from_config(&cfg.budgets).map_err(RoleError::Config)?;
    let admission = Admission::new(
        budgets.clone(),
        book.clone(),
        cfg.admission.clone(),
        &cfg.rate_limits,
    );
    let guards = crate::budget::GuardSpec::from_config(&cfg.guards).map_err(RoleError::Config)?;
    admission.follow_guards(guards.iter().any(|g| g.block));
    let mut pipeline: Vec<Task> = Vec::new();
    let mut feeds: Vec<Task> = Vec::new();
    {
        let (book, cfg) = (book.clone(), cfg.clone());
        feeds.push(Task::spawn("price table reload", move |stop| {
            reload_on_hangup(book, cfg, stop)
        }));
    }
    // An API-only process on the embedded bus cannot open the log (the
    // serving process holds it), so it shows no live budget state.
    let state_log = match &bus {
        Some(b) => Some(b.log.clone()),
        None if cfg.bus.kind == BusKind::Kafka => {
            let api_bus = Bus::open(&cfg).await?;
            // The control topic must exist before it is read to its end.
            if let Some(kafka) = &api_bus.kafka
                && !wait_for_topics(kafka, &stopping).await
            {
                return Ok(());
            }
            Some(api_bus.log)
        }
        None => None,
    };
    let api_log = state_log.clone();
    // The control plane: read to its end (the file's changes applied)
    // before anything serves; followed from then on.
    let control = match &state_log {
        Some(log) => {
            tracing::debug!(
                ms = started.elapsed().as_millis(),
                "start-up: reading the control plane"
            );
            let control =
                Control::start(log.clone(), Some((&cfg, CONFIG_ACTOR)), &stopping).await?;
            tracing::debug!(
                ms = started.elapsed().as_millis(),
                "start-up: control plane read"
            );
            live::follow_admission(&control, admission.clone());
            let follower = control.clone();
            feeds.push(Task::spawn("control follower", move |stop| async move {
                follower.run(stop).await?;
                Ok(())
            }));
            Some(control)
        }
        None => None,
    };
    // With a control plane, budgets may appear at any time: follow state.
    let follow_state = admission.has_budgets() || control.is_some();
    if let Some(log) = state_log.filter(|_| follow_state && (has(Role::Gateway) || has(Role::Api)))
    {
        let admission = admission.clone();
        feeds.push(Task::spawn("budget state feed", move |stop| async move {
            feed_budget_state(log, admission, stop).await?;
            Ok(())
        }));
    }
    if let Some(embedded) = bus.as_ref().and_then(|b| b.embedded.clone()) {
        feeds.push(Task::spawn("log maintenance", move |stop| async move {
            maintain_periodically(embedded, stop).await;
            Ok(())
        }));
    }
    let mut gateway_state = None;
    if has(Role::Gateway) {
        let bus = bus.as_ref().expect("opened for the gateway");
        let (handoff, queue) = handoff::channel(cfg.bus.queue_capacity);
        match &bus.kafka {
            None => {
                let log = bus.log.clone();
                pipeline.push(Task::spawn("publisher", |stop| async move {
                    bus::publisher::run(queue, log, EVENTS_TOPIC, stop).await;
                    Ok(())
                }));
            }
            Some(kafka) => {
                let journal = LocalBus::open_journal_recovered(&cfg.data.journal_dir()).await?;
                tracing::debug!(
                    ms = started.elapsed().as_millis(),
                    "start-up: journal recovered"
                );
                let to_journal: Arc<dyn Log> = journal.clone();
                pipeline.push(Task::spawn("publisher", |stop| async move {
                    bus::publisher::run(queue, to_journal, EVENTS_TOPIC, stop).await;
                    Ok(())
                }));
                let kafka = kafka.clone();
                pipeline.push(Task::spawn("forwarder", move |stop| async move {
                    bus::forwarder::run(journal, kafka, stop, grace).await?;
                    Ok(())
                }));
            }
        }
        // The keys the control state holds decide, e.g., whether
        // passthrough fingerprints need the installation's secret.
        let mut gateway_cfg = cfg.clone();
        if let Some(control) = &control {
            let state = control.current();
            gateway_cfg.keys = state.keys.values().map(|k| k.to_config()).collect();
            gateway_cfg.routes = state.route_configs();
        }
        let providers = match providers_loading.expect("started for the gateway").await {
            Ok(providers) => providers?,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        let gw = Arc::new(Gateway::new(
            &gateway_cfg,
            providers,
            admission.clone(),
            handoff,
        )?);
        if let Some(control) = &control {
            live::follow_keys(control, gw.clone());
        }
        tracing::debug!(
            ms = started.elapsed().as_millis(),
            "start-up: gateway built"
        );
        gateway_state = Some(gw);
    }
    if has(Role::Accountant) {
        tracing::info!(version = book.current().version(), "price tables loaded");
        let log = bus.as_ref().expect("opened for the accountant").log.clone();
        let mut accountant = Accountant::new(book.clone(), budgets, log)
            .await?
            .with_guards(guards);
        if let Some(control) = &control {
            accountant = accountant.follow_specs(live::follow_accountant_specs(control));
        }
        pipeline.push(Task::spawn("accountant", |stop| async move {
            accountant.run(stop).await?;
            Ok(())
        }));
    }
    #[cfg(feature = "lake")]
    if has(Role::Sink) {
        let log = bus.as_ref().expect("opened for the sink").log.clone();
        let sink = Sink::new(
            log.subscribe_decoded(SINK_GROUP, COSTED_TOPIC).await?,
            layout.clone(),
            SinkOptions {
                flush_rows: cfg.sink.flush_rows,
                flush_interval: Duration::from_millis(cfg.sink.flush_interval_ms),
            },
        )
        .await?;
        let ownership = sink.ownership();
        pipeline.push(Task::spawn("sink", |stop| async move {
            sink.run(stop).await?;
            Ok(())
        }));
        let audit = crate::lake::audit::AuditWriter::new(
            log.as_ref(),
            layout.clone(),
            Duration::from_millis(cfg.sink.flush_interval_ms),
        )
        .await?;
        pipeline.push(Task::spawn("audit writer", |stop| async move {
            audit.run(stop).await?;
            Ok(())
        }));
        if cfg.sink.compact_interval_secs > 0 {
            let every = Duration::from_secs(cfg.sink.compact_interval_secs);
            let options = CompactOptions {
                min_files: cfg.sink.compact_min_files.max(2),
                ..CompactOptions::default()
            };
            let layout = layout.clone();
            // On Kafka, sinks on many machines share the lake: each
            // compacts only the partitions it is assigned. The embedded
            // bus has one sink, which owns every partition.
            let ownership = (cfg.bus.kind == BusKind::Kafka).then_some(ownership);
            let retention = crate::lake::retention::Retention::from_config(&cfg.lake);
            pipeline.push(Task::spawn("compactor", move |stop| {
                compact_periodically(layout, (options, retention), ownership, every, stop)
            }));
        }
    }

    if has(Role::Notifier) {
        let log = bus.as_ref().expect("opened for the notifier").log.clone();
        let control = control.as_ref().expect("a bus brings a control plane");
        let secrets = crate::control::secrets::Secrets::start(log.clone(), &stopping).await?;
        let (webhooks, follow) = live::follow_webhooks(control, &secrets, cfg.webhooks.clone());
        feeds.push(Task::spawn("webhook credentials", move |stop| async move {
            secrets.run(stop).await?;
            Ok(())
        }));
        feeds.push(Task::spawn("webhook set", move |stop| async move {
            live::until_stopped(follow, stop).await;
            Ok(())
        }));
        let notifier = crate::accounting::notify::Notifier::follow(
            log,
            webhooks,
            crate::accounting::notify::NotifierOptions::default(),
        )
        .await?;
        pipeline.push(Task::spawn("notifier", |stop| async move {
            notifier.run(stop).await?;
            Ok(())
        }));
    }

    // The admin API is served with the query API (none without the lake).
    #[cfg(feature = "lake")]
    let admin = api::admin::router(Arc::new(api::admin::AdminState::new(&cfg, control.clone())));
    #[cfg(not(feature = "lake"))]
    let admin = axum::Router::new();
    let listeners = listeners(
        &cfg,
        gateway_state,
        has(Role::Api).then(|| ApiParts {
            budgets: admission.clone(),
            admin,
            log: api_log,
        }),
        &layout,
    )
    .await?;
    let stop_http = CancellationToken::new();
    let limits = ConnectionLimits::from_config(&cfg.server);
    let mut announced = Vec::new();
    let mut servers = Vec::new();
    for (names, listener, app) in listeners {
        let addr = local_addr(&listener)?;
        announced.extend(names.iter().map(|n| (*n, addr)));
        servers.push(spawn_http(listener, app, limits, stop_http.clone()));
    }
    tracing::debug!(ms = started.elapsed().as_millis(), "start-up: listening");
    on_listening(&announced);

    stopping.cancelled().await;
    tracing::info!("shutting down: finishing in-flight requests");
    stop_http.cancel();
    for server in servers {
        match tokio::time::timeout(grace, server).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "HTTP server task panicked"),
            Err(_) => tracing::warn!(
                "requests still open after the shutdown grace period; their events are lost"
            ),
        }
    }
    // The gateway (and its queue's senders) went with the servers, so the
    // publisher now drains the queue and stops; then the rest, in order.
    for task in pipeline {
        task.finish(grace).await?;
    }
    for task in feeds {
        task.finish(Duration::from_secs(1)).await?;
    }
    if let Some(kafka) = bus.and_then(|b| b.kafka) {
        kafka.flush(Duration::from_secs(5));
    }
    Ok(())
}

/// Tells the metrics which model names may be label values: the
/// catalog's, the configuration's model maps, the price tables' examples,
/// and (a bounded number of) names the price tables price.
fn register_model_labels(cfg: &Config, book: &SharedBook) {
    let configured = cfg
        .providers
        .values()
        .flat_map(|p| p.model_map.iter())
        .flat_map(|(name, id)| [name.clone(), id.clone()]);
    metrics::allow_model_labels(
        providers::translate::catalog_model_names()
            .into_iter()
            .chain(configured)
            .chain(book.current().example_models().map(str::to_owned)),
    );
    let book = book.clone();
    metrics::allow_model_label_pattern(Box::new(move |m| book.current().knows_model(m)));
}

/// `tollgate replay`: every budget ledger rebuilt from the event log, for
/// the budgets of the control state (the file's when the state has none).
pub async fn replay(
    cfg: &Config,
) -> Result<Vec<crate::accounting::replay::LedgerSummary>, RoleError> {
    let bus = Bus::open(cfg).await?;
    let book = load_price_book(cfg, None)?;
    // The budgets the accountant folds: the control state's, which the
    // file (not yet applied, if it changed) bootstraps.
    let stop = CancellationToken::new();
    let control = Control::start(bus.log.clone(), None, &stop).await?;
    let mut budgets = control.current().budget_configs();
    if budgets.is_empty() {
        budgets = cfg.budgets.clone();
    }
    let specs = crate::budget::BudgetSpec::from_config(&budgets).map_err(RoleError::Config)?;
    Ok(crate::accounting::replay::replay(bus.log.as_ref(), &book, specs).await?)
}

/// `tollgate apply`: the events that make the control state match `cfg`
/// (written unless `dry_run`). On the embedded bus the serving process
/// holds the log, so apply runs while it is stopped (or at its next start,
/// which applies the file itself).
pub async fn apply(
    cfg: &Config,
    actor: &str,
    dry_run: bool,
) -> Result<Vec<crate::control::ControlEvent>, RoleError> {
    let bus = Bus::open(cfg).await?;
    Ok(crate::control::follow::apply_file(bus.log, cfg, actor, dry_run).await?)
}

/// Keeps admission's budget state current: reads the budgets topic from
/// its start (never committing: every process needs all of it), marks the
/// state known once it reached the record that was last at start-up, then
/// follows it.
async fn feed_budget_state(
    log: Arc<dyn Log>,
    admission: Arc<Admission>,
    stop: CancellationToken,
) -> Result<(), BusError> {
    let apply = |records: Vec<crate::bus::BusRecord>| {
        for r in records {
            match serde_json::from_slice::<BudgetRecord>(&r.payload) {
                Ok(record) => admission.apply(record),
                Err(e) => {
                    tracing::error!(offset = r.offset, error = %e, "budget record unreadable; skipped")
                }
            }
        }
    };
    // Until caught up, admission follows admission.on_unknown_state.
    let reader = TopicReader::open(log, BUDGETS_TOPIC, "tollgate-budget-view").await?;
    let caught_up = reader.catch_up(&stop, apply).await;
    if stop.is_cancelled() {
        return Ok(());
    }
    caught_up?;
    admission.caught_up();
    reader.follow(&stop, apply).await
}

/// Retries topic set-up until it works (true) or shutdown starts (false).
async fn wait_for_topics(kafka: &KafkaBus, stopping: &CancellationToken) -> bool {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match kafka.ensure_topics().await {
            Ok(()) => return true,
            Err(e) => {
                tracing::error!(error = %e, retry_in_ms = backoff.peek().as_millis() as u64, "waiting for Kafka")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_wait()) => {}
            _ = stopping.cancelled() => return false,
        }
    }
}

/// One HTTP listener: the names it is announced by, the socket, the app.
type Listener = (Vec<&'static str>, TcpListener, axum::Router);

/// What the query API is served from: the admission state it shows
/// budgets from, the admin API's routes, and the log session resumes are
/// written to (none on an API-only process of the embedded bus).
// Read only where the query API is built (the `lake` feature).
#[cfg_attr(not(feature = "lake"), allow(dead_code))]
struct ApiParts {
    budgets: Arc<Admission>,
    admin: axum::Router,
    log: Option<Arc<dyn Log>>,
}

/// What the query API reads: the lake (nothing in a build without it).
#[cfg(feature = "lake")]
type ApiSource = LakeLayout;
/// What the query API reads: the lake (nothing in a build without it).
#[cfg(not(feature = "lake"))]
type ApiSource = ();

/// The HTTP listeners of the process, each with what it serves: the
/// gateway on `server.listen`; the query API beside it, or on
/// `server.api_listen`; a process with neither serves only metrics there.
/// `/metrics` goes on every one of them, or only on its own listener when
/// `server.metrics_listen` is set (announced last, as `metrics`).
async fn listeners(
    cfg: &Config,
    gateway: Option<Arc<Gateway>>,
    api: Option<ApiParts>,
    layout: &ApiSource,
) -> Result<Vec<Listener>, RoleError> {
    let mut out = app_listeners(cfg, gateway, api, layout).await?;
    match cfg.server.metrics_listen {
        Some(addr) => {
            for (_, _, app) in &mut out {
                *app = std::mem::take(app).merge(metrics::health_router());
            }
            out.push((vec!["metrics"], bind(addr).await?, metrics::router()));
        }
        None => {
            for (_, _, app) in &mut out {
                *app = std::mem::take(app).merge(metrics::router());
            }
        }
    }
    Ok(out)
}

/// The gateway and query API listeners (or, for a process with neither and
/// no `metrics_listen`, an empty one on `server.listen` for metrics).
async fn app_listeners(
    cfg: &Config,
    gateway: Option<Arc<Gateway>>,
    api: Option<ApiParts>,
    layout: &ApiSource,
) -> Result<Vec<Listener>, RoleError> {
    #[cfg(not(feature = "lake"))]
    let api: Option<axum::Router> = {
        // No query API without the lake: `run` refuses the api role.
        let _ = (layout, api);
        None
    };
    #[cfg(feature = "lake")]
    let api = match api {
        Some(ApiParts {
            budgets,
            admin,
            log,
        }) => {
            if cfg.admin_tokens().next().is_none() && cfg.api.team_tokens.is_empty() {
                tracing::warn!(
                    "no API token configured: the query API will refuse every request (set TOLLGATE_ADMIN_TOKEN)"
                );
            }
            Some(
                api::router(Arc::new(
                    ApiState::new(
                        Lake::open_with_memory(
                            layout,
                            crate::lake::query::MemoryLimits {
                                query_bytes: cfg.api.query_memory_mb.max(64) * 1024 * 1024,
                                metadata_cache_bytes: cfg.api.metadata_cache_mb * 1024 * 1024,
                                object_cache_bytes: cfg.api.object_cache_mb * 1024 * 1024,
                            },
                        )
                        .await?,
                        &cfg.api,
                        budgets,
                    )
                    .with_log(log),
                ))
                .merge(admin),
            )
        }
        None => None,
    };
    let mut out = Vec::new();
    match (gateway, api, cfg.server.api_listen) {
        (Some(g), Some(a), None) => {
            out.push((
                vec!["gateway", "query API"],
                bind(cfg.server.listen).await?,
                gateway::router(g).merge(a),
            ));
        }
        (g, a, api_listen) => {
            if let Some(g) = g {
                out.push((
                    vec!["gateway"],
                    bind(cfg.server.listen).await?,
                    gateway::router(g),
                ));
            }
            if let Some(a) = a {
                let addr = api_listen.unwrap_or(cfg.server.listen);
                out.push((vec!["query API"], bind(addr).await?, a));
            }
        }
    }
    if out.is_empty() && cfg.server.metrics_listen.is_none() {
        out.push((
            vec!["metrics"],
            bind(cfg.server.listen).await?,
            axum::Router::new(),
        ));
    }
    Ok(out)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, RoleError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RoleError::Listen { addr, source })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, RoleError> {
    listener.local_addr().map_err(RoleError::Serve)
}

/// Merges small lake files every `every` until stopped (with `ownership`,
/// only of the partitions the sink holds), then deletes what the lake's
/// retention no longer keeps (likewise). A failed run is logged and tried
/// again next time: the lake stays correct either way.
#[cfg(feature = "lake")]
async fn compact_periodically(
    layout: LakeLayout,
    (options, retention): (CompactOptions, crate::lake::retention::Retention),
    ownership: Option<crate::lake::sink::Ownership>,
    every: Duration,
    stop: CancellationToken,
) -> Result<(), RoleError> {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let (layout, options, ownership) = (layout.clone(), options.clone(), ownership.clone());
        let owned = move |p: u32| ownership.as_ref().is_none_or(|o| o.owns(p));
        let upkeep = move || {
            let report = compact_owned(&layout, &options, &owned)?;
            let today = chrono::Utc::now().date_naive();
            crate::lake::retention::apply(&layout, &retention, today, &owned)?;
            Ok::<_, LakeError>(report)
        };
        match tokio::task::spawn_blocking(upkeep).await {
            Ok(Ok(report)) if report.files_merged > 0 || report.leftovers_deleted > 0 => {
                tracing::info!(?report, "lake compacted");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "lake compaction or retention failed; retrying next interval")
            }
            Err(e) => tracing::error!(error = %e, "lake compaction panicked"),
        }
    }
}

/// Serves `app` until `stop` is cancelled, then waits for open requests.
fn spawn_http(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(crate::http_server::serve(listener, app, limits, stop))
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

/// The price tables the config names (or `dir` instead, or the built-in
/// ones), with its `[pricing] unknown_model_rates`.
pub fn load_price_book(
    cfg: &Config,
    dir: Option<&std::path::Path>,
) -> Result<PriceBook, crate::pricing::PricingError> {
    let book = match dir.or(cfg.pricing.dir.as_deref()) {
        Some(dir) => PriceBook::load_dir(dir)?,
        None => PriceBook::embedded(),
    };
    Ok(book.with_unknown_model_rates(cfg.pricing.unknown_model_rates.clone()))
}

/// Reloads the price tables on SIGHUP: the new book prices everything
/// from then on (its version is on each event); tables that do not load
/// are logged and the old ones kept.
async fn reload_on_hangup(
    book: SharedBook,
    cfg: Config,
    stop: CancellationToken,
) -> Result<(), RoleError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP: price tables reload only on restart");
                return Ok(());
            }
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = hangups.recv() => {}
            }
            let cfg = cfg.clone();
            // Reading the tables is file I/O: off the runtime threads.
            match tokio::task::spawn_blocking(move || load_price_book(&cfg, None)).await {
                Ok(Ok(new)) => {
                    let (old, version) = (
                        book.current().version().to_owned(),
                        new.version().to_owned(),
                    );
                    book.replace(new);
                    tracing::info!(old = %old, version = %version, "price tables reloaded");
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "price tables not reloaded; the old ones stay in use")
                }
                Err(e) => tracing::error!(error = %e, "price table reload failed"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        stop.cancelled().await;
        Ok(())
    }
}
