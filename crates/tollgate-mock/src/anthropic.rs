//! The Anthropic Messages API, mocked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use http::{HeaderMap, Method, StatusCode, Uri, header};

use crate::{MockOptions, ReceivedRequest, record};

/// The mock's shared state: its options, what it received and the
/// Vertex access tokens it issued.
pub struct MockState {
    pub options: MockOptions,
    pub received: Arc<Mutex<Vec<ReceivedRequest>>>,
    /// Access tokens the mock OAuth endpoint issued (Vertex).
    pub tokens: Mutex<Vec<String>>,
}

/// Usage every mocked answer reports: every token class present, so tests
/// see each one travel to the lake.
pub const USAGE_INPUT: u64 = 42;
pub const USAGE_OUTPUT: u64 = 17;
pub const USAGE_CACHE_5M: u64 = 100;
pub const USAGE_CACHE_1H: u64 = 200;
pub const USAGE_CACHE_READ: u64 = 1000;

/// The mock's routes: Anthropic, Bedrock runtime, Vertex AI and its
/// OAuth token endpoint, on one server.
pub fn router(state: Arc<MockState>) -> Router {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/model/{id}/{action}", post(crate::bedrock::invoke))
        .route("/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model_action}", post(crate::vertex::predict))
        .route("/token", post(crate::vertex::token))
        .with_state(state)
}

/// `POST /v1/messages`: checks the request as Anthropic does, then plays
/// the scenario it names.
async fn messages(
    State(s): State<Arc<MockState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = s.check(&method, &uri, &headers, &body) {
        return refusal;
    }
    let parsed: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("invalid JSON: {e}"),
            );
        }
    };
    let Some(model) = parsed
        .get("model")
        .and_then(|m| m.as_str())
        .map(str::to_owned)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "model: Field required",
        );
    };
    if parsed.get("max_tokens").and_then(|m| m.as_u64()).is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "max_tokens: Field required",
        );
    }
    let stream = parsed
        .get("stream")
        .and_then(|s| s.as_bool())
        .unwrap_or(false);
    let scenario = s.scenario(&headers);
    match Scenario::parse(&scenario) {
        Scenario::Error(status) => scripted_error(status),
        Scenario::RetryAfter(value) => {
            let mut r = scripted_error(429);
            match value.parse() {
                Ok(v) => {
                    r.headers_mut().insert("retry-after", v);
                }
                Err(_) => return r,
            }
            r
        }
        Scenario::Delay(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            answer(&model, stream, &body, 0, false, USAGE_OUTPUT)
        }
        Scenario::SlowStream(ms) => answer(&model, stream, &body, ms, false, USAGE_OUTPUT),
        Scenario::Cut => answer(&model, stream, &body, 0, true, USAGE_OUTPUT),
        Scenario::Ok => answer(&model, stream, &body, 0, false, USAGE_OUTPUT),
        Scenario::Output(n) => answer(&model, stream, &body, 0, false, n),
    }
}

/// `POST /v1/messages/count_tokens`: a rough count (a token per four
/// bytes), enough for tollgate to pass it through.
async fn count_tokens(
    State(s): State<Arc<MockState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = s.check(&method, &uri, &headers, &body) {
        return refusal;
    }
    if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid JSON",
        );
    }
    let n = body.len() / 4;
    axum::Json(serde_json::json!({ "input_tokens": n })).into_response()
}

impl MockState {
    /// Keeps a copy of the request when recording.
    pub(crate) fn record(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) {
        if self.options.record {
            record(
                &self.received,
                ReceivedRequest {
                    method: method.to_string(),
                    path_and_query: uri
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().to_owned(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect(),
                    body: body.clone(),
                },
            );
        }
    }

    /// Records the request and checks what the real API checks first.
    fn check(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Option<Response> {
        self.record(method, uri, headers, body);
        let o = &self.options;
        if o.api_key.is_some() || !o.credentials.is_empty() {
            let bearer = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let key = headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .or(bearer);
            let accepted = key.is_some_and(|k| {
                o.api_key.as_deref() == Some(k) || o.credentials.iter().any(|c| c == k)
            });
            if !accepted {
                return Some(error(
                    StatusCode::UNAUTHORIZED,
                    "authentication_error",
                    "invalid x-api-key",
                ));
            }
        }
        if !headers.contains_key("anthropic-version") {
            return Some(error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "anthropic-version: header is required",
            ));
        }
        None
    }

    /// The scenario the request names (`x-mock-scenario`), else the
    /// server's default, else none.
    pub(crate) fn scenario(&self, headers: &HeaderMap) -> String {
        headers
            .get("x-mock-scenario")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| self.options.default_scenario.clone())
            .unwrap_or_default()
    }
}

/// What a request asks the mock to do.
pub(crate) enum Scenario {
    Ok,
    /// Answer with this error status (`error:529`).
    Error(u16),
    /// Wait before answering (`delay:20`).
    Delay(u64),
    /// Stream with a pause between events (`slow-stream:200`).
    SlowStream(u64),
    /// Break the stream after the first delta, without `message_stop`.
    Cut,
    /// A 429 whose `retry-after` is this text (`retry-after:nan`).
    RetryAfter(String),
    /// An answer reporting this many output tokens (`output:20000`): budget tests need answers of a chosen cost.
    Output(u64),
}

impl Scenario {
    /// Reads a scenario name; anything unknown is a plain answer.
    pub(crate) fn parse(s: &str) -> Scenario {
        match s.split_once(':') {
            Some(("error", v)) => v.parse().map(Scenario::Error).unwrap_or(Scenario::Ok),
            Some(("delay", v)) => v.parse().map(Scenario::Delay).unwrap_or(Scenario::Ok),
            Some(("slow-stream", v)) => v.parse().map(Scenario::SlowStream).unwrap_or(Scenario::Ok),
            Some(("retry-after", v)) => Scenario::RetryAfter(v.to_owned()),
            Some(("output", v)) => v.parse().map(Scenario::Output).unwrap_or(Scenario::Ok),
            _ if s == "cut" => Scenario::Cut,
            _ => Scenario::Ok,
        }
    }
}

/// Anthropic's error type for each HTTP status it answers errors with,
/// as its API documentation lists them; written here, not taken from
/// tollgate, so tollgate's own mapping is checked against it.
const ERROR_TYPES: &[(u16, &str)] = &[
    (400, "invalid_request_error"),
    (401, "authentication_error"),
    (403, "permission_error"),
    (404, "not_found_error"),
    (413, "request_too_large"),
    (429, "rate_limit_error"),
    (500, "api_error"),
    (503, "overloaded_error"),
    (529, "overloaded_error"),
];

/// The error type Anthropic answers `status` with (`api_error` for a
/// status it does not document).
pub fn error_type(status: u16) -> &'static str {
    ERROR_TYPES
        .iter()
        .find(|(s, _)| *s == status)
        .map_or("api_error", |(_, t)| t)
}

/// An Anthropic-shaped error.
fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({"type": "error", "error": {"type": kind, "message": message}});
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut().insert(
        "request-id",
        "req_mock_error".parse().expect("static header"),
    );
    r
}

/// The error a scenario asks for, shaped as Anthropic shapes it (with
/// `retry-after` on a 429, as Anthropic sends one).
pub(crate) fn scripted_error(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = error_type(status.as_u16());
    let mut r = error(status, kind, &format!("mock scripted {kind}"));
    if status == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut()
            .insert("retry-after", "1".parse().expect("static header"));
    }
    r
}

/// The text of every mocked answer.
const TEXT: &str = "Hello from the mock provider.";

/// The `usage` object of an answer, every token class present.
fn usage_json(output_tokens: u64) -> serde_json::Value {
    serde_json::json!({
        "input_tokens": USAGE_INPUT,
        "cache_creation_input_tokens": USAGE_CACHE_5M + USAGE_CACHE_1H,
        "cache_read_input_tokens": USAGE_CACHE_READ,
        "cache_creation": {
            "ephemeral_5m_input_tokens": USAGE_CACHE_5M,
            "ephemeral_1h_input_tokens": USAGE_CACHE_1H
        },
        "output_tokens": output_tokens,
        "service_tier": "standard"
    })
}

/// A message id derived from the request body, so the same request gets
/// byte-identical answers (tests compare answers with and without tollgate).
fn message_id(request_body: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(request_body);
    format!("msg_mock_{}", hex::encode(&digest[..12]))
}

/// The SSE events of one answer, in Anthropic's exact framing.
pub fn sse_events(model: &str, request_body: &[u8]) -> Vec<String> {
    sse_events_with(model, request_body, USAGE_OUTPUT)
}

/// The SSE events of one answer reporting `output_tokens` of output.
fn sse_events_with(model: &str, request_body: &[u8], output_tokens: u64) -> Vec<String> {
    let id = message_id(request_body);
    let start = serde_json::json!({"type": "message_start", "message": {
        "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null, "usage": usage_json(1)}});
    let delta = serde_json::json!({"type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": output_tokens}});
    let (first, rest) = TEXT.split_at(5);
    let text_delta = |t: &str| {
        serde_json::json!({"type": "content_block_delta", "index": 0,
        "delta": {"type": "text_delta", "text": t}})
    };
    let frame = |event: &str, data: serde_json::Value| format!("event: {event}\ndata: {data}\n\n");
    vec![
        frame("message_start", start),
        frame(
            "content_block_start",
            serde_json::json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        frame("ping", serde_json::json!({"type": "ping"})),
        frame("content_block_delta", text_delta(first)),
        frame("content_block_delta", text_delta(rest)),
        frame(
            "content_block_stop",
            serde_json::json!({"type": "content_block_stop", "index": 0}),
        ),
        frame("message_delta", delta),
        frame("message_stop", serde_json::json!({"type": "message_stop"})),
    ]
}

/// A whole (non-streaming) Messages answer.
pub(crate) fn answer_json(model: &str, request_body: &[u8]) -> Response {
    answer_json_with(model, request_body, USAGE_OUTPUT)
}

/// A whole Messages answer reporting `output_tokens` of output.
fn answer_json_with(model: &str, request_body: &[u8], output_tokens: u64) -> Response {
    let body = serde_json::json!({
        "id": message_id(request_body),
        "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": TEXT}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": usage_json(output_tokens),
    });
    let mut r = axum::Json(body).into_response();
    r.headers_mut().insert(
        "request-id",
        "req_mock_json".parse().expect("static header"),
    );
    r
}

/// A Messages answer, streamed (with `pause_ms` between events, or cut
/// after the first delta) or whole.
pub(crate) fn answer(
    model: &str,
    stream: bool,
    request_body: &[u8],
    pause_ms: u64,
    cut: bool,
    output_tokens: u64,
) -> Response {
    if !stream {
        return answer_json_with(model, request_body, output_tokens);
    }
    let mut events = sse_events_with(model, request_body, output_tokens);
    if cut {
        events.truncate(4);
    }
    let chunks =
        futures::stream::iter(events.into_iter().enumerate()).then(move |(i, e)| async move {
            if pause_ms > 0 && i > 0 {
                tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            }
            Ok::<Bytes, std::io::Error>(Bytes::from(e))
        });
    let body = if cut {
        let broken = futures::stream::once(async {
            // Let the head and the first events reach the client first.
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "mock cut the stream",
            ))
        });
        Body::from_stream(chunks.chain(broken))
    } else {
        Body::from_stream(chunks)
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("request-id", "req_mock_stream")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_follow_anthropics_documented_statuses() {
        assert_eq!(error_type(529), "overloaded_error");
        assert_eq!(error_type(503), "overloaded_error");
        assert_eq!(error_type(429), "rate_limit_error");
        assert_eq!(error_type(502), "api_error", "an undocumented status");
    }

    #[test]
    fn scenarios_parse_and_unknown_ones_answer_normally() {
        assert!(matches!(Scenario::parse("error:529"), Scenario::Error(529)));
        assert!(matches!(Scenario::parse("delay:20"), Scenario::Delay(20)));
        assert!(matches!(Scenario::parse("cut"), Scenario::Cut));
        assert!(matches!(
            Scenario::parse("output:20000"),
            Scenario::Output(20000)
        ));
        assert!(matches!(Scenario::parse("error:x"), Scenario::Ok));
        assert!(matches!(Scenario::parse("dance"), Scenario::Ok));
    }
}
