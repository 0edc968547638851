//! The HTTP surface Claude Code talks to.
//!
//! A request goes: authenticate → read tags and body → admit → forward to
//! the key's provider → stream the answer back through the tee → hand one
//! `LlmEvent` to the bus queue. The gateway knows nothing of the bus beyond
//! that queue.

pub mod admission;
mod attempts;
pub mod auth;
pub mod cache;
pub mod discovery;
pub mod error;
pub mod headers;
pub mod inbound;
pub mod observed;
pub mod passthrough;
mod plan;
mod proxy;
pub mod recording;
pub mod request_head;
mod request_metrics;
pub mod route;
pub mod tee;
pub mod tokens;
pub mod usage_limits;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use http::StatusCode;

use crate::config::Config;
use crate::handoff::EventHandoff;
use crate::providers::Provider;

/// Everything a request handler needs, built once at start-up.
pub struct Gateway {
    /// Swapped whole when the control plane changes a key; a request
    /// authenticates against the ring current when it arrives.
    keys: arc_swap::ArcSwap<auth::KeyRing>,
    providers: HashMap<String, Arc<dyn Provider>>,
    handoff: EventHandoff,
    max_body_bytes: usize,
    admission: Arc<admission::Admission>,
    /// Swapped whole when the control plane changes a route; a request
    /// routes by the table current when it arrived, to its end.
    routes: arc_swap::ArcSwap<route::Routes>,
    /// The one-target route of each provider, for keys without a route
    /// (built once here, not per request).
    single_routes: HashMap<String, route::RouteConfig>,
    /// Bounds every route is held to.
    routing: route::RoutingConfig,
    cache: Arc<cache::ResponseCache>,
    /// Fingerprints the client credentials of passthrough requests.
    fingerprints: passthrough::Fingerprinter,
    /// A `repeat` guard is configured: session requests carry a digest of
    /// their body on the event.
    digest_bodies: bool,
}

impl Gateway {
    /// Builds the gateway from config, providers, admission control and
    /// the event queue; fails if the credential fingerprint secret cannot
    /// be read or made.
    pub fn new(
        cfg: &Config,
        providers: HashMap<String, Arc<dyn Provider>>,
        admission: Arc<admission::Admission>,
        handoff: EventHandoff,
    ) -> Result<Gateway, passthrough::PassthroughError> {
        announce_series();
        let single_routes = providers
            .keys()
            .map(|p| (p.clone(), route::RouteConfig::single(p)))
            .collect();
        Ok(Gateway {
            keys: arc_swap::ArcSwap::from_pointee(auth::KeyRing::new(&cfg.keys, &cfg.routes)),
            providers,
            handoff,
            max_body_bytes: cfg.server.max_body_bytes,
            admission,
            routes: arc_swap::ArcSwap::from_pointee(cfg.routes.clone()),
            single_routes,
            routing: cfg.routing.clone(),
            cache: Arc::new(cache::ResponseCache::default()),
            fingerprints: passthrough::Fingerprinter::from_config(cfg)?,
            digest_bodies: cfg
                .guards
                .iter()
                .any(|g| g.kind == crate::budget::GuardKind::Repeat),
        })
    }
}

/// Gives the gateway's fixed label sets their series at 0 (every reason
/// tollgate refuses a request for, both cache outcomes), so dashboards show
/// zeros rather than "No data" before the first of each.
fn announce_series() {
    use crate::metrics::METRICS;
    for reason in error::REFUSAL_REASONS {
        METRICS.client_errors.with_label_values(&[reason]);
    }
    for result in ["hit", "miss"] {
        METRICS.cache_lookups.with_label_values(&[result]);
    }
}

impl Gateway {
    /// Puts `ring` in use for every request from now on (requests in
    /// flight keep the identity they were admitted with).
    pub fn set_keys(&self, ring: auth::KeyRing) {
        self.keys.store(Arc::new(ring));
    }

    /// The routes keys may name now (for building a key ring).
    pub fn routes(&self) -> Arc<route::Routes> {
        self.routes.load_full()
    }

    /// Puts `routes` in use for every request from now on (requests in
    /// flight keep the route they started with).
    pub fn set_routes(&self, routes: route::Routes) {
        self.routes.store(Arc::new(routes));
    }
}

/// The gateway's routes: the Anthropic API surface plus health checks.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/messages", post(proxy::messages))
        .route("/v1/messages/count_tokens", post(proxy::count_tokens))
        .route("/v1/models", get(discovery::models))
        .route("/api/oauth/usage", get(discovery::usage))
        .route("/", get(health).head(health))
        .route("/model/{id}/{action}", post(inbound::bedrock))
        .route("/inference-profiles", get(inbound::inference_profiles))
        .route(
            "/projects/{project}/locations/{location}/publishers/anthropic/models/{model_action}",
            post(inbound::vertex),
        )
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            usage_limits::add_usage_headers,
        ))
        .with_state(gateway)
}

/// Claude Code warms up with `HEAD /` and no auth; it just says the
/// process serves (`/health` comes with every role's metrics routes).
async fn health() -> StatusCode {
    StatusCode::OK
}
