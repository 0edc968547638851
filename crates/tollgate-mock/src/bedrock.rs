//! Amazon Bedrock's runtime API, mocked: it recomputes the SigV4
//! signature of every request from what it received (or checks the
//! Bedrock API key), checks the InvokeModel body rules, and answers with
//! Anthropic JSON or an AWS event-stream of Anthropic events.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::{HeaderMap, Method, StatusCode, Uri, header};

use crate::anthropic::{MockState, Scenario, USAGE_INPUT, USAGE_OUTPUT, answer_json, sse_events};
use crate::catalog;
use crate::eventstream;
use crate::sigv4::verify_sigv4;

/// A Bedrock-shaped error: `x-amzn-errortype` and `{"message"}`.
fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut r = (
        status,
        axum::Json(serde_json::json!({ "message": message })),
    )
        .into_response();
    if let Ok(v) = kind.parse() {
        r.headers_mut().insert("x-amzn-errortype", v);
    }
    r
}

/// `POST /model/{id}/{action}`: checks credentials, model ID and body as
/// Bedrock does, then answers `invoke`, `invoke-with-response-stream` or
/// `count-tokens`.
pub async fn invoke(
    State(s): State<Arc<MockState>>,
    Path((id, action)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.record(&method, &uri, &headers, &body);
    if let Err(message) = s.check_aws(&method, &uri, &headers, &body) {
        return error(
            StatusCode::FORBIDDEN,
            "UnrecognizedClientException",
            &message,
        );
    }
    let Some(model) = catalog::bedrock_model(&id) else {
        return error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "The provided model identifier is invalid.",
        );
    };
    let parsed: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            let message = format!("malformed input request: {e}");
            return error(StatusCode::BAD_REQUEST, "ValidationException", &message);
        }
    };
    if action == "count-tokens" {
        return count_tokens(&parsed);
    }
    if let Some(problem) = body_problem(&parsed) {
        return error(StatusCode::BAD_REQUEST, "ValidationException", &problem);
    }
    if let Scenario::Error(status) = Scenario::parse(&s.scenario(&headers)) {
        return scripted_error(status);
    }
    match action.as_str() {
        "invoke" => answer_json(model, &body),
        "invoke-with-response-stream" => event_stream_answer(model, &body),
        other => error(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            &format!("unknown operation {other}"),
        ),
    }
}

/// `count-tokens`: the InvokeModel body comes base64-encoded inside
/// `input.invokeModel.body`; a rough count (a token per four bytes).
fn count_tokens(parsed: &serde_json::Value) -> Response {
    use base64::Engine;
    let Some(b64) = parsed
        .pointer("/input/invokeModel/body")
        .and_then(|b| b.as_str())
    else {
        let message = "input.invokeModel.body is required";
        return error(StatusCode::BAD_REQUEST, "ValidationException", message);
    };
    let Ok(inner) = base64::engine::general_purpose::STANDARD.decode(b64) else {
        let message = "input.invokeModel.body is not base64";
        return error(StatusCode::BAD_REQUEST, "ValidationException", message);
    };
    axum::Json(serde_json::json!({ "inputTokens": inner.len() / 4 })).into_response()
}

/// The error a scenario asks for, as Bedrock names it.
fn scripted_error(status: u16) -> Response {
    match status {
        429 => error(
            StatusCode::TOO_MANY_REQUESTS,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        ),
        503 | 529 => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            "Bedrock is unable to process your request.",
        ),
        other => error(
            StatusCode::from_u16(other).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "InternalServerException",
            "mock scripted error",
        ),
    }
}

/// A streamed answer: each Anthropic event as an event-stream `chunk`,
/// the last one carrying Bedrock's invocation metrics.
fn event_stream_answer(model: &str, request_body: &[u8]) -> Response {
    let frames: Vec<Bytes> = sse_events(model, request_body)
        .iter()
        .filter_map(|e| {
            e.split_once("\ndata: ")
                .map(|(_, d)| d.trim_end().to_owned())
        })
        .map(|data| {
            let mut v: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
            if v["type"] == "message_stop" {
                v["amazon-bedrock-invocationMetrics"] = serde_json::json!({
                    "inputTokenCount": USAGE_INPUT, "outputTokenCount": USAGE_OUTPUT,
                    "invocationLatency": 120, "firstByteLatency": 40});
            }
            eventstream::chunk(v.to_string().as_bytes())
        })
        .collect();
    let body = Body::from_stream(futures::stream::iter(frames).map(Ok::<Bytes, std::io::Error>));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/vnd.amazon.eventstream")
        .header("x-amzn-requestid", "mock-bedrock-request")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// What Bedrock refuses in an InvokeModel body for Anthropic models.
fn body_problem(v: &serde_json::Value) -> Option<String> {
    if v["anthropic_version"] != "bedrock-2023-05-31" {
        return Some("anthropic_version: must be bedrock-2023-05-31".into());
    }
    if v.get("model").is_some() {
        return Some("extraneous key [model] is not permitted".into());
    }
    if v.get("stream").is_some() {
        return Some("extraneous key [stream] is not permitted".into());
    }
    if v["max_tokens"].as_u64().is_none() {
        return Some("max_tokens: required".into());
    }
    if let Some(betas) = v.get("anthropic_beta") {
        let Some(list) = betas.as_array() else {
            return Some("anthropic_beta: must be an array".into());
        };
        for b in list {
            let Some(b) = b.as_str() else {
                return Some("anthropic_beta: must be strings".into());
            };
            if !catalog::bedrock_accepts_beta(b) {
                return Some(format!("invalid beta flag {b}"));
            }
        }
    }
    None
}

impl MockState {
    /// Checks the request's AWS credentials: the Bedrock API key, or a
    /// SigV4 signature recomputed from the received method, URL, signed
    /// headers and body with the mock's secret.
    fn check_aws(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), String> {
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if let Some(token) = &self.options.bedrock_bearer
            && auth == format!("Bearer {token}")
        {
            return Ok(());
        }
        let Some((access, secret)) = &self.options.aws else {
            return if self.options.bedrock_bearer.is_some() {
                Err("invalid Bedrock API key".into())
            } else {
                Ok(())
            };
        };
        verify_sigv4(
            method.as_str(),
            &format!(
                "http://{}{}",
                headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or(""),
                uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
            ),
            headers,
            body,
            access,
            secret,
        )
        .map_err(|e| e.to_string())
    }
}
