//! Claude Code in Bedrock or Vertex mode, pointed at tollgate: the shapes
//! of those APIs on the way in, translated to Anthropic Messages so the
//! request is admitted, routed (to whichever provider the key names) and
//! recorded like any other, and the answer translated back.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use serde_json::Value;

use super::Gateway;
use super::error::GatewayError;
use crate::providers::Endpoint;
use crate::providers::error_types::status_for_error_type;
use crate::providers::eventstream::{chunk_frame, exception_frame, status_exception};
use crate::providers::translate::{anthropic_name, body_object};

/// The API shape a client spoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Anthropic,
    /// `POST /model/{id}/invoke[-with-response-stream]`.
    Bedrock {
        model_id: String,
        stream: bool,
    },
    /// `…/models/{model}:rawPredict|:streamRawPredict` (or count-tokens).
    Vertex {
        model: String,
    },
}

impl Inbound {
    /// The event's `endpoint` for this shape, if not the Anthropic one.
    pub fn endpoint_name(&self) -> Option<&'static str> {
        match self {
            Inbound::Anthropic => None,
            Inbound::Bedrock { .. } => Some("bedrock_invoke"),
            Inbound::Vertex { .. } => Some("vertex_raw_predict"),
        }
    }

    /// The client's body as an Anthropic Messages body; betas the Bedrock
    /// body carried move into the `anthropic-beta` header.
    pub fn to_anthropic(
        &self,
        body: Bytes,
        headers: &mut HeaderMap,
    ) -> Result<Bytes, GatewayError> {
        let (model, stream) = match self {
            Inbound::Anthropic => return Ok(body),
            Inbound::Bedrock { model_id, stream } => (anthropic_name(model_id), Some(*stream)),
            Inbound::Vertex { model } => (anthropic_name(model), None),
        };
        let mut map = body_object(&body).map_err(GatewayError::BadJson)?;
        map.remove("anthropic_version");
        if let Some(Value::Array(betas)) = map.remove("anthropic_beta") {
            let mut flags: Vec<String> = headers
                .get_all("anthropic-beta")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|f| f.trim().to_owned())
                .filter(|f| !f.is_empty())
                .collect();
            for b in betas.iter().filter_map(|b| b.as_str()) {
                if !flags.iter().any(|f| f == b) {
                    flags.push(b.to_owned());
                }
            }
            headers.remove("anthropic-beta");
            if let Ok(v) = HeaderValue::from_str(&flags.join(",")) {
                headers.insert("anthropic-beta", v);
            }
        }
        if !map.contains_key("model") {
            map.insert("model".into(), Value::String(model));
        }
        if let Some(stream) = stream {
            map.insert("stream".into(), Value::Bool(stream));
        }
        if !headers.contains_key("anthropic-version") {
            headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        }
        serde_json::to_vec(&Value::Object(map))
            .map(Bytes::from)
            .map_err(|e| GatewayError::BadJson(e.to_string()))
    }

    /// The answer in the client's shape: a Bedrock stream as event-stream
    /// chunks, Bedrock errors with `x-amzn-errortype`; Vertex answers are
    /// Anthropic's already.
    pub fn adapt(&self, response: Response) -> Response {
        let Inbound::Bedrock { stream, .. } = self else {
            return response;
        };
        let status = response.status();
        if !status.is_success() {
            return bedrock_error(response);
        }
        if !*stream {
            return response;
        }
        let (mut parts, body) = response.into_parts();
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.amazon.eventstream"),
        );
        parts.headers.remove(header::CONTENT_LENGTH);
        let mut sse = SseSplitter::default();
        let frames = body.into_data_stream().map(move |chunk| {
            chunk.map(|bytes| {
                let mut out = BytesMut::new();
                for (event, data) in sse.feed(&bytes) {
                    if event == "error" {
                        let v: Value = serde_json::from_slice(&data).unwrap_or_default();
                        let kind = status_exception(error_status(&v));
                        out.extend_from_slice(&exception_frame(
                            kind,
                            v["error"]["message"].as_str().unwrap_or("error"),
                        ));
                    } else if event != "ping" {
                        out.extend_from_slice(&chunk_frame(&data));
                    }
                }
                out.freeze()
            })
        });
        Response::from_parts(parts, Body::from_stream(frames))
    }
}

/// The HTTP status an Anthropic error answer's type stands for.
fn error_status(v: &Value) -> u16 {
    status_for_error_type(v["error"]["type"].as_str().unwrap_or(""))
}

/// An Anthropic-shaped error answer re-shaped as Bedrock's.
fn bedrock_error(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let kind = status_exception(parts.status.as_u16());
    let mapped = Body::from_stream(futures::stream::once(async move {
        let bytes = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let message = v["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        Ok::<Bytes, std::io::Error>(Bytes::from(
            serde_json::json!({ "message": message }).to_string(),
        ))
    }));
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(kind) {
        parts.headers.insert("x-amzn-errortype", v);
    }
    Response::from_parts(parts, mapped)
}

/// Splits an SSE byte stream into `(event name, data)` pairs.
#[derive(Default)]
struct SseSplitter {
    pending: Vec<u8>,
}

impl SseSplitter {
    fn feed(&mut self, chunk: &[u8]) -> Vec<(String, Vec<u8>)> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = find(&self.pending, b"\n\n") {
            let block: Vec<u8> = self.pending.drain(..end + 2).collect();
            let mut event = String::new();
            let mut data = Vec::new();
            for line in block.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if let Some(v) = line.strip_prefix(b"event:") {
                    event = String::from_utf8_lossy(v).trim().to_owned();
                } else if let Some(v) = line.strip_prefix(b"data:") {
                    data.extend_from_slice(v.strip_prefix(b" ").unwrap_or(v));
                }
            }
            if !data.is_empty() {
                out.push((event, data));
            }
        }
        out
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// `POST /model/{id}/{action}`: Bedrock's InvokeModel operations.
pub async fn bedrock(
    State(gw): State<Arc<Gateway>>,
    Path((model_id, action)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (endpoint, stream) = match action.as_str() {
        "invoke" => (Endpoint::Messages, false),
        "invoke-with-response-stream" => (Endpoint::Messages, true),
        "count-tokens" => (Endpoint::CountTokens, false),
        other => {
            let shape = Inbound::Bedrock {
                model_id,
                stream: false,
            };
            let e = GatewayError::BadHeader {
                header: "path",
                reason: format!(
                    "unknown Bedrock operation {other:?} (invoke, invoke-with-response-stream)"
                ),
            };
            return shape.adapt(e.into_response());
        }
    };
    let shape = Inbound::Bedrock { model_id, stream };
    let response = gw
        .forward(endpoint, shape.clone(), uri, headers, body)
        .await;
    shape.adapt(response)
}

/// `GET /inference-profiles`: the Bedrock model IDs tollgate knows.
pub async fn inference_profiles() -> Response {
    let ids = crate::providers::translate::bedrock_profiles();
    let summaries: Vec<Value> = ids
        .into_iter()
        .map(|id| serde_json::json!({"inferenceProfileId": id, "inferenceProfileName": id, "status": "ACTIVE", "type": "SYSTEM_DEFINED"}))
        .collect();
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({ "inferenceProfileSummaries": summaries })),
    )
        .into_response()
}

/// `POST /projects/{p}/locations/{r}/publishers/anthropic/models/{model}:{action}`.
pub async fn vertex(
    State(gw): State<Arc<Gateway>>,
    Path((_project, _location, model_action)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some((model, action)) = model_action.rsplit_once(':') else {
        let e = GatewayError::BadHeader {
            header: "path",
            reason: format!("{model_action:?} names no :rawPredict or :streamRawPredict"),
        };
        return e.into_response();
    };
    let endpoint = match (model, action) {
        ("count-tokens", "rawPredict") => Endpoint::CountTokens,
        (_, "rawPredict" | "streamRawPredict") => Endpoint::Messages,
        _ => {
            let e = GatewayError::BadHeader {
                header: "path",
                reason: format!("unknown Vertex action {action:?} (rawPredict, streamRawPredict)"),
            };
            return e.into_response();
        }
    };
    gw.forward(
        endpoint,
        Inbound::Vertex {
            model: model.to_owned(),
        },
        uri,
        headers,
        body,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bedrock_body_becomes_anthropic_with_betas_in_the_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "anthropic-beta",
            HeaderValue::from_static("claude-code-20250219"),
        );
        let shape = Inbound::Bedrock {
            model_id: "us.anthropic.claude-sonnet-4-5-20250929-v1:0".into(),
            stream: true,
        };
        let body = Bytes::from_static(br#"{"anthropic_version":"bedrock-2023-05-31","anthropic_beta":["interleaved-thinking-2025-05-14"],"max_tokens":5,"messages":[]}"#);
        let out: Value =
            serde_json::from_slice(&shape.to_anthropic(body, &mut headers).unwrap()).unwrap();
        assert_eq!(out["model"], "claude-sonnet-4-5-20250929");
        assert_eq!(out["stream"], true);
        assert!(out.get("anthropic_version").is_none() && out.get("anthropic_beta").is_none());
        assert_eq!(
            headers["anthropic-beta"],
            "claude-code-20250219,interleaved-thinking-2025-05-14"
        );
    }

    #[test]
    fn sse_splits_across_chunk_boundaries() {
        let mut s = SseSplitter::default();
        assert!(s.feed(b"event: ping\ndata: {\"type\"").is_empty());
        let out = s.feed(b":\"ping\"}\n\nevent: message_stop\ndata: {}\n\n");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, "ping");
        assert_eq!(out[1].1, b"{}");
    }
}
