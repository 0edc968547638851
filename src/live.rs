//! Live application of the control plane: what each role swaps when the
//! control state changes. Only `roles` uses it; it may import everything.

use std::sync::Arc;

use arc_swap::ArcSwap;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::accounting::notify::WebhookSet;
use crate::budget::BudgetSpec;
use crate::config::WebhookConfig;
use crate::control::ControlState;
use crate::control::follow::Control;
use crate::control::secrets::{Credentials, Secrets, live_webhooks};
use crate::gateway::Gateway;
use crate::gateway::admission::Admission;
use crate::gateway::auth::{KeyRing, RingKey};

/// The gateway's key ring as the state says.
pub fn key_ring(
    state: &ControlState,
    routes: &std::collections::BTreeMap<String, crate::gateway::route::RouteConfig>,
) -> KeyRing {
    let configs: Vec<_> = state.keys.values().map(|e| (e.to_config(), e)).collect();
    KeyRing::with_validity(
        configs.iter().map(|(config, e)| RingKey {
            config,
            expires_at: e.expires_at,
            previous: e
                .previous
                .as_ref()
                .map(|p| (p.hash.as_str(), p.valid_until)),
        }),
        routes,
    )
}

/// The budget specs the state declares; `None` (logged) if they do not
/// validate, so the ones in use stay.
fn budget_specs(state: &ControlState) -> Option<Vec<BudgetSpec>> {
    match BudgetSpec::from_config(&state.budget_configs()) {
        Ok(specs) => Some(specs),
        Err(e) => {
            tracing::error!(error = %e, "control state's budgets do not validate; the previous ones stay in use");
            None
        }
    }
}

/// Keeps the gateway's routes and keys current: the routes first, so a
/// key pointed at a new route finds it.
pub fn follow_keys(control: &Control, gateway: Arc<Gateway>) {
    control.listen(Box::new(move |state| {
        let routes = state.route_configs();
        if *gateway.routes() != routes {
            tracing::debug!(routes = routes.len(), "control: route table swapped");
            gateway.set_routes(routes);
        }
        let ring = key_ring(state, &gateway.routes());
        tracing::debug!(hashes = ring.len(), "control: key ring swapped");
        gateway.set_keys(ring);
    }));
}

/// Keeps admission's budgets and rate limits current.
pub fn follow_admission(control: &Control, admission: Arc<Admission>) {
    control.listen(Box::new(move |state| {
        if let Some(specs) = budget_specs(state) {
            admission.set_budgets(specs);
        }
        admission.set_rate_limits(&state.rate_limit_configs());
    }));
}

/// Budget specs for the accountant, kept current.
pub fn follow_accountant_specs(control: &Control) -> Arc<ArcSwap<Vec<BudgetSpec>>> {
    let live = Arc::new(ArcSwap::from_pointee(Vec::new()));
    let out = live.clone();
    control.listen(Box::new(move |state| {
        if let Some(specs) = budget_specs(state) {
            live.store(Arc::new(specs));
        }
    }));
    out
}

/// The webhooks the notifier delivers to, kept current from the control
/// state, the API's credentials and the file's webhooks: the set now, and
/// the work (run it until `stop`) that recomputes it on every change.
pub fn follow_webhooks(
    control: &Control,
    secrets: &Secrets,
    file: Vec<WebhookConfig>,
) -> (
    watch::Receiver<WebhookSet>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (states_tx, mut states) = watch::channel(control.current());
    control.listen(Box::new(move |state| {
        states_tx.send_replace(Arc::new(state.clone()));
    }));
    let mut credentials = secrets.watch();
    let compute = move |states: &mut watch::Receiver<Arc<ControlState>>,
                        credentials: &mut watch::Receiver<Credentials>| {
        let state = states.borrow_and_update().clone();
        let creds = credentials.borrow_and_update().clone();
        live_webhooks(&state, &creds, &file)
    };
    let first = compute(&mut states, &mut credentials);
    let (tx, rx) = watch::channel(Arc::new(first));
    let work = async move {
        loop {
            tokio::select! {
                r = states.changed() => if r.is_err() { return },
                r = credentials.changed() => if r.is_err() { return },
            }
            let set = compute(&mut states, &mut credentials);
            tx.send_if_modified(|now| {
                let changed = **now != set;
                if changed {
                    *now = Arc::new(set);
                }
                changed
            });
        }
    };
    (rx, work)
}

/// Runs `work` until `stop`.
pub async fn until_stopped(work: impl Future<Output = ()>, stop: CancellationToken) {
    tokio::select! {
        _ = work => {}
        _ = stop.cancelled() => {}
    }
}
