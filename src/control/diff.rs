//! GitOps: the events that make the control state match a config file.
//!
//! The file owns what it declares. Each `[routes.NAME]`, `[[keys]]`,
//! `[[budgets]]`, `[[rate_limits]]` and `[[webhooks]]` entry is set to the file's value
//! (origin `file`) when the state differs, even if the admin API changed it
//! since; an entry of origin `file` the file no longer declares is removed.
//! Entries created through the API (origin `api`) and not named in the file
//! are never touched, so they survive restarts and applies.

use std::collections::BTreeMap;

use serde::Serialize;

use super::event::{
    BudgetEntry, ControlEvent, KeyEntry, Kind, Origin, RateLimitEntry, RouteEntry, WebhookEntry,
    rate_limit_ids, webhook_id,
};
use super::state::ControlState;
use crate::config::Config;

/// The kinds that set, create and remove one family of entries.
struct Kinds {
    create: Kind,
    update: Kind,
    remove: Kind,
}

/// Every event needed for `state` to hold what `cfg` declares, in a stable
/// order (routes, keys, budgets, rate limits, webhooks; by id: a key's
/// route is set before the key). Empty when they agree.
pub fn plan(cfg: &Config, state: &ControlState, actor: &str) -> Vec<ControlEvent> {
    let routes: BTreeMap<String, RouteEntry> = cfg
        .routes
        .iter()
        .map(|(name, r)| {
            let entry = RouteEntry {
                route: r.clone(),
                origin: Origin::File,
            };
            (name.clone(), entry)
        })
        .collect();
    let keys: BTreeMap<String, KeyEntry> = cfg
        .keys
        .iter()
        .map(|k| (k.id.clone(), KeyEntry::from_config(k)))
        .collect();
    let budgets: BTreeMap<String, BudgetEntry> = cfg
        .budgets
        .iter()
        .map(|b| {
            let entry = BudgetEntry {
                budget: b.clone(),
                origin: Origin::File,
            };
            (b.name.clone(), entry)
        })
        .collect();
    let limits: BTreeMap<String, RateLimitEntry> = rate_limit_ids(&cfg.rate_limits)
        .into_iter()
        .zip(&cfg.rate_limits)
        .map(|(id, l)| {
            let entry = RateLimitEntry {
                limit: l.clone(),
                origin: Origin::File,
            };
            (id, entry)
        })
        .collect();
    let hooks: BTreeMap<String, WebhookEntry> = cfg
        .webhooks
        .iter()
        .map(|w| (webhook_id(w), WebhookEntry::from_config(w)))
        .collect();
    let mut out = Vec::new();
    let route_kinds = Kinds {
        create: Kind::RouteSet,
        update: Kind::RouteSet,
        remove: Kind::RouteRemoved,
    };
    family(
        &routes,
        &state.routes,
        |e| e.origin,
        &route_kinds,
        actor,
        &mut out,
    );
    let key_kinds = Kinds {
        create: Kind::KeyCreated,
        update: Kind::KeyUpdated,
        remove: Kind::KeyRevoked,
    };
    family(
        &keys,
        &state.keys,
        |k| k.origin,
        &key_kinds,
        actor,
        &mut out,
    );
    let set = |k| Kinds {
        create: k,
        update: k,
        remove: match k {
            Kind::BudgetSet => Kind::BudgetRemoved,
            Kind::RateLimitSet => Kind::RateLimitRemoved,
            _ => Kind::WebhookRemoved,
        },
    };
    let b = set(Kind::BudgetSet);
    family(&budgets, &state.budgets, |e| e.origin, &b, actor, &mut out);
    let r = set(Kind::RateLimitSet);
    family(
        &limits,
        &state.rate_limits,
        |e| e.origin,
        &r,
        actor,
        &mut out,
    );
    let w = set(Kind::WebhookSet);
    family(&hooks, &state.webhooks, |e| e.origin, &w, actor, &mut out);
    out
}

/// The events of one family: declared entries that differ or are new,
/// then file-owned entries no longer declared.
fn family<T: Serialize + PartialEq>(
    declared: &BTreeMap<String, T>,
    current: &BTreeMap<String, T>,
    origin: impl Fn(&T) -> Origin,
    kinds: &Kinds,
    actor: &str,
    out: &mut Vec<ControlEvent>,
) {
    let json = |v: &T| serde_json::to_value(v).ok();
    for (id, want) in declared {
        match current.get(id) {
            Some(have) if have == want => {}
            Some(have) => out.push(ControlEvent::new(
                kinds.update,
                id,
                actor,
                json(have),
                json(want),
            )),
            None => out.push(ControlEvent::new(kinds.create, id, actor, None, json(want))),
        }
    }
    for (id, have) in current {
        if origin(have) == Origin::File && !declared.contains_key(id) {
            out.push(ControlEvent::new(kinds.remove, id, actor, json(have), None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"
[providers.anthropic]
kind = "anthropic"
base_url = "http://127.0.0.1:1"
api_key = "x"

[routes.main]
targets = [{ provider = "anthropic" }]

[[keys]]
id = "k1"
hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
team = "t"
user = "u"
provider = "anthropic"

[[budgets]]
name = "daily"
scope = "team"
period = "daily"
limit_usd = "10"

[[rate_limits]]
scope = "team"
requests_per_minute = 60
"#;

    fn cfg(text: &str) -> Config {
        Config::parse(text, Path::new("t.toml")).unwrap()
    }

    fn folded(events: &[ControlEvent]) -> ControlState {
        let mut s = ControlState::default();
        for e in events {
            s.fold(e).unwrap();
        }
        s
    }

    fn kinds(events: &[ControlEvent]) -> Vec<(&'static str, &str)> {
        events
            .iter()
            .map(|e| (e.kind.as_str(), e.id.as_str()))
            .collect()
    }

    #[test]
    fn a_file_equal_to_the_state_plans_nothing() {
        let c = cfg(BASE);
        let first = plan(&c, &ControlState::default(), "file");
        assert_eq!(
            kinds(&first),
            [
                ("route.set", "main"),
                ("key.created", "k1"),
                ("budget.set", "daily"),
                ("rate_limit.set", "team:*")
            ]
        );
        assert!(plan(&c, &folded(&first), "file").is_empty());
    }

    #[test]
    fn a_changed_file_plans_exactly_the_difference() {
        let state = folded(&plan(&cfg(BASE), &ControlState::default(), "file"));
        let changed = BASE
            .replace("limit_usd = \"10\"", "limit_usd = \"25\"")
            .replace(
                "[[rate_limits]]\nscope = \"team\"\nrequests_per_minute = 60\n",
                "",
            )
            .replace(
                "provider = \"anthropic\" }]",
                "provider = \"anthropic\", weight = 2.0 }]",
            );
        let events = plan(&cfg(&changed), &state, "file:t.toml");
        assert_eq!(
            kinds(&events),
            [
                ("route.set", "main"),
                ("budget.set", "daily"),
                ("rate_limit.removed", "team:*")
            ]
        );
        assert_eq!(
            events[0].after.as_ref().unwrap()["route"]["targets"][0]["weight"],
            2.0
        );
        let events = &events[1..];
        assert_eq!(
            events[0].before.as_ref().unwrap()["budget"]["limit_usd"],
            "10"
        );
        assert_eq!(
            events[0].after.as_ref().unwrap()["budget"]["limit_usd"],
            "25"
        );
        assert_eq!(events[0].actor, "file:t.toml");
    }

    #[test]
    fn api_entries_survive_and_file_entries_are_overwritten() {
        let mut state = folded(&plan(&cfg(BASE), &ControlState::default(), "file"));
        let mut api_budget = state.budgets["daily"].clone();
        api_budget.budget.name = "extra".into();
        api_budget.origin = Origin::Api;
        state.budgets.insert("extra".into(), api_budget);
        // The API raised the file's budget: the file wins it back.
        let daily = state.budgets.get_mut("daily").unwrap();
        daily.budget.limit_usd = Some(99.into());
        daily.origin = Origin::Api;
        let events = plan(&cfg(BASE), &state, "file");
        assert_eq!(kinds(&events), [("budget.set", "daily")]);
    }
}
