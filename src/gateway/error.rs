//! Errors tollgate itself answers with, in Anthropic's shape so that
//! Claude Code shows them (`API Error: <status> <message>`).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};

use super::route::RouteError;
use crate::providers::ProviderError;

/// Why a request was not admitted (decided by admission; defined here so
/// this module imports nothing of the request path and stays a leaf).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("budget {budget} ({subject}) would be exceeded: {spent} spent of {limit}{resets}")]
    Budget {
        budget: String,
        subject: String,
        spent: String,
        limit: String,
        resets: String,
    },
    #[error("budget state is not known yet (this gateway is still reading it); try again shortly")]
    StateUnknown,
    #[error(
        "session {session} is blocked by runaway guard {guard}: {reason}; an admin resumes it with POST /v1/sessions/{session}/resume"
    )]
    Guard {
        guard: String,
        session: String,
        reason: String,
    },
    #[error("rate limit of {scope} {subject}: {limit}; retry in {retry_after_secs} s")]
    RateLimited {
        scope: &'static str,
        subject: String,
        limit: String,
        retry_after_secs: u64,
    },
}

/// Why the gateway answered instead of the provider.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(
        "missing tollgate key: send it as `Authorization: Bearer <key>`, `x-api-key` or `x-tollgate-api-key`"
    )]
    MissingKey,
    #[error("invalid tollgate key")]
    UnknownKey,
    #[error(
        "no valid tollgate key in x-tollgate-api-key: with passthrough (your own Claude subscription, Anthropic OAuth or Anthropic key), send the tollgate key as `x-tollgate-api-key: <key>` (alias x-portkey-api-key) in ANTHROPIC_CUSTOM_HEADERS; Authorization / x-api-key are your own credential and go to Anthropic"
    )]
    PassthroughKeyHeader,
    #[error(
        "key {key_id} is a passthrough key, but the request carries no Anthropic credential of its own (Authorization: Bearer, or x-api-key) to forward"
    )]
    PassthroughNoCredential { key_id: String },
    #[error("passthrough request refused: {0}")]
    PassthroughUnsupported(String),
    #[error("header {header} is invalid: {reason}")]
    BadHeader {
        header: &'static str,
        reason: String,
    },
    #[error("request body is larger than the {limit}-byte limit")]
    BodyTooLarge { limit: usize },
    #[error("request body could not be read: {0}")]
    BodyRead(String),
    #[error("request body is not valid JSON: {0}")]
    BadJson(String),
    #[error("key {key_id} routes to provider {provider}, which is not configured")]
    NoProvider { key_id: String, provider: String },
    #[error(transparent)]
    Upstream(#[from] ProviderError),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Route(#[from] RouteError),
}

impl GatewayError {
    /// The HTTP status and Anthropic error type for this error.
    pub fn status_and_type(&self) -> (StatusCode, &'static str) {
        use GatewayError::*;
        match self {
            MissingKey | UnknownKey | PassthroughKeyHeader | PassthroughNoCredential { .. } => {
                (StatusCode::UNAUTHORIZED, "authentication_error")
            }
            BadHeader { .. } | BodyRead(_) | BadJson(_) | PassthroughUnsupported(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error")
            }
            BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large"),
            NoProvider { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "api_error"),
            Upstream(ProviderError::Timeout { .. }) => (StatusCode::GATEWAY_TIMEOUT, "api_error"),
            Upstream(ProviderError::Misconfigured { .. }) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "api_error")
            }
            Upstream(_) => (StatusCode::BAD_GATEWAY, "api_error"),
            // Claude Code's gateway contract: a spent cap is 429
            // `billing_error` (not retried, shown as the client's own).
            Refused(Refusal::Budget { .. } | Refusal::Guard { .. }) => {
                (StatusCode::TOO_MANY_REQUESTS, "billing_error")
            }
            Refused(Refusal::StateUnknown) => (StatusCode::SERVICE_UNAVAILABLE, "api_error"),
            Refused(Refusal::RateLimited { .. }) => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error")
            }
            Route(RouteError::Forbidden { .. }) => (StatusCode::FORBIDDEN, "permission_error"),
            Route(RouteError::Invalid { .. }) => (StatusCode::BAD_REQUEST, "invalid_request_error"),
        }
    }

    /// The short reason stored on events and used as a metric label: one
    /// of [`REFUSAL_REASONS`], or an upstream's error type.
    pub fn reason(&self) -> &'static str {
        use GatewayError::*;
        match self {
            MissingKey => "missing_key",
            UnknownKey => "unknown_key",
            PassthroughKeyHeader => "passthrough_key_header",
            PassthroughNoCredential { .. } => "passthrough_no_credential",
            PassthroughUnsupported(_) => "passthrough_unsupported",
            BadHeader { .. } => "bad_header",
            BodyTooLarge { .. } => "body_too_large",
            BodyRead(_) => "body_read_error",
            BadJson(_) => "bad_json",
            NoProvider { .. } => "no_provider",
            Upstream(e) => e.error_type(),
            Refused(Refusal::Budget { .. }) => "budget_exceeded",
            Refused(Refusal::StateUnknown) => "budget_state_unknown",
            Refused(Refusal::Guard { .. }) => "session_blocked",
            Refused(Refusal::RateLimited { .. }) => "rate_limited",
            Route(RouteError::Forbidden { .. }) => "client_config_forbidden",
            Route(RouteError::Invalid { .. }) => "bad_header",
        }
    }
}

/// Every reason tollgate itself refuses a request for (what
/// [`GatewayError::reason`] gives for all but upstream failures).
pub const REFUSAL_REASONS: &[&str] = &[
    "missing_key",
    "unknown_key",
    "passthrough_key_header",
    "passthrough_no_credential",
    "passthrough_unsupported",
    "bad_header",
    "body_too_large",
    "body_read_error",
    "bad_json",
    "no_provider",
    "budget_exceeded",
    "budget_state_unknown",
    "rate_limited",
    "client_config_forbidden",
];

/// Builds an Anthropic-shaped error response.
pub fn anthropic_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "type": "error",
        "error": { "type": error_type, "message": message },
    });
    let mut response = (status, axum::Json(body)).into_response();
    // A missing key will not appear by retrying; tell Claude Code so.
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::BAD_REQUEST {
        response
            .headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
    }
    response
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let (status, error_type) = self.status_and_type();
        let mut response = anthropic_error(status, error_type, &format!("tollgate: {self}"));
        if let GatewayError::Refused(Refusal::Budget {
            budget, subject, ..
        }) = &self
        {
            response
                .extensions_mut()
                .insert(super::usage_limits::RefusedBy {
                    budget: budget.clone(),
                    subject: subject.clone(),
                });
        }
        let headers = response.headers_mut();
        match &self {
            // A spent budget does not come back by retrying: Claude Code
            // shows the message once instead of retrying ten times.
            GatewayError::Refused(Refusal::Budget { .. } | Refusal::Guard { .. })
            | GatewayError::Route(RouteError::Forbidden { .. }) => {
                headers.insert("x-should-retry", HeaderValue::from_static("false"));
            }
            GatewayError::Refused(Refusal::StateUnknown) => {
                headers.insert("retry-after", HeaderValue::from_static("2"));
            }
            GatewayError::Refused(Refusal::RateLimited {
                retry_after_secs, ..
            }) => {
                headers.insert("retry-after", HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every refusal of tollgate's own has its reason in `REFUSAL_REASONS`,
    /// so its metric series exists at 0 before the first one.
    #[test]
    fn every_own_refusal_reason_is_announced() {
        let s = String::new;
        let all = [
            GatewayError::MissingKey,
            GatewayError::UnknownKey,
            GatewayError::PassthroughKeyHeader,
            GatewayError::PassthroughNoCredential { key_id: s() },
            GatewayError::PassthroughUnsupported(s()),
            GatewayError::BadHeader {
                header: "h",
                reason: s(),
            },
            GatewayError::BodyTooLarge { limit: 1 },
            GatewayError::BodyRead(s()),
            GatewayError::BadJson(s()),
            GatewayError::NoProvider {
                key_id: s(),
                provider: s(),
            },
            GatewayError::Refused(Refusal::Budget {
                budget: s(),
                subject: s(),
                spent: s(),
                limit: s(),
                resets: s(),
            }),
            GatewayError::Refused(Refusal::StateUnknown),
            GatewayError::Refused(Refusal::RateLimited {
                scope: "key",
                subject: s(),
                limit: s(),
                retry_after_secs: 1,
            }),
            GatewayError::Route(RouteError::Forbidden {
                header: "h",
                reason: s(),
            }),
            GatewayError::Route(RouteError::Invalid {
                header: "h",
                reason: s(),
            }),
        ];
        for e in &all {
            assert!(
                REFUSAL_REASONS.contains(&e.reason()),
                "{} is not announced",
                e.reason()
            );
        }
        let reasons: std::collections::BTreeSet<_> = all.iter().map(|e| e.reason()).collect();
        assert_eq!(
            reasons.len(),
            REFUSAL_REASONS.len(),
            "no reason is announced that nothing gives"
        );
    }
}
