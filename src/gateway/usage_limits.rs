//! Claude Code's usage-limit headers: on every answer to `POST
//! /v1/messages`, where the caller stands against the tightest budget
//! covering the request, as the `anthropic-ratelimit-unified-*` headers
//! Anthropic sends its subscribers. Claude Code (2.1.225 on, in gateway
//! mode) then shows "You've used NN% of your usage credits · resets …"
//! past 75 % and 95 %, and a budget refusal as its own.
//!
//! Admission decides; this only reads its state
//! ([`Admission::standings`](super::admission::Admission::standings)).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::Gateway;
use super::admission::{BudgetStanding, SessionOf};
use crate::config::BudgetPeriod;

/// The prefix of every usage-limit header.
const PREFIX: &str = "anthropic-ratelimit-unified-";

/// Utilisation thresholds Claude Code's notice keys on, highest first.
const THRESHOLDS: [f64; 2] = [0.95, 0.75];

/// Put on a budget refusal's response by the error that made it, so the
/// headers describe the budget that refused rather than the fullest one.
#[derive(Debug, Clone)]
pub struct RefusedBy {
    pub budget: String,
    pub subject: String,
}

/// Middleware: adds the usage-limit headers to answers of `POST
/// /v1/messages` for keys billed to tollgate's account, after removing any
/// the upstream sent (an org-wide quota is not the developer's own). A
/// passthrough request's headers are the client's own subscription's, and
/// pass untouched.
pub async fn add_usage_headers(
    State(gw): State<Arc<Gateway>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST || request.uri().path() != "/v1/messages" {
        return next.run(request).await;
    }
    let identity = gw.keys.load().authenticate(request.headers()).ok();
    let session = OwnedSession::of(request.headers());
    let mut response = next.run(request).await;
    let Some(identity) = identity.filter(|i| !i.passthrough) else {
        return response;
    };
    let now = Utc::now();
    let refused = response.extensions().get::<RefusedBy>().cloned();
    let standing = match &refused {
        Some(r) => gw
            .admission
            .standings(&identity, session.as_of(), now)
            .into_iter()
            .find(|s| s.budget == r.budget && s.subject == r.subject),
        None => gw
            .admission
            .tightest_budget(&identity, session.as_of(), now),
    };
    let headers = response.headers_mut();
    strip_upstream(headers);
    if let Some(standing) = standing {
        for (name, value) in usage_headers(&standing, refused.is_some(), now) {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }
    response
}

/// The request's session and agent, kept past the request's move into
/// the handler (session budgets count for the headers too).
struct OwnedSession {
    session: Option<String>,
    agent: Option<String>,
}

impl OwnedSession {
    /// Copies them out of the request's headers.
    fn of(headers: &HeaderMap) -> OwnedSession {
        let s = SessionOf::from_headers(headers);
        OwnedSession {
            session: s.session.map(str::to_owned),
            agent: s.agent.map(str::to_owned),
        }
    }

    /// Borrowed, as admission takes it.
    fn as_of(&self) -> SessionOf<'_> {
        SessionOf {
            session: self.session.as_deref(),
            agent: self.agent.as_deref(),
        }
    }
}

/// Removes the upstream's own usage-limit headers.
fn strip_upstream(headers: &mut HeaderMap) {
    let theirs: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with(PREFIX))
        .cloned()
        .collect();
    for name in theirs {
        headers.remove(name);
    }
}

/// The headers for `standing`: the allowed shape, or, when `rejected`,
/// the refusal shape (no `representative-claim` or `overage-status`, so
/// Claude Code prints tollgate's own message naming the budget).
pub fn usage_headers(
    standing: &BudgetStanding,
    rejected: bool,
    now: DateTime<Utc>,
) -> Vec<(HeaderName, String)> {
    let h = |suffix: &str| HeaderName::from_bytes(format!("{PREFIX}{suffix}").as_bytes());
    let h = |suffix: &str| h(suffix).expect("valid header name");
    let mut out = Vec::new();
    let reset = standing.resets_at.map(|r| r.timestamp().to_string());
    if let Some(reset) = &reset {
        out.push((h("reset"), reset.clone()));
        out.push((h("overage-reset"), reset.clone()));
    }
    if rejected {
        out.push((h("status"), "rejected".into()));
        out.push((
            h("overage-utilization"),
            shown(standing.utilisation.max(1.0)),
        ));
        out.push((h("overage-surpassed-threshold"), "1".into()));
        if let Some(period) = period_name(standing.period) {
            out.push((h("overage-period"), period.into()));
        }
        out.push((h("overage-disabled-reason"), "org_spend_cap_reached".into()));
        if let Some(resets) = standing.resets_at {
            let secs = (resets - now).num_seconds().max(1);
            out.push((HeaderName::from_static("retry-after"), secs.to_string()));
        }
        return out;
    }
    let threshold = THRESHOLDS.into_iter().find(|t| standing.utilisation > *t);
    let status = if threshold.is_some() {
        "allowed_warning"
    } else {
        "allowed"
    };
    out.push((h("status"), status.into()));
    out.push((h("overage-status"), status.into()));
    out.push((h("representative-claim"), "overage".into()));
    out.push((
        h("overage-utilization"),
        shown(standing.utilisation.min(0.99)),
    ));
    if let Some(t) = threshold {
        out.push((h("overage-surpassed-threshold"), t.to_string()));
    }
    out
}

/// A fraction with two decimals, as the headers carry it.
fn shown(fraction: f64) -> String {
    let rounded = (fraction * 100.0).round() / 100.0;
    format!("{rounded}")
}

/// The header's name for a calendar period; a `total` budget has none.
pub fn period_name(period: BudgetPeriod) -> Option<&'static str> {
    match period {
        BudgetPeriod::Daily => Some("daily"),
        BudgetPeriod::Weekly => Some("weekly"),
        BudgetPeriod::Monthly => Some("monthly"),
        BudgetPeriod::Total => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    fn standing(utilisation: f64) -> BudgetStanding {
        BudgetStanding {
            budget: "alice-day".into(),
            subject: "alice".into(),
            period: BudgetPeriod::Daily,
            utilisation,
            used_usd: Decimal::ZERO,
            limit_usd: Some(Decimal::from(10)),
            resets_at: Some("2026-12-02T00:00:00Z".parse().unwrap()),
        }
    }

    fn get(headers: &[(HeaderName, String)], name: &str) -> Option<String> {
        headers
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn below_three_quarters_is_allowed_without_a_threshold() {
        let now = "2026-12-01T10:00:00Z".parse().unwrap();
        let hs = usage_headers(&standing(0.5), false, now);
        assert_eq!(
            get(&hs, "anthropic-ratelimit-unified-status").unwrap(),
            "allowed"
        );
        assert_eq!(
            get(&hs, "anthropic-ratelimit-unified-overage-utilization").unwrap(),
            "0.5"
        );
        assert_eq!(
            get(&hs, "anthropic-ratelimit-unified-reset").unwrap(),
            "1796169600"
        );
        assert_eq!(
            get(&hs, "anthropic-ratelimit-unified-representative-claim").unwrap(),
            "overage"
        );
        assert!(
            get(
                &hs,
                "anthropic-ratelimit-unified-overage-surpassed-threshold"
            )
            .is_none()
        );
    }

    #[test]
    fn past_a_threshold_warns_and_utilisation_stays_below_one_while_allowed() {
        let now = "2026-12-01T10:00:00Z".parse().unwrap();
        let hs = usage_headers(&standing(0.812), false, now);
        assert_eq!(
            get(&hs, "anthropic-ratelimit-unified-status").unwrap(),
            "allowed_warning"
        );
        assert_eq!(
            get(&hs, "anthropic-ratelimit-unified-overage-utilization").unwrap(),
            "0.81"
        );
        assert_eq!(
            get(
                &hs,
                "anthropic-ratelimit-unified-overage-surpassed-threshold"
            )
            .unwrap(),
            "0.75"
        );
        let hs = usage_headers(&standing(1.2), false, now);
        assert_eq!(
            get(&hs, "anthropic-ratelimit-unified-overage-utilization").unwrap(),
            "0.99"
        );
        assert_eq!(
            get(
                &hs,
                "anthropic-ratelimit-unified-overage-surpassed-threshold"
            )
            .unwrap(),
            "0.95"
        );
    }

    #[test]
    fn a_refusal_is_rejected_with_period_reason_and_retry_after_but_no_claim() {
        let now = "2026-12-01T23:00:00Z".parse().unwrap();
        let hs = usage_headers(&standing(0.9), true, now);
        assert_eq!(
            get(&hs, "anthropic-ratelimit-unified-status").unwrap(),
            "rejected"
        );
        assert_eq!(
            get(&hs, "anthropic-ratelimit-unified-overage-utilization").unwrap(),
            "1"
        );
        assert_eq!(
            get(&hs, "anthropic-ratelimit-unified-overage-period").unwrap(),
            "daily"
        );
        assert_eq!(
            get(&hs, "anthropic-ratelimit-unified-overage-disabled-reason").unwrap(),
            "org_spend_cap_reached"
        );
        assert_eq!(get(&hs, "retry-after").unwrap(), "3600");
        assert!(get(&hs, "anthropic-ratelimit-unified-representative-claim").is_none());
        assert!(get(&hs, "anthropic-ratelimit-unified-overage-status").is_none());
    }
}
