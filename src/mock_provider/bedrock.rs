//! Amazon Bedrock's runtime API, mocked: it recomputes the SigV4
//! signature of every request from what it received (or checks the
//! Bedrock API key), checks the InvokeModel body rules, and answers with
//! Anthropic JSON or an AWS event-stream of Anthropic events.

use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::{HeaderMap, Method, StatusCode, Uri, header};

use super::anthropic::{MockState, Scenario, answer_json, sse_events};
use crate::providers::eventstream;
use crate::providers::translate::anthropic_name;

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

/// `POST /model/{id}/{action}`.
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
    let parsed: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                &format!("malformed input request: {e}"),
            );
        }
    };
    if action == "count-tokens" {
        let Some(b64) = parsed
            .pointer("/input/invokeModel/body")
            .and_then(|b| b.as_str())
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                "input.invokeModel.body is required",
            );
        };
        use base64::Engine;
        let Ok(inner) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            return error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                "input.invokeModel.body is not base64",
            );
        };
        return axum::Json(serde_json::json!({ "inputTokens": inner.len() / 4 })).into_response();
    }
    if let Some(problem) = body_problem(&parsed) {
        return error(StatusCode::BAD_REQUEST, "ValidationException", &problem);
    }
    let model = anthropic_name(&id);
    match Scenario::parse(&s.scenario(&headers)) {
        Scenario::Error(429) => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "ThrottlingException",
                "Too many requests, please wait before trying again.",
            );
        }
        Scenario::Error(529) | Scenario::Error(503) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
                "Bedrock is unable to process your request.",
            );
        }
        Scenario::Error(status) => {
            return error(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "InternalServerException",
                "mock scripted error",
            );
        }
        _ => {}
    }
    match action.as_str() {
        "invoke" => answer_json(&model, &body),
        "invoke-with-response-stream" => {
            let frames: Vec<Bytes> = sse_events(&model, &body)
                .iter()
                .filter_map(|e| e.split_once("\ndata: ").map(|(_, d)| d.trim_end().to_owned()))
                .map(|data| {
                    let mut v: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
                    if v["type"] == "message_stop" {
                        v["amazon-bedrock-invocationMetrics"] = serde_json::json!({
                            "inputTokenCount": super::anthropic::USAGE_INPUT, "outputTokenCount": super::anthropic::USAGE_OUTPUT,
                            "invocationLatency": 120, "firstByteLatency": 40});
                    }
                    eventstream::chunk_frame(v.to_string().as_bytes())
                })
                .collect();
            let body =
                Body::from_stream(futures::stream::iter(frames).map(Ok::<Bytes, std::io::Error>));
            Response::builder()
                .header(header::CONTENT_TYPE, "application/vnd.amazon.eventstream")
                .header("x-amzn-requestid", "mock-bedrock-request")
                .body(body)
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        other => error(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            &format!("unknown operation {other}"),
        ),
    }
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
            if !crate::providers::translate::Dialect::new(
                crate::providers::translate::Family::Bedrock,
                &mock_cfg(),
            )
            .filter_betas(std::iter::once(b))
            .1
            .is_empty()
            {
                return Some(format!("invalid beta flag {b}"));
            }
        }
    }
    None
}

fn mock_cfg() -> crate::config::ProviderConfig {
    toml::from_str("kind = \"bedrock\"").expect("static config")
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
        if let Some(token) = &self.options.bedrock_bearer {
            if auth == format!("Bearer {token}") {
                return Ok(());
            }
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
    }
}

/// Recomputes a SigV4 signature as AWS does and compares it with the one
/// in `Authorization`; the error says what did not match.
pub fn verify_sigv4(
    method: &str,
    url: &str,
    headers: &HeaderMap,
    body: &[u8],
    access: &str,
    secret: &str,
) -> Result<(), String> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("no Authorization header")?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not an AWS4-HMAC-SHA256 signature")?;
    let field = |name: &str| {
        rest.split(", ")
            .find_map(|p| p.strip_prefix(name))
            .map(str::to_owned)
    };
    let credential = field("Credential=").ok_or("no Credential")?;
    let signed = field("SignedHeaders=").ok_or("no SignedHeaders")?;
    let signature = field("Signature=").ok_or("no Signature")?;
    let mut scope = credential.split('/');
    let (key_id, _date, region, service) = (
        scope.next().unwrap_or(""),
        scope.next().unwrap_or(""),
        scope.next().unwrap_or(""),
        scope.next().unwrap_or(""),
    );
    if key_id != access {
        return Err(format!("unknown access key {key_id}"));
    }
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or("no x-amz-date")?;
    let time = chrono::NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| "bad x-amz-date")?
        .and_utc();
    let names: Vec<&str> = signed.split(';').collect();
    let pairs: Vec<(&str, &str)> = names
        .iter()
        .filter(|n| {
            **n != "host"
                && **n != "x-amz-date"
                && **n != "x-amz-security-token"
                && **n != "x-amz-content-sha256"
        })
        .filter_map(|n| {
            headers
                .get(*n)
                .and_then(|v| v.to_str().ok())
                .map(|v| (*n, v))
        })
        .collect();
    let token = headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let identity = Credentials::new(access, secret, token, None, "mock").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::from(time))
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(method, url, pairs.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| e.to_string())?;
    let (_, expected) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    if expected == signature {
        Ok(())
    } else {
        Err(format!(
            "SignatureDoesNotMatch: expected {expected}, got {signature}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published SigV4 test suite, case `get-vanilla`.
    #[test]
    fn sigv4_verifier_accepts_the_aws_get_vanilla_test_vector() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        headers.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31".parse().unwrap(),
        );
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        verify_sigv4(
            "GET",
            "https://example.amazonaws.com/",
            &headers,
            b"",
            "AKIDEXAMPLE",
            secret,
        )
        .unwrap();
        // One byte of the body changed: the signature no longer matches.
        let err = verify_sigv4(
            "GET",
            "https://example.amazonaws.com/",
            &headers,
            b"x",
            "AKIDEXAMPLE",
            secret,
        )
        .unwrap_err();
        assert!(err.contains("SignatureDoesNotMatch"), "{err}");
    }
}
