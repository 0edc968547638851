//! Google Vertex AI, mocked: an OAuth token endpoint that checks the
//! service account's RS256 JWT (signature and claims) before it issues an
//! access token, and rawPredict / streamRawPredict that accept only tokens
//! it issued and Vertex's body rules, answering like Anthropic.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, Uri, header};

use crate::anthropic::{MockState, Scenario, USAGE_OUTPUT, answer, scripted_error};
use crate::catalog;

/// The claims of a service account's token request, as Google reads them.
#[derive(Debug, serde::Deserialize)]
pub struct Claims {
    pub iss: String,
    pub scope: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}

/// Why a token request's JWT was refused.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("the service account's public key is not an RSA PEM: {0}")]
    Key(jsonwebtoken::errors::Error),
    #[error("invalid JWT: {0}")]
    Invalid(jsonwebtoken::errors::Error),
    #[error("scope {0} is not cloud-platform")]
    Scope(String),
    #[error("token lifetime over one hour")]
    Lifetime,
}

/// Google's error shape.
fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({"error": {"code": status.as_u16(), "message": message, "status": status.canonical_reason().unwrap_or("")}});
    (status, axum::Json(body)).into_response()
}

/// `POST /token`: the JWT-bearer grant.
pub async fn token(
    State(s): State<Arc<MockState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.record(&Method::POST, &uri, &headers, &body);
    let Some(public_pem) = &s.options.google_public_key_pem else {
        return error(StatusCode::NOT_FOUND, "this mock has no service account");
    };
    let form: Vec<(String, String)> = url_form(&body);
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if get("grant_type") != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    let Some(assertion) = get("assertion") else {
        return (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({"error": "invalid_request", "error_description": "no assertion"}))).into_response();
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let audience = format!("http://{host}/token");
    match verify_jwt(assertion, public_pem, &audience) {
        Ok(claims) => {
            let token = format!("ya29.mock-{}", uuid::Uuid::new_v4().simple());
            s.tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(token.clone());
            tracing::debug!(iss = %claims.iss, "mock issued an access token");
            axum::Json(serde_json::json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(
                serde_json::json!({"error": "invalid_grant", "error_description": e.to_string()}),
            ),
        )
            .into_response(),
    }
}

/// Checks an RS256 service-account JWT: signature, audience, scope, and a
/// lifetime of at most an hour.
pub fn verify_jwt(assertion: &str, public_pem: &str, audience: &str) -> Result<Claims, JwtError> {
    let key =
        jsonwebtoken::DecodingKey::from_rsa_pem(public_pem.as_bytes()).map_err(JwtError::Key)?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    let data =
        jsonwebtoken::decode::<Claims>(assertion, &key, &validation).map_err(JwtError::Invalid)?;
    let c = data.claims;
    if c.scope != "https://www.googleapis.com/auth/cloud-platform" {
        return Err(JwtError::Scope(c.scope));
    }
    if c.exp - c.iat > 3600 {
        return Err(JwtError::Lifetime);
    }
    Ok(c)
}

/// The fields of an `application/x-www-form-urlencoded` body (none when
/// it is not one).
fn url_form(body: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

/// `POST /v1/projects/{p}/locations/{r}/publishers/anthropic/models/{m:action}`:
/// checks the access token, model ID, betas and body as Vertex does, then
/// answers like Anthropic.
pub async fn predict(
    State(s): State<Arc<MockState>>,
    Path((_project, location, model_action)): Path<(String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.record(&method, &uri, &headers, &body);
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !s
        .tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|t| t == bearer)
    {
        return error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials.",
        );
    }
    let _ = location;
    if let Some(flag) = refused_beta(&headers) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("invalid beta flag {flag}"),
        );
    }
    let Some((model, action)) = model_action.rsplit_once(':') else {
        return error(StatusCode::NOT_FOUND, "no :rawPredict or :streamRawPredict");
    };
    let parsed: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")),
    };
    if parsed["anthropic_version"] != "vertex-2023-10-16" {
        return error(
            StatusCode::BAD_REQUEST,
            "anthropic_version: must be vertex-2023-10-16",
        );
    }
    if model == "count-tokens" {
        if parsed.get("model").is_none() {
            return error(StatusCode::BAD_REQUEST, "model: required for count-tokens");
        }
        return axum::Json(serde_json::json!({"input_tokens": body.len() / 4})).into_response();
    }
    if parsed.get("model").is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "model: not allowed in the body (it is in the URL)",
        );
    }
    if let Scenario::Error(status) = Scenario::parse(&s.scenario(&headers)) {
        return scripted_error(status);
    }
    let Some(served) = catalog::vertex_model(model) else {
        let message =
            format!("Publisher Model `publishers/anthropic/models/{model}` was not found");
        return error(StatusCode::NOT_FOUND, &message);
    };
    let stream = parsed["stream"].as_bool().unwrap_or(false);
    match action {
        "streamRawPredict" if stream => answer(served, true, &body, 0, false, USAGE_OUTPUT),
        "rawPredict" if !stream => answer(served, false, &body, 0, false, USAGE_OUTPUT),
        _ => error(
            StatusCode::BAD_REQUEST,
            &format!("{action} does not match stream={stream}"),
        ),
    }
}

/// The first `anthropic-beta` flag Vertex does not accept, if any.
fn refused_beta(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|f| !f.is_empty() && !catalog::vertex_accepts_beta(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A form-encoded body as Google's token endpoint receives it.
    #[test]
    fn form_values_are_percent_decoded() {
        let f = url_form(b"grant_type=urn%3Aietf%3Aparams&assertion=a.b.c");
        assert_eq!(f[0].1, "urn:ietf:params");
        assert_eq!(f[1].1, "a.b.c");
    }
}
