//! The route of one request made concrete: which targets it tries, in
//! order, each with the exact body it would be sent (overrides applied).
//!
//! Built before admission, so a budget reserves what the request will
//! really ask for: an override that swaps in a dearer model or a larger
//! `max_tokens` is priced, not the body the client sent.

use bytes::Bytes;

use super::request_head::RequestHead;
use super::route::{self, RouteConfig};
use crate::event::Usage;

/// One target of the plan and the request it gets.
pub struct PlannedTarget {
    /// The `[providers.NAME]` to send to.
    pub provider: String,
    /// The request after this target's `override_params`.
    pub ask: WorstCase,
}

/// A request as one target gets it, with what admission prices it by:
/// the model and output bound, the billing choices, and the body (whose
/// size bounds the input, and which is what goes upstream).
#[derive(Debug, Clone)]
pub struct WorstCase {
    pub model: Option<String>,
    pub max_tokens: u64,
    pub body: Bytes,
    /// The billing choices the body makes (`speed`, `inference_geo`):
    /// fast mode and US-only inference cost more, so they are reserved.
    pub billing: Usage,
}

impl WorstCase {
    /// The request `body`, whose `head` is already parsed.
    pub fn of(body: Bytes, head: &RequestHead<'_>) -> WorstCase {
        let owned = |v: &Option<std::borrow::Cow<'_, str>>| v.as_deref().map(str::to_owned);
        WorstCase {
            model: owned(&head.model),
            max_tokens: head.max_tokens.unwrap_or(0),
            body,
            billing: Usage {
                speed: owned(&head.speed),
                inference_geo: owned(&head.inference_geo),
                ..Usage::default()
            },
        }
    }

    /// A body an override rewrote, its head read anew.
    fn rewritten(body: Bytes) -> WorstCase {
        let head = RequestHead::parse(&body).unwrap_or_default();
        WorstCase::of(body.clone(), &head)
    }
}

/// The targets a request tries, in order.
pub struct Plan {
    pub targets: Vec<PlannedTarget>,
}

impl Plan {
    /// Picks the targets (`facts` decide conditional and load-balanced
    /// routes) and applies each one's overrides to the `original` request;
    /// only a body an override rewrote is read again. A passthrough body
    /// goes byte for byte: its routes have no overrides, and this holds
    /// even if one did.
    pub fn new(
        route: &RouteConfig,
        facts: &route::Facts<'_>,
        original: &WorstCase,
        passthrough: bool,
    ) -> Plan {
        let targets = route
            .plan(facts)
            .into_iter()
            .map(|t| PlannedTarget {
                provider: t.provider.clone(),
                ask: if passthrough || t.override_params.is_empty() {
                    original.clone()
                } else {
                    WorstCase::rewritten(route::apply_overrides(&original.body, &t.override_params))
                },
            })
            .collect();
        Plan { targets }
    }

    /// Each target's request as it would be sent; the caller prices them
    /// and reserves for the dearest.
    pub fn candidates(&self) -> impl Iterator<Item = &WorstCase> + '_ {
        self.targets.iter().map(|t| &t.ask)
    }

    /// Each target with the body it gets, in order: the cache key.
    pub fn parts(&self) -> Vec<(&str, &[u8])> {
        self.targets
            .iter()
            .map(|t| (t.provider.as_str(), t.ask.body.as_ref()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn candidates_see_the_overridden_model_and_max_tokens() {
        let route = RouteConfig::from_portkey_json(
            r#"{"strategy":{"mode":"fallback"},"targets":[{"provider":"a"},{"provider":"b","override_params":{"model":"claude-opus-4-8","max_tokens":64000}}]}"#,
        )
        .unwrap();
        let body =
            Bytes::from_static(br#"{"model":"claude-haiku-4-5","max_tokens":10,"messages":[]}"#);
        let metadata = BTreeMap::new();
        let facts = route::Facts {
            model: Some("claude-haiku-4-5"),
            metadata: &metadata,
        };
        let original = WorstCase::of(body.clone(), &RequestHead::parse(&body).unwrap());
        let plan = Plan::new(&route, &facts, &original, false);
        let seen: Vec<(Option<String>, u64)> = plan
            .candidates()
            .map(|c| (c.model.clone(), c.max_tokens))
            .collect();
        assert_eq!(
            seen,
            [
                (Some("claude-haiku-4-5".to_owned()), 10),
                (Some("claude-opus-4-8".to_owned()), 64000)
            ]
        );
        // Passthrough bodies are never rewritten.
        let plan = Plan::new(&route, &facts, &original, true);
        assert!(plan.targets.iter().all(|t| t.ask.body == body));
    }
}
