//! The read-only endpoints of Claude Code's gateway protocol:
//! `GET /v1/models` (model discovery, with
//! `CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY=1`: the models this key may
//! use) and `GET /api/oauth/usage` (the dollars behind `/usage`'s spend
//! bar). Both authenticate the tollgate key like `/v1/messages`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDate, SecondsFormat, Utc};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::{Value, json};

use super::Gateway;
use super::admission::{BudgetStanding, SessionOf};
use super::auth::Identity;
use super::error::anthropic_error;
use super::usage_limits::period_name;

/// `GET /v1/models`: every model family priced, today, on a provider the
/// key's requests can reach (its provider and its route's targets), newest
/// first, in Anthropic's list shape. Anthropic-style IDs, which Claude
/// Code's model-family logic keys on.
pub async fn models(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let identity = match gw.keys.load().authenticate(&headers) {
        Ok(identity) => identity,
        Err(e) => return e.into_response(),
    };
    let today = Utc::now().date_naive();
    let book = gw.admission.price_book();
    let mut models: BTreeMap<&str, NaiveDate> = BTreeMap::new();
    for kind in gw.provider_kinds(&identity) {
        for (family, from) in book.families_in_force(kind, today) {
            let first = models.entry(family).or_insert(from);
            *first = (*first).min(from);
        }
    }
    Json(model_list(models.into_iter().collect())).into_response()
}

impl Gateway {
    /// The provider kinds (`anthropic`, `bedrock`, …) a key's requests go
    /// to: its own provider's and its route's targets'.
    fn provider_kinds(&self, identity: &Identity) -> Vec<&'static str> {
        let routes = self.routes.load();
        let route = identity.route.as_ref().and_then(|r| routes.get(r));
        let targets = route
            .into_iter()
            .flat_map(|r| r.targets.iter().map(|t| t.provider.as_str()))
            .chain([identity.provider.as_str()]);
        let mut kinds: Vec<&'static str> = targets
            .filter_map(|t| self.providers.get(t).map(|p| p.kind()))
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        kinds
    }
}

/// Anthropic's models-list body for `(id, first priced day)` pairs.
fn model_list(mut models: Vec<(&str, NaiveDate)>) -> Value {
    models.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let data: Vec<Value> = models
        .iter()
        .map(|(id, from)| {
            json!({
                "type": "model",
                "id": id,
                "display_name": display_name(id),
                "created_at": from.and_hms_opt(0, 0, 0).expect("midnight").and_utc()
                    .to_rfc3339_opts(SecondsFormat::Secs, true),
            })
        })
        .collect();
    json!({
        "data": data,
        "has_more": false,
        "first_id": models.first().map(|m| m.0),
        "last_id": models.last().map(|m| m.0),
    })
}

/// `claude-opus-4-6` → `Claude Opus 4.6`; `claude-3-5-haiku` →
/// `Claude 3.5 Haiku`.
fn display_name(id: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    for part in id.split('-') {
        let numeric = part.chars().all(|c| c.is_ascii_digit());
        match words.last_mut() {
            Some(last) if numeric && last.ends_with(|c: char| c.is_ascii_digit()) => {
                last.push('.');
                last.push_str(part);
            }
            _ => {
                let mut chars = part.chars();
                let word = match chars.next() {
                    Some(c) => c.to_uppercase().chain(chars).collect(),
                    None => String::new(),
                };
                words.push(word);
            }
        }
    }
    words.join(" ")
}

/// `GET /api/oauth/usage`: the key's USD budgets in the shape Claude
/// Code's `/usage` reads, amounts in cents, percents whole. A key no USD
/// budget covers gets 404 (the client then shows the percent alone):
/// the gateway does not hold its month's spend outside a ledger.
pub async fn usage(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let identity = match gw.keys.load().authenticate(&headers) {
        Ok(identity) => identity,
        Err(e) => return e.into_response(),
    };
    let now = Utc::now();
    let standings: Vec<BudgetStanding> = gw
        .admission
        .standings(&identity, SessionOf::from_headers(&headers), now)
        .into_iter()
        .filter(|s| s.limit_usd.is_some())
        .collect();
    let Some(body) = usage_body(&standings) else {
        return anthropic_error(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "tollgate: no USD budget covers this key",
        );
    };
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The usage body for USD standings; `None` when there are none.
fn usage_body(standings: &[BudgetStanding]) -> Option<Value> {
    let active = standings
        .iter()
        .max_by(|a, b| a.utilisation.total_cmp(&b.utilisation))?;
    let cents = |usd: Decimal| {
        (usd * Decimal::from(100))
            .floor()
            .to_i64()
            .unwrap_or(i64::MAX)
    };
    let limits: Vec<Value> = standings
        .iter()
        .map(|s| {
            json!({
                "kind": "spend",
                "group": period_name(s.period).unwrap_or("total"),
                "percent": percent(s),
                "resets_at": s.resets_at.map(|r| r.to_rfc3339_opts(SecondsFormat::Millis, true)),
                "severity": severity(s.utilisation),
                "is_active": std::ptr::eq(s, active),
            })
        })
        .collect();
    Some(json!({
        "extra_usage": {
            "is_enabled": true,
            "monthly_limit": active.limit_usd.map(cents),
            "used_credits": cents(active.used_usd),
            "utilization": percent(active),
            "currency": "USD",
        },
        "limits": limits,
    }))
}

/// Whole percent; below 100 while requests are still admitted.
fn percent(s: &BudgetStanding) -> i64 {
    let shown = if s.utilisation >= 1.0 {
        s.utilisation
    } else {
        s.utilisation.min(0.99)
    };
    (shown * 100.0).round() as i64
}

/// The severity Claude Code colours a limit row with.
fn severity(utilisation: f64) -> &'static str {
    if utilisation > 0.95 {
        "critical"
    } else if utilisation > 0.75 {
        "warning"
    } else {
        "normal"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BudgetPeriod;

    #[test]
    fn display_names_join_version_numbers() {
        assert_eq!(display_name("claude-opus-4-6"), "Claude Opus 4.6");
        assert_eq!(display_name("claude-3-5-haiku"), "Claude 3.5 Haiku");
        assert_eq!(display_name("claude-sonnet-4"), "Claude Sonnet 4");
    }

    #[test]
    fn the_model_list_is_newest_first_in_anthropics_shape() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let v = model_list(vec![
            ("claude-haiku-4-5", d("2025-10-01")),
            ("claude-opus-4-6", d("2026-02-05")),
        ]);
        assert_eq!(v["data"][0]["id"], "claude-opus-4-6");
        assert_eq!(v["data"][0]["type"], "model");
        assert_eq!(v["data"][0]["display_name"], "Claude Opus 4.6");
        assert_eq!(v["data"][0]["created_at"], "2026-02-05T00:00:00Z");
        assert_eq!(v["first_id"], "claude-opus-4-6");
        assert_eq!(v["last_id"], "claude-haiku-4-5");
        assert_eq!(v["has_more"], false);
    }

    #[test]
    fn usage_names_the_fullest_budget_in_cents_and_whole_percents() {
        let s = |name: &str, period, used: i64, limit: i64, resets: &str| BudgetStanding {
            budget: name.into(),
            subject: "alice".into(),
            period,
            utilisation: used as f64 / limit as f64,
            used_usd: Decimal::from(used),
            limit_usd: Some(Decimal::from(limit)),
            resets_at: Some(resets.parse().unwrap()),
        };
        let v = usage_body(&[
            s(
                "month",
                BudgetPeriod::Monthly,
                271,
                500,
                "2027-01-01T00:00:00Z",
            ),
            s("day", BudgetPeriod::Daily, 9, 10, "2026-12-02T00:00:00Z"),
        ])
        .unwrap();
        assert_eq!(v["extra_usage"]["monthly_limit"], 1000);
        assert_eq!(v["extra_usage"]["used_credits"], 900);
        assert_eq!(v["extra_usage"]["utilization"], 90);
        assert_eq!(v["limits"][0]["group"], "monthly");
        assert_eq!(v["limits"][0]["percent"], 54);
        assert_eq!(v["limits"][0]["is_active"], false);
        assert_eq!(v["limits"][1]["is_active"], true);
        assert_eq!(v["limits"][1]["severity"], "warning");
        assert_eq!(v["limits"][1]["resets_at"], "2026-12-02T00:00:00.000Z");
        assert!(usage_body(&[]).is_none());
    }
}
