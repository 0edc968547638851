//! The forwarding handlers: thin axum entry points over `Gateway::forward`,
//! and the request path's steps in order.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use http::{HeaderMap, HeaderValue, Uri, header};

use super::Gateway;
use super::admission::SessionOf;
use super::attempts::Attempts;
use super::auth::Identity;
use super::cache::{Cached, Capture, ResponseCache};
use super::error::GatewayError;
use super::headers::{
    RequestTags, add_forwarded, downstream_headers, passthrough_upstream_headers, upstream_headers,
};
use super::inbound::Inbound;
use super::passthrough;
use super::plan::{Plan, WorstCase};
use super::recording::Recording;
use super::request_head::RequestHead;
use super::route::{self, RouteConfig};
use super::tee::{AnswerReader, TeeBody};
use crate::metrics::METRICS;
use crate::providers::{Endpoint, ProviderResponse};

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
    /// in the `inbound` API shape. The steps: who is calling → what they
    /// send → which route (and whether the key may choose it) → admission
    /// of what will really be sent → cache → attempts → the answer.
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
        let identity = match self.keys.load().authenticate(&headers) {
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
        if let Err(e) = self.check_passthrough(&identity, &inbound, &headers, &mut recording) {
            return refuse(recording, e);
        }
        let ask = match self
            .read_body(inbound, body, &mut headers, &mut recording)
            .await
        {
            Ok(ask) => ask,
            Err(e) => return refuse(recording, e),
        };
        // The route table now: this request keeps it to its end.
        let routes = self.routes.load_full();
        let (route, plan) =
            match self.route_and_plan(&routes, &identity, &headers, &ask, &mut recording) {
                Ok(planned) => planned,
                Err(e) => return refuse(recording, e),
            };
        if endpoint == Endpoint::Messages
            && let Err(e) = self
                .admit(&identity, &plan, started_at, &mut recording)
                .await
        {
            return refuse(recording, e);
        }
        self.send_upstream(endpoint, &identity, uri, &headers, &route, &plan, recording)
            .await
    }

    /// A passthrough key speaks Anthropic's API with the client's own
    /// credential; only that credential's fingerprint is kept (the
    /// credential itself stays in the headers on their way upstream).
    fn check_passthrough(
        &self,
        identity: &Identity,
        inbound: &Inbound,
        headers: &HeaderMap,
        recording: &mut Recording,
    ) -> Result<(), GatewayError> {
        if !identity.passthrough {
            return Ok(());
        }
        if *inbound != Inbound::Anthropic {
            return Err(GatewayError::PassthroughUnsupported(format!(
                "key {} is a passthrough key: it forwards the client's own Anthropic credential, so it speaks Anthropic's API only (not Claude Code's Bedrock or Vertex mode)",
                identity.key_id
            )));
        }
        let credential = passthrough::client_credential(headers).ok_or_else(|| {
            GatewayError::PassthroughNoCredential {
                key_id: identity.key_id.clone(),
            }
        })?;
        recording.event_mut().credential_fingerprint =
            Some(self.fingerprints.fingerprint(credential));
        Ok(())
    }

    /// Reads the body (bounded), brings it to Anthropic's shape and notes
    /// what the event needs from its head, read once here.
    async fn read_body(
        &self,
        inbound: Inbound,
        body: Body,
        headers: &mut HeaderMap,
        recording: &mut Recording,
    ) -> Result<WorstCase, GatewayError> {
        let body = axum::body::to_bytes(body, self.max_body_bytes)
            .await
            .map_err(|e| body_error(e, self.max_body_bytes))?;
        METRICS.request_bytes.observe(body.len() as f64);
        let body = inbound.to_anthropic(body, headers)?;
        let head = RequestHead::parse(&body)?;
        let e = recording.event_mut();
        e.model_requested = head.model.as_deref().map(str::to_owned);
        e.stream = head.is_stream();
        if self.digest_bodies && e.session_id.is_some() {
            e.body_digest = Some(body_digest(&body));
        }
        Ok(WorstCase::of(body.clone(), &head))
    }

    /// The request's route (the key's, or one its headers choose where the
    /// key allows it) and the targets it will try with their bodies.
    fn route_and_plan<'a>(
        &'a self,
        routes: &'a route::Routes,
        identity: &Identity,
        headers: &HeaderMap,
        ask: &WorstCase,
        recording: &mut Recording,
    ) -> Result<(Cow<'a, RouteConfig>, Plan), GatewayError> {
        let allowed = &identity.client_routing;
        let route = match self.key_route(routes, identity) {
            Cow::Borrowed(key_route) => route::resolve(headers, key_route, routes, allowed)?,
            Cow::Owned(key_route) => {
                Cow::Owned(route::resolve(headers, &key_route, routes, allowed)?.into_owned())
            }
        };
        if route.passthrough && !identity.passthrough {
            let reason = "the route is a passthrough route: only keys configured for passthrough (passthrough = true, or a key route that is) use it".to_owned();
            return Err(GatewayError::BadHeader {
                header: "x-tollgate-config",
                reason,
            });
        }
        if identity.passthrough
            && let Some(problem) = passthrough::route_problem(&route, &self.providers)
        {
            return Err(GatewayError::PassthroughUnsupported(problem));
        }
        let e = recording.event_mut();
        let facts = route::Facts {
            model: e.model_requested.as_deref(),
            metadata: &e.metadata,
        };
        let plan = Plan::new(&route, &facts, ask, identity.passthrough);
        Ok((route, plan))
    }

    /// The key's route: its named route, or its provider's one-target
    /// route, borrowed from the gateway (built only for a provider the
    /// gateway does not know, which then fails as it always did).
    fn key_route<'a>(
        &'a self,
        routes: &'a route::Routes,
        identity: &Identity,
    ) -> Cow<'a, RouteConfig> {
        let configured = match &identity.route {
            Some(r) => routes.get(r),
            None => self.single_routes.get(&identity.provider),
        };
        configured
            .map(Cow::Borrowed)
            .unwrap_or_else(|| Cow::Owned(RouteConfig::single(&identity.provider)))
    }

    /// Reserves the worst case of the dearest planned target against the
    /// key's budgets and limits.
    async fn admit(
        &self,
        identity: &Identity,
        plan: &Plan,
        at: chrono::DateTime<Utc>,
        recording: &mut Recording,
    ) -> Result<(), GatewayError> {
        let bound = |c: &WorstCase| {
            self.admission.worst_case_usd(
                c.model.as_deref(),
                c.body.len() as u64,
                c.max_tokens,
                &c.billing,
            )
        };
        // One target (the common case) needs no pricing to be the dearest.
        let worst = match plan.targets.as_slice() {
            [only] => Some(&only.ask),
            _ => plan.candidates().max_by_key(|c| (bound(c), c.max_tokens)),
        };
        let Some(worst) = worst else {
            return Ok(());
        };
        let event = recording.event_mut();
        let session = SessionOf {
            session: event.session_id.as_deref(),
            agent: event.agent_id.as_deref(),
        };
        let ticket = self.admission.admit(identity, session, worst, at).await?;
        recording.admitted(self.admission.gateway_id(), ticket);
        Ok(())
    }

    /// Sends the admitted request along its plan and returns the answer
    /// through the tee: cache → attempts → respond.
    #[allow(clippy::too_many_arguments)]
    async fn send_upstream(
        &self,
        endpoint: Endpoint,
        identity: &Identity,
        uri: Uri,
        headers: &HeaderMap,
        route: &RouteConfig,
        plan: &Plan,
        mut recording: Recording,
    ) -> Response {
        let passthrough = identity.passthrough;
        let mut up_headers = if passthrough {
            passthrough_upstream_headers(headers)
        } else {
            upstream_headers(headers)
        };
        add_forwarded(&mut up_headers, headers, &route.forward_headers);
        METRICS.overhead.observe(recording.elapsed().as_secs_f64());
        let cache = self.cache_slot(endpoint, identity, route, plan, &up_headers);
        if let Some(slot) = &cache {
            if let Some(hit) = self.cache.get(&slot.0, slot.1) {
                METRICS.cache_lookups.with_label_values(&["hit"]).inc();
                return cached_answer(recording, &hit);
            }
            METRICS.cache_lookups.with_label_values(&["miss"]).inc();
        }
        let mut attempts = Attempts {
            providers: &self.providers,
            endpoint,
            query: uri.query().map(str::to_owned),
            headers: up_headers,
            passthrough,
            route,
            remaining: self.routing.max_attempts,
            key_id: &identity.key_id,
        };
        match attempts.run(plan, &mut recording).await {
            Ok(upstream) => self.respond(upstream, cache, recording),
            Err(e) => refuse(recording, e),
        }
    }

    /// The cache key and the freshness the route asks for, when the route
    /// caches this request (never on passthrough: an answer would cross
    /// credentials).
    fn cache_slot(
        &self,
        endpoint: Endpoint,
        identity: &Identity,
        route: &RouteConfig,
        plan: &Plan,
        up_headers: &HeaderMap,
    ) -> Option<([u8; 32], Duration)> {
        let c = route.cache.as_ref()?;
        if !c.enabled() || endpoint != Endpoint::Messages || identity.passthrough {
            return None;
        }
        let key = ResponseCache::key(endpoint.as_str(), &identity.team, &plan.parts(), up_headers);
        let max_age = Duration::from_secs(c.max_age.min(self.routing.cache_max_age_secs));
        Some((key, max_age))
    }

    /// The upstream answer, streamed to the client through the tee.
    fn respond(
        &self,
        upstream: ProviderResponse,
        cache: Option<([u8; 32], Duration)>,
        mut recording: Recording,
    ) -> Response {
        let status = upstream.status;
        let kind = recording.event_mut().provider.clone();
        for d in &upstream.downgrades {
            METRICS
                .downgrades
                .with_label_values(&[kind.as_str(), d.split(':').next().unwrap_or("other")])
                .inc();
        }
        let e = recording.event_mut();
        e.downgrades.extend(upstream.downgrades);
        e.status = status.as_u16();
        e.request_id = upstream
            .headers
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let content_type = upstream.headers.get(header::CONTENT_TYPE).cloned();
        let reader =
            AnswerReader::for_content_type(content_type.as_ref().and_then(|v| v.to_str().ok()));
        let mut out_headers = downstream_headers(&upstream.headers);
        // The body is re-framed here (chunked), so its length header goes.
        out_headers.remove(header::CONTENT_LENGTH);
        set_trace_header(&mut out_headers, recording.trace_id(), recording.event_id());
        if cache.is_some() {
            out_headers.insert("x-tollgate-cache", HeaderValue::from_static("miss"));
        }
        let capture = cache
            .filter(|_| status.is_success())
            .map(|(key, max_age)| Capture {
                cache: self.cache.clone(),
                key,
                max_age,
                content_type,
                body: bytes::BytesMut::new(),
            });
        let body =
            Body::from_stream(TeeBody::new(upstream.body, reader, recording).with_capture(capture));
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = out_headers;
        response
    }
}

/// Answers from the cache and records the hit.
fn cached_answer(mut recording: Recording, hit: &Cached) -> Response {
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
    response
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

/// The digest `repeat` guards compare: CRC-32 and length of the body, in
/// hex. Claude Code's bodies are ~100 KB, and CRC-32 reads them at many
/// GB/s where SHA-256 would cost a good part of a millisecond; a
/// collision can only make a client's own session look repetitive.
fn body_digest(body: &[u8]) -> String {
    format!("{:x}-{:08x}", body.len(), crc32fast::hash(body))
}
