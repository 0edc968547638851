//! The forwarding handlers: thin axum entry points over `Gateway::forward`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use http::{HeaderMap, HeaderValue, Uri, header};

use super::Gateway;
use super::auth::Identity;
use super::cache::{Capture, ResponseCache};
use super::error::GatewayError;
use super::headers::{
    RequestTags, downstream_headers, never_forwarded, passthrough_upstream_headers,
    upstream_headers,
};
use super::inbound::Inbound;
use super::passthrough;
use super::recording::Recording;
use super::request_head::RequestHead;
use super::tee::{AnswerReader, TeeBody};
use crate::metrics::METRICS;
use crate::providers::{Endpoint, ProviderError, ProviderRequest, ProviderResponse};
use crate::route::{self, RouteConfig};

/// `POST /v1/messages` (with or without `?beta=true`).
pub async fn messages(
    State(gw): State<Arc<Gateway>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    gw.forward(Endpoint::Messages, Inbound::Anthropic, uri, headers, body)
        .await
}

/// `POST /v1/messages/count_tokens`.
pub async fn count_tokens(
    State(gw): State<Arc<Gateway>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    gw.forward(
        Endpoint::CountTokens,
        Inbound::Anthropic,
        uri,
        headers,
        body,
    )
    .await
}

/// The response header that returns the trace ID to the client.
const TRACE_HEADER: &str = "x-tollgate-trace-id";
/// The response header naming the request's event (`GET /v1/logs/{id}`).
const EVENT_HEADER: &str = "x-tollgate-event-id";

impl Gateway {
    /// Authenticates, records, forwards and tees one request that arrived
    /// in the `inbound` API shape.
    pub(super) async fn forward(
        &self,
        endpoint: Endpoint,
        inbound: Inbound,
        uri: Uri,
        mut headers: HeaderMap,
        body: Body,
    ) -> Response {
        let started = Instant::now();
        let started_at = Utc::now();
        let identity = match self.keys.authenticate(&headers) {
            Ok(identity) => identity,
            Err(e) => {
                METRICS.auth_failures.inc();
                return e.into_response();
            }
        };
        // A bad tag header is refused, but the request is still recorded
        // (under a fresh trace ID) so nothing a key did goes unseen.
        let (tags, tag_error) = match RequestTags::from_headers(&headers) {
            Ok(tags) => (tags, None),
            Err(e) => (RequestTags::default().with_fresh_trace(), Some(e)),
        };
        let mut recording = Recording::start(
            self.handoff.clone(),
            started,
            started_at,
            &identity,
            tags,
            endpoint,
        );
        if let Some(name) = inbound.endpoint_name() {
            recording.event_mut().endpoint = name.to_owned();
        }
        if let Some(e) = tag_error {
            return refuse(recording, e);
        }
        if identity.passthrough {
            if inbound != Inbound::Anthropic {
                let e = GatewayError::PassthroughUnsupported(format!(
                    "key {} is a passthrough key: it forwards the client's own Anthropic credential, so it speaks Anthropic's API only (not Claude Code's Bedrock or Vertex mode)",
                    identity.key_id
                ));
                return refuse(recording, e);
            }
            // Only the credential's fingerprint is kept; the credential
            // itself stays in the request headers on their way upstream.
            let Some(credential) = passthrough::client_credential(&headers) else {
                let e = GatewayError::PassthroughNoCredential {
                    key_id: identity.key_id.clone(),
                };
                return refuse(recording, e);
            };
            recording.event_mut().credential_fingerprint =
                Some(self.fingerprints.fingerprint(credential));
        }
        let body = match axum::body::to_bytes(body, self.max_body_bytes).await {
            Ok(body) => body,
            Err(e) => return refuse(recording, body_error(e, self.max_body_bytes)),
        };
        METRICS.request_bytes.observe(body.len() as f64);
        let body = match inbound.to_anthropic(body, &mut headers) {
            Ok(body) => body,
            Err(e) => return refuse(recording, e),
        };
        let head = match RequestHead::parse(&body) {
            Ok(head) => head,
            Err(e) => return refuse(recording, e),
        };
        {
            let e = recording.event_mut();
            e.model_requested = head.model.as_deref().map(str::to_owned);
            e.stream = head.is_stream();
        }
        if endpoint == Endpoint::Messages {
            let max_tokens = head.max_tokens.unwrap_or(0);
            let model = head.model.as_deref().map(str::to_owned);
            match self
                .admission
                .admit(&identity, model.as_deref(), max_tokens, &body, started_at)
                .await
            {
                Ok(ticket) => recording.admitted(self.admission.gateway_id(), ticket),
                Err(refusal) => return refuse(recording, GatewayError::Refused(refusal)),
            }
        }
        self.send_upstream(endpoint, &identity, uri, &headers, body, recording)
            .await
    }

    /// Sends the admitted request to the key's provider and returns its
    /// answer through the tee.
    async fn send_upstream(
        &self,
        endpoint: Endpoint,
        identity: &Identity,
        uri: Uri,
        headers: &HeaderMap,
        body: Bytes,
        mut recording: Recording,
    ) -> Response {
        let key_route = identity
            .route
            .as_ref()
            .and_then(|r| self.routes.get(r).cloned())
            .unwrap_or_else(|| RouteConfig::single(&identity.provider));
        let route = match route::resolve(headers, &key_route, &self.routes) {
            Ok(route) => route,
            Err((header, reason)) => {
                return refuse(recording, GatewayError::BadHeader { header, reason });
            }
        };
        let passthrough = identity.passthrough;
        if route.passthrough && !passthrough {
            let reason = "the route is a passthrough route: only keys configured for passthrough (passthrough = true, or a key route that is) use it".to_owned();
            return refuse(
                recording,
                GatewayError::BadHeader {
                    header: "x-tollgate-config",
                    reason,
                },
            );
        }
        let problem = passthrough
            .then(|| passthrough::route_problem(&route, &self.providers))
            .flatten();
        if let Some(problem) = problem {
            return refuse(recording, GatewayError::PassthroughUnsupported(problem));
        }
        let mut up_headers = if passthrough {
            passthrough_upstream_headers(headers)
        } else {
            upstream_headers(headers)
        };
        for name in route.forward_headers.iter().filter(|n| !never_forwarded(n)) {
            if let (Ok(n), Some(v)) = (
                http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
                headers.get(name.as_str()),
            ) {
                up_headers.insert(n, v.clone());
            }
        }
        METRICS.overhead.observe(recording.elapsed().as_secs_f64());
        let facts_model = recording.event_mut().model_requested.clone();
        let facts_metadata = recording.event_mut().metadata.clone();
        let plan = route.plan(&route::Facts {
            model: facts_model.as_deref(),
            metadata: &facts_metadata,
        });
        // Never on passthrough: an answer would cross credentials.
        let cache_key = route
            .cache
            .as_ref()
            .filter(|c| c.enabled() && endpoint == Endpoint::Messages && !passthrough)
            .map(|c| {
                let targets: Vec<&str> = plan.iter().map(|t| t.provider.as_str()).collect();
                (
                    ResponseCache::key(endpoint.as_str(), &targets, &body),
                    Duration::from_secs(c.max_age),
                )
            });
        if let Some((key, _)) = &cache_key {
            if let Some(hit) = self.cache.get(key) {
                METRICS.cache_lookups.with_label_values(&["hit"]).inc();
                recording.push_attempt("cache", "cache", Some(200), Instant::now(), None);
                recording.event_mut().status = 200;
                let trace_id = recording.trace_id().to_owned();
                let event_id = recording.event_id();
                recording.emit(None);
                let mut response = Response::new(Body::from(hit.body.clone()));
                if let Some(ct) = &hit.content_type {
                    response
                        .headers_mut()
                        .insert(header::CONTENT_TYPE, ct.clone());
                }
                response
                    .headers_mut()
                    .insert("x-tollgate-cache", HeaderValue::from_static("hit"));
                set_trace_header(response.headers_mut(), &trace_id, event_id);
                return response;
            }
            METRICS.cache_lookups.with_label_values(&["miss"]).inc();
        }
        let retries = route
            .retry
            .as_ref()
            .map(|r| (r.attempts.max(1), r.on_status_codes.clone()))
            .unwrap_or((1, Vec::new()));
        let mut last: Option<Result<ProviderResponse, GatewayError>> = None;
        for (i, target) in plan.iter().enumerate() {
            let more_targets = i + 1 < plan.len();
            let Some(provider) = self.providers.get(&target.provider) else {
                last = Some(Err(GatewayError::NoProvider {
                    key_id: identity.key_id.clone(),
                    provider: target.provider.clone(),
                }));
                continue;
            };
            let (kind, name) = (provider.kind(), provider.target());
            // A passthrough body goes byte for byte (its routes have no
            // overrides; this holds even if one did).
            let body = if passthrough {
                body.clone()
            } else {
                route::apply_overrides(&body, &target.override_params)
            };
            for n in 1..=retries.0 {
                let attempt_started = Instant::now();
                let request = ProviderRequest {
                    endpoint,
                    query: uri.query().map(str::to_owned),
                    headers: up_headers.clone(),
                    body: body.clone(),
                    passthrough,
                };
                let answer = provider.send(request).await;
                let again = n < retries.0;
                match answer {
                    Ok(upstream) => {
                        let status = upstream.status.as_u16();
                        recording.push_attempt(kind, name, Some(status), attempt_started, None);
                        if again && retries.1.contains(&status) {
                            let wait = route::backoff(
                                n,
                                upstream
                                    .headers
                                    .get("retry-after")
                                    .and_then(|v| v.to_str().ok()),
                            );
                            drop(upstream);
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        last = Some(Ok(upstream));
                    }
                    Err(e) => {
                        recording.push_attempt(
                            kind,
                            name,
                            None,
                            attempt_started,
                            Some(e.error_type()),
                        );
                        if again && !matches!(e, ProviderError::Misconfigured { .. }) {
                            tokio::time::sleep(route::backoff(n, None)).await;
                            continue;
                        }
                        last = Some(Err(GatewayError::Upstream(e)));
                    }
                }
                break;
            }
            let fall_back = match &last {
                Some(Ok(up)) => route.falls_back_on(up.status.as_u16()),
                Some(Err(_)) => route.strategy == route::Mode::Fallback,
                None => false,
            };
            if !(fall_back && more_targets) {
                break;
            }
        }
        let upstream = match last {
            Some(Ok(upstream)) => upstream,
            Some(Err(e)) => return refuse(recording, e),
            None => {
                return refuse(
                    recording,
                    GatewayError::NoProvider {
                        key_id: identity.key_id.clone(),
                        provider: identity.provider.clone(),
                    },
                );
            }
        };
        let kind = recording.event_mut().provider.clone();
        let kind = kind.as_str();
        let status = upstream.status;
        for d in &upstream.downgrades {
            METRICS
                .downgrades
                .with_label_values(&[kind, d.split(':').next().unwrap_or("other")])
                .inc();
        }
        recording.event_mut().downgrades.extend(upstream.downgrades);
        recording.event_mut().status = status.as_u16();
        recording.event_mut().request_id = upstream
            .headers
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let content_type = upstream
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let reader = AnswerReader::for_content_type(content_type);
        let mut out_headers = downstream_headers(&upstream.headers);
        // The body is re-framed here (chunked), so its length header goes.
        out_headers.remove(header::CONTENT_LENGTH);
        set_trace_header(&mut out_headers, recording.trace_id(), recording.event_id());
        let capture = cache_key
            .filter(|_| status.is_success())
            .map(|(key, max_age)| Capture {
                cache: self.cache.clone(),
                key,
                max_age,
                content_type: upstream.headers.get(header::CONTENT_TYPE).cloned(),
                body: bytes::BytesMut::new(),
            });
        if cache_key.is_some() {
            out_headers.insert("x-tollgate-cache", HeaderValue::from_static("miss"));
        }
        let body =
            Body::from_stream(TeeBody::new(upstream.body, reader, recording).with_capture(capture));
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = out_headers;
        response
    }
}

/// Answers with tollgate's own error and records it.
fn refuse(mut recording: Recording, error: GatewayError) -> Response {
    let (status, _) = error.status_and_type();
    METRICS
        .client_errors
        .with_label_values(&[error.reason()])
        .inc();
    let e = recording.event_mut();
    e.status = status.as_u16();
    e.error_type = Some(error.reason().to_owned());
    let trace_id = recording.trace_id().to_owned();
    let event_id = recording.event_id();
    recording.emit(None);
    let mut response = error.into_response();
    set_trace_header(response.headers_mut(), &trace_id, event_id);
    response
}

/// Tells the client which trace and event its request became.
fn set_trace_header(headers: &mut HeaderMap, trace_id: &str, event_id: uuid::Uuid) {
    if let Ok(v) = HeaderValue::from_str(trace_id) {
        headers.insert(TRACE_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&event_id.to_string()) {
        headers.insert(EVENT_HEADER, v);
    }
}

/// Tells an over-long body from one that could not be read.
fn body_error(err: axum::Error, limit: usize) -> GatewayError {
    let too_large =
        std::error::Error::source(&err).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
    if too_large || err.to_string().contains("length limit") {
        GatewayError::BodyTooLarge { limit }
    } else {
        GatewayError::BodyRead(err.to_string())
    }
}
