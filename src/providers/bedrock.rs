//! Amazon Bedrock: Anthropic Messages translated to InvokeModel /
//! InvokeModelWithResponseStream, signed with SigV4 (or a Bedrock API key),
//! and the event-stream answer turned back into Anthropic SSE, with `ping`
//! events while Bedrock is silent so clients do not give up on a long
//! think.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::Value;

use super::eventstream::{self, Decoder};
use super::translate::{Dialect, Family, body_object};
use super::{
    BodyStream, Endpoint, Provider, ProviderError, ProviderRequest, ProviderResponse, json_answer,
};
use crate::config::ProviderConfig;

/// How long Bedrock may be silent before a `ping` goes to the client.
const PING_AFTER: Duration = Duration::from_secs(10);
/// The body's `anthropic_version` Bedrock requires.
const BEDROCK_VERSION: &str = "bedrock-2023-05-31";

/// How tollgate proves itself to Bedrock.
enum Auth {
    SigV4 { credentials: Credentials },
    Bearer(HeaderValue),
}

/// A configured Bedrock target.
pub struct Bedrock {
    target: String,
    base_url: String,
    region: String,
    auth: Auth,
    dialect: Dialect,
    client: reqwest::Client,
}

impl Bedrock {
    pub fn new(target: &str, cfg: &ProviderConfig, client: reqwest::Client) -> Bedrock {
        let base_url = if cfg.base_url.is_empty() {
            format!("https://bedrock-runtime.{}.amazonaws.com", cfg.region)
        } else {
            cfg.base_url.trim_end_matches('/').to_owned()
        };
        let auth = if !cfg.bearer_token.is_empty() {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", cfg.bearer_token))
                .unwrap_or(HeaderValue::from_static(""));
            v.set_sensitive(true);
            Auth::Bearer(v)
        } else {
            let token = (!cfg.session_token.is_empty()).then(|| cfg.session_token.clone());
            Auth::SigV4 {
                credentials: Credentials::new(
                    &cfg.access_key_id,
                    &cfg.secret_access_key,
                    token,
                    None,
                    "tollgate-config",
                ),
            }
        };
        Bedrock {
            target: target.to_owned(),
            base_url,
            region: cfg.region.clone(),
            auth,
            dialect: Dialect::new(Family::Bedrock, cfg),
            client,
        }
    }

    /// The InvokeModel body: no `model` or `stream`, Bedrock's version,
    /// accepted betas as an array. Returns (model ID, stream?, body,
    /// downgrades).
    fn translate(
        &self,
        request: &ProviderRequest,
    ) -> Result<(String, bool, Vec<u8>, Vec<String>), String> {
        let mut body = body_object(&request.body)?;
        let model = match body.remove("model") {
            Some(Value::String(m)) => m,
            _ => return Err("the request has no \"model\"".into()),
        };
        let stream = matches!(body.remove("stream"), Some(Value::Bool(true)));
        body.insert(
            "anthropic_version".into(),
            Value::String(BEDROCK_VERSION.into()),
        );
        let header_betas = request
            .headers
            .get_all("anthropic-beta")
            .iter()
            .filter_map(|v| v.to_str().ok());
        let (betas, downgrades) = self.dialect.filter_betas(header_betas);
        if !betas.is_empty() {
            body.insert("anthropic_beta".into(), Value::from(betas));
        }
        let bytes = serde_json::to_vec(&Value::Object(body)).map_err(|e| e.to_string())?;
        Ok((self.dialect.model_id(&model), stream, bytes, downgrades))
    }

    /// Signs (or authorises) a POST of `body` to `url`.
    fn authorise(&self, url: &str, body: &[u8]) -> Result<HeaderMap, ProviderError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        match &self.auth {
            Auth::Bearer(v) => {
                headers.insert(header::AUTHORIZATION, v.clone());
            }
            Auth::SigV4 { credentials } => {
                let identity = credentials.clone().into();
                let params = v4::SigningParams::builder()
                    .identity(&identity)
                    .region(&self.region)
                    .name("bedrock")
                    .time(SystemTime::now())
                    .settings(SigningSettings::default())
                    .build()
                    .map_err(|e| self.misconfigured(e.to_string()))?
                    .into();
                let pairs = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or("")));
                let signable = SignableRequest::new("POST", url, pairs, SignableBody::Bytes(body))
                    .map_err(|e| self.misconfigured(e.to_string()))?;
                let (instructions, _) = sign(signable, &params)
                    .map_err(|e| self.misconfigured(e.to_string()))?
                    .into_parts();
                for (name, value) in instructions.headers() {
                    let mut v = HeaderValue::from_str(value)
                        .map_err(|e| self.misconfigured(e.to_string()))?;
                    v.set_sensitive(
                        name.eq_ignore_ascii_case("authorization")
                            || name.eq_ignore_ascii_case("x-amz-security-token"),
                    );
                    headers.insert(
                        http::HeaderName::from_bytes(name.as_bytes())
                            .map_err(|e| self.misconfigured(e.to_string()))?,
                        v,
                    );
                }
            }
        }
        Ok(headers)
    }

    fn misconfigured(&self, message: String) -> ProviderError {
        ProviderError::Misconfigured {
            target: self.target.clone(),
            message,
        }
    }

    fn url(&self, model_id: &str, action: &str) -> String {
        // The ID's colon and slashes (ARNs) are path-encoded, as AWS SDKs do.
        let id = super::path_segment(model_id);
        format!("{}/model/{id}/{action}", self.base_url)
    }

    async fn post(&self, url: String, body: Vec<u8>) -> Result<reqwest::Response, ProviderError> {
        let headers = self.authorise(&url, &body)?;
        self.client
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| super::classify(&self.target, e, false))
    }
}

/// A Bedrock error answer as Anthropic's error shape, with the status
/// Anthropic would have used.
async fn error_answer(response: reqwest::Response, target: &str) -> ProviderResponse {
    let kind = response
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let status = response.status();
    let text = super::capped_text(response, super::MAX_ERROR_BODY, target)
        .await
        .unwrap_or_else(|e| format!("(the error answer could not be read: {e})"));
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            v["message"]
                .as_str()
                .or(v["Message"].as_str())
                .map(str::to_owned)
        })
        .unwrap_or(text);
    let (code, error_type) = if kind.is_empty() {
        (
            status.as_u16(),
            if status.as_u16() == 429 {
                "rate_limit_error"
            } else {
                "api_error"
            },
        )
    } else {
        eventstream::exception_status(&kind)
    };
    let name = kind.split(':').next().unwrap_or("").to_owned();
    let body = serde_json::json!({"type": "error", "error": {"type": error_type, "message": format!("bedrock ({target}) {name}: {message}")}});
    json_answer(
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
        Bytes::from(body.to_string()),
        Vec::new(),
    )
}

/// Bedrock's event-stream body as Anthropic SSE, with pings while silent.
fn sse_from_eventstream(upstream: reqwest::Response, target: String) -> BodyStream {
    let frames = upstream.bytes_stream();
    let stream = async_stream_sse(frames, target);
    Box::pin(stream)
}

fn async_stream_sse(
    frames: impl futures::Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    target: String,
) -> impl futures::Stream<Item = Result<Bytes, ProviderError>> + Send + 'static {
    struct State<S> {
        frames: std::pin::Pin<Box<S>>,
        decoder: Decoder,
        target: String,
        done: bool,
    }
    let state = State {
        frames: Box::pin(frames),
        decoder: Decoder::default(),
        target,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            match tokio::time::timeout(PING_AFTER, st.frames.next()).await {
                Err(_) => return Some((Ok(eventstream::sse("ping", br#"{"type": "ping"}"#)), st)),
                Ok(None) => return None,
                Ok(Some(Err(e))) => {
                    st.done = true;
                    return Some((Err(super::classify(&st.target, e, true)), st));
                }
                Ok(Some(Ok(chunk))) => {
                    let messages = match st.decoder.feed(&chunk) {
                        Ok(m) => m,
                        Err(message) => {
                            st.done = true;
                            return Some((
                                Err(ProviderError::Stream {
                                    target: st.target.clone(),
                                    message,
                                }),
                                st,
                            ));
                        }
                    };
                    let mut out = Vec::new();
                    for m in &messages {
                        match eventstream::message_to_sse(m) {
                            Ok(b) => out.extend_from_slice(&b),
                            Err(message) => {
                                st.done = true;
                                return Some((
                                    Err(ProviderError::Stream {
                                        target: st.target.clone(),
                                        message,
                                    }),
                                    st,
                                ));
                            }
                        }
                    }
                    if !out.is_empty() {
                        return Some((Ok(Bytes::from(out)), st));
                    }
                }
            }
        }
    })
}

#[async_trait::async_trait]
impl Provider for Bedrock {
    fn kind(&self) -> &'static str {
        "bedrock"
    }

    fn target(&self) -> &str {
        &self.target
    }

    async fn send(&self, request: ProviderRequest) -> Result<ProviderResponse, ProviderError> {
        if request.passthrough {
            return Err(super::passthrough_refused(&self.target));
        }
        let (model_id, stream, body, downgrades) = match self.translate(&request) {
            Ok(t) => t,
            Err(message) => return Ok(super::invalid_request(&message)),
        };
        if request.endpoint == Endpoint::CountTokens {
            // CountTokens takes the InvokeModel body, base64, minus fields
            // it does not count.
            let mut invoke = body_object(&body).unwrap_or_default();
            invoke.entry("max_tokens").or_insert(Value::from(1));
            let invoke = serde_json::to_vec(&Value::Object(invoke)).unwrap_or_default();
            let wrapped = serde_json::json!({"input": {"invokeModel": {"body": base64::engine::general_purpose::STANDARD.encode(invoke)}}});
            let response = self
                .post(
                    self.url(&model_id, "count-tokens"),
                    wrapped.to_string().into_bytes(),
                )
                .await?;
            if !response.status().is_success() {
                return Ok(error_answer(response, &self.target).await);
            }
            let text = super::capped_text(response, super::MAX_ERROR_BODY, &self.target).await?;
            let v: Value = serde_json::from_str(&text).map_err(|e| ProviderError::Stream {
                target: self.target.clone(),
                message: format!("count-tokens answer is not JSON: {e}"),
            })?;
            let n = v["inputTokens"].as_u64().unwrap_or(0);
            return Ok(json_answer(
                StatusCode::OK,
                Bytes::from(serde_json::json!({"input_tokens": n}).to_string()),
                downgrades,
            ));
        }
        let action = if stream {
            "invoke-with-response-stream"
        } else {
            "invoke"
        };
        let response = self.post(self.url(&model_id, action), body).await?;
        if !response.status().is_success() {
            return Ok(error_answer(response, &self.target).await);
        }
        let status = response.status();
        let mut headers = HeaderMap::new();
        if let Some(id) = response.headers().get("x-amzn-requestid") {
            headers.insert("request-id", id.clone());
        }
        if stream {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream; charset=utf-8"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            Ok(ProviderResponse {
                status,
                headers,
                body: sse_from_eventstream(response, self.target.clone()),
                downgrades,
            })
        } else {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let body = super::body_stream(response, &self.target);
            Ok(ProviderResponse {
                status,
                headers,
                body,
                downgrades,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bedrock() -> Bedrock {
        let cfg: ProviderConfig = toml::from_str("kind = \"bedrock\"\nregion = \"us-east-1\"\naccess_key_id = \"AKIDEXAMPLE\"\nsecret_access_key = \"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\"").unwrap();
        Bedrock::new("bedrock", &cfg, reqwest::Client::new())
    }

    #[test]
    fn messages_body_becomes_an_invoke_body_with_betas_in_the_body() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "anthropic-beta",
            HeaderValue::from_static(
                "claude-code-20250219,interleaved-thinking-2025-05-14,no-such-beta-2099",
            ),
        );
        let request = ProviderRequest {
            endpoint: Endpoint::Messages,
            query: None,
            headers,
            body: Bytes::from_static(
                br#"{"model":"claude-sonnet-4-5","stream":true,"max_tokens":5,"messages":[]}"#,
            ),
            passthrough: false,
        };
        let (model, stream, body, downgrades) = bedrock().translate(&request).unwrap();
        assert_eq!(model, "us.anthropic.claude-sonnet-4-5-20250929-v1:0");
        assert!(stream);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["anthropic_version"], "bedrock-2023-05-31");
        assert_eq!(
            v["anthropic_beta"],
            serde_json::json!(["claude-code-20250219", "interleaved-thinking-2025-05-14"])
        );
        assert!(v.get("model").is_none() && v.get("stream").is_none());
        assert_eq!(downgrades, ["anthropic-beta:no-such-beta-2099"]);
    }

    #[test]
    fn model_ids_are_path_encoded() {
        assert_eq!(
            bedrock().url("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "invoke"),
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
        );
    }

    #[tokio::test]
    async fn an_error_answer_is_read_only_up_to_the_cap() {
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(|| async {
                (StatusCode::INTERNAL_SERVER_ERROR, "x".repeat(10 << 20))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let response = reqwest::get(format!("http://{addr}/")).await.unwrap();
        let mut answer = error_answer(response, "bedrock").await;
        let body = futures::StreamExt::next(&mut answer.body)
            .await
            .unwrap()
            .unwrap();
        assert!(body.len() < 70 * 1024, "{} bytes", body.len());
        let v: Value = serde_json::from_slice(&body).unwrap();
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.ends_with("cut at 65536 bytes: longer than tollgate reads]"));
    }

    #[test]
    fn sigv4_headers_are_added() {
        let h = bedrock()
            .authorise(
                "https://bedrock-runtime.us-east-1.amazonaws.com/model/x/invoke",
                b"{}",
            )
            .unwrap();
        let auth = h["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(auth.contains("/us-east-1/bedrock/aws4_request"), "{auth}");
        assert!(h.contains_key("x-amz-date"));
    }
}
