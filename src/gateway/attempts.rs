//! Sending a planned request: retries of a target, fallbacks to the next,
//! all within the gateway's cap on upstream calls per request.
//!
//! Every call the provider answered is one it may bill, so the cap
//! (`[routing] max_attempts`) counts retries and fallbacks together, no
//! route moves on from a 2xx, and an answer that is discarded for a retry
//! or a fallback is read (bounded) for any usage it reports, which the
//! event then counts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::HeaderMap;

use super::error::GatewayError;
use super::plan::{Plan, PlannedTarget};
use super::recording::Recording;
use super::route::{self, Mode, RouteConfig};
use crate::event::Usage;
use crate::providers::{Endpoint, Provider, ProviderError, ProviderRequest, ProviderResponse};

/// Most bytes of a discarded answer read for its usage.
const DISCARDED_READ_BYTES: usize = 64 * 1024;
/// Longest a discarded answer is read for its usage.
const DISCARDED_READ_TIME: Duration = Duration::from_secs(5);

/// Everything one request's attempts share.
pub struct Attempts<'a> {
    pub providers: &'a std::collections::HashMap<String, Arc<dyn Provider>>,
    pub endpoint: Endpoint,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub passthrough: bool,
    pub route: &'a RouteConfig,
    /// Upstream calls left for this request.
    pub remaining: u32,
    pub key_id: &'a str,
}

impl Attempts<'_> {
    /// Tries the plan's targets in order until one answers with something
    /// the route does not move on from, or the calls run out.
    pub async fn run(
        &mut self,
        plan: &Plan,
        recording: &mut Recording,
    ) -> Result<ProviderResponse, GatewayError> {
        let mut last = None;
        for (i, target) in plan.targets.iter().enumerate() {
            if let Some(Ok(discarded)) = last.take() {
                read_discarded(discarded, recording).await;
            }
            let outcome = self.try_target(target, recording).await;
            let moves_on = match &outcome {
                Ok(up) => self.route.falls_back_on(up.status.as_u16()),
                Err(_) => self.route.strategy == Mode::Fallback,
            };
            last = Some(outcome);
            let more = i + 1 < plan.targets.len();
            if !(moves_on && more) {
                break;
            }
            if self.remaining == 0 {
                capped(recording);
                break;
            }
        }
        last.unwrap_or_else(|| {
            Err(self.no_provider(self.route.targets.first().map(|t| t.provider.as_str())))
        })
    }

    /// One target: its first call and the retries its route allows.
    async fn try_target(
        &mut self,
        target: &PlannedTarget,
        recording: &mut Recording,
    ) -> Result<ProviderResponse, GatewayError> {
        let Some(provider) = self.providers.get(&target.provider) else {
            return Err(self.no_provider(Some(&target.provider)));
        };
        let tries = self.route.tries_per_target();
        let mut n = 0;
        loop {
            n += 1;
            self.remaining = self.remaining.saturating_sub(1);
            let again = n < tries && self.remaining > 0;
            let started = Instant::now();
            let answer = provider.send(self.request(&target.ask.body)).await;
            let (kind, name) = (provider.kind(), provider.target());
            match answer {
                Ok(up) => {
                    let status = up.status.as_u16();
                    recording.push_attempt(kind, name, Some(status), started, None);
                    if !self.route.retries_on(status) {
                        return Ok(up);
                    }
                    if !again {
                        if n < tries {
                            capped(recording);
                        }
                        return Ok(up);
                    }
                    let wait = route::backoff(n, retry_after(&up.headers));
                    read_discarded(up, recording).await;
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    recording.push_attempt(kind, name, None, started, Some(e.error_type()));
                    if matches!(e, ProviderError::Misconfigured { .. }) {
                        return Err(GatewayError::Upstream(e));
                    }
                    if !again {
                        if n < tries {
                            capped(recording);
                        }
                        return Err(GatewayError::Upstream(e));
                    }
                    tokio::time::sleep(route::backoff(n, None)).await;
                }
            }
        }
    }

    fn request(&self, body: &Bytes) -> ProviderRequest {
        ProviderRequest {
            endpoint: self.endpoint,
            query: self.query.clone(),
            headers: self.headers.clone(),
            body: body.clone(),
            passthrough: self.passthrough,
        }
    }

    fn no_provider(&self, provider: Option<&str>) -> GatewayError {
        GatewayError::NoProvider {
            key_id: self.key_id.to_owned(),
            provider: provider.unwrap_or_default().to_owned(),
        }
    }
}

/// The answer's `retry-after`, if it is text.
fn retry_after(headers: &HeaderMap) -> Option<&str> {
    headers.get("retry-after").and_then(|v| v.to_str().ok())
}

/// Notes on the event that the route wanted more calls than allowed.
fn capped(recording: &mut Recording) {
    let note = "routing:max_attempts reached".to_owned();
    let downgrades = &mut recording.event_mut().downgrades;
    if !downgrades.contains(&note) {
        downgrades.push(note);
    }
}

/// Reads an answer that will not reach the client, bounded in bytes and
/// time, and counts any usage it reports: the provider bills the call.
async fn read_discarded(answer: ProviderResponse, recording: &mut Recording) {
    let mut body = answer.body;
    let mut kept = Vec::new();
    let reading = async {
        while let Some(Ok(chunk)) = body.next().await {
            let room = DISCARDED_READ_BYTES.saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if room <= chunk.len() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DISCARDED_READ_TIME, reading).await;
    if let Some(usage) = usage_of(&kept) {
        recording.add_discarded_usage(&usage);
    }
}

/// The `usage` a JSON answer reports, if any.
fn usage_of(body: &[u8]) -> Option<Usage> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("usage").map(Usage::from_anthropic_json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_discarded_json_answers_only() {
        let u = usage_of(br#"{"type":"message","usage":{"input_tokens":7,"output_tokens":3}}"#)
            .unwrap();
        assert_eq!((u.input_tokens, u.output_tokens), (7, 3));
        assert!(usage_of(br#"{"type":"error","error":{"type":"overloaded_error"}}"#).is_none());
        assert!(usage_of(b"not json").is_none());
    }
}
