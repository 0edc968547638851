//! The control state: the fold of every control event.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use super::event::{
    BudgetEntry, ControlEvent, KeyEntry, Kind, RateLimitEntry, RouteEntry, TeamEntry, WebhookEntry,
    WorkspaceEntry,
};
use crate::config::{BudgetConfig, RateLimitConfig};

/// Everything the control plane decides, by entity id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControlState {
    pub keys: BTreeMap<String, KeyEntry>,
    pub budgets: BTreeMap<String, BudgetEntry>,
    pub rate_limits: BTreeMap<String, RateLimitEntry>,
    pub webhooks: BTreeMap<String, WebhookEntry>,
    pub routes: BTreeMap<String, RouteEntry>,
    /// By `workspace/name`.
    pub teams: BTreeMap<String, TeamEntry>,
    pub workspaces: BTreeMap<String, WorkspaceEntry>,
    /// The last event folded per `family/id`: a writer waits until its
    /// event shows here (read-your-writes).
    versions: BTreeMap<String, uuid::Uuid>,
    /// Events folded so far (also the unreadable ones).
    pub folded: u64,
}

/// Why one event could not be folded (it is skipped, and logged).
#[derive(Debug, thiserror::Error)]
#[error("control event {event_id} ({kind}, {id}): `after` does not hold a valid entry: {source}")]
pub struct FoldError {
    event_id: uuid::Uuid,
    kind: &'static str,
    id: String,
    source: serde_json::Error,
}

impl ControlState {
    /// Applies one event: a set/created/rotated event replaces the entity
    /// with `after`, a removing one drops it. Later events win.
    pub fn fold(&mut self, e: &ControlEvent) -> Result<(), FoldError> {
        self.folded += 1;
        let result = match e.kind {
            Kind::KeyCreated | Kind::KeyUpdated | Kind::KeyRotated => put(&mut self.keys, e),
            Kind::BudgetSet => put(&mut self.budgets, e),
            Kind::RateLimitSet => put(&mut self.rate_limits, e),
            Kind::WebhookSet => put(&mut self.webhooks, e),
            Kind::RouteSet => put(&mut self.routes, e),
            Kind::TeamSet => put(&mut self.teams, e),
            Kind::WorkspaceSet => put(&mut self.workspaces, e),
            Kind::KeyRevoked => remove(&mut self.keys, e),
            Kind::BudgetRemoved => remove(&mut self.budgets, e),
            Kind::RateLimitRemoved => remove(&mut self.rate_limits, e),
            Kind::WebhookRemoved => remove(&mut self.webhooks, e),
            Kind::RouteRemoved => remove(&mut self.routes, e),
            Kind::TeamRemoved => remove(&mut self.teams, e),
            Kind::WorkspaceRemoved => remove(&mut self.workspaces, e),
        };
        self.versions.insert(e.bus_key(), e.event_id);
        result
    }

    /// Whether `event` has been folded (it is the entity's latest).
    pub fn has_folded(&self, event: &ControlEvent) -> bool {
        self.versions.get(&event.bus_key()) == Some(&event.event_id)
    }

    /// The budgets, by name.
    pub fn budget_configs(&self) -> Vec<BudgetConfig> {
        self.budgets.values().map(|b| b.budget.clone()).collect()
    }

    /// The routes, by name (what gateways route by).
    pub fn route_configs(&self) -> BTreeMap<String, crate::gateway::route::RouteConfig> {
        self.routes
            .iter()
            .map(|(name, r)| (name.clone(), r.route.clone()))
            .collect()
    }

    /// The rate limits, by id.
    pub fn rate_limit_configs(&self) -> Vec<RateLimitConfig> {
        self.rate_limits.values().map(|r| r.limit.clone()).collect()
    }
}

/// Drops `e.id` from `map` (a removal of what is not there is a no-op:
/// later events win, and the entity may never have been seen).
fn remove<T>(map: &mut BTreeMap<String, T>, e: &ControlEvent) -> Result<(), FoldError> {
    map.remove(&e.id);
    Ok(())
}

/// Replaces `e.id` in `map` with the event's `after`.
fn put<T: DeserializeOwned>(
    map: &mut BTreeMap<String, T>,
    e: &ControlEvent,
) -> Result<(), FoldError> {
    let after = e.after.clone().unwrap_or(serde_json::Value::Null);
    let entry = serde_json::from_value(after).map_err(|source| FoldError {
        event_id: e.event_id,
        kind: e.kind.as_str(),
        id: e.id.clone(),
        source,
    })?;
    map.insert(e.id.clone(), entry);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::event::Origin;

    fn budget(name: &str, usd: i64) -> serde_json::Value {
        serde_json::json!({"budget": {"name": name, "scope": "team", "period": "daily",
            "limit_usd": usd.to_string()}, "origin": "api"})
    }

    #[test]
    fn set_then_remove_folds_to_nothing_and_later_sets_win() {
        let mut s = ControlState::default();
        let first = ControlEvent::new(Kind::BudgetSet, "b", "alice", None, Some(budget("b", 5)));
        let second = ControlEvent::new(Kind::BudgetSet, "b", "bob", None, Some(budget("b", 9)));
        s.fold(&first).unwrap();
        s.fold(&second).unwrap();
        let b = &s.budgets["b"];
        assert_eq!(b.budget.limit_usd, Some(rust_decimal::Decimal::from(9)));
        assert_eq!(b.origin, Origin::Api);
        assert!(s.has_folded(&second) && !s.has_folded(&first));
        s.fold(&ControlEvent::new(
            Kind::BudgetRemoved,
            "b",
            "bob",
            None,
            None,
        ))
        .unwrap();
        assert!(s.budgets.is_empty());
        assert_eq!(s.folded, 3);
    }

    #[test]
    fn an_unreadable_entry_is_refused_and_leaves_the_state_alone() {
        let mut s = ControlState::default();
        let bad = ControlEvent::new(
            Kind::KeyCreated,
            "k",
            "x",
            None,
            Some(serde_json::json!({"id": "k", "secret": "oops"})),
        );
        let err = s.fold(&bad).unwrap_err();
        assert!(err.to_string().contains("key.created"), "{err}");
        assert!(s.keys.is_empty());
    }
}
