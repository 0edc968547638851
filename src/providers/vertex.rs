//! Google Vertex AI: Anthropic Messages through rawPredict /
//! streamRawPredict (regional or global endpoint), authorised with an OAuth
//! access token minted from a service-account key (an RS256 JWT exchanged
//! at the key's token URI) and cached until shortly before it expires.
//! The stream is Anthropic SSE already; it passes through.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

use super::translate::{Dialect, Family, body_object};
use super::{Endpoint, Provider, ProviderError, ProviderRequest, ProviderResponse, json_answer};
use crate::config::ProviderConfig;

/// The body's `anthropic_version` Vertex requires.
const VERTEX_VERSION: &str = "vertex-2023-10-16";
/// The OAuth scope tollgate asks for.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// A cached token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// The fields of a service-account JSON key tollgate uses.
#[derive(Clone, Deserialize)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key: String,
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

/// The JWT claims of the token request.
#[derive(serde::Serialize, Debug)]
struct Claims {
    iss: String,
    scope: String,
    aud: String,
    iat: i64,
    exp: i64,
}

/// A configured Vertex target.
pub struct Vertex {
    target: String,
    base_url: String,
    project: String,
    region: String,
    account: Result<ServiceAccount, String>,
    dialect: Dialect,
    client: reqwest::Client,
    /// The cached token; the async lock makes concurrent requests wait for
    /// one refresh instead of each minting a token.
    token: Mutex<Option<(HeaderValue, Instant)>>,
}

impl Vertex {
    pub fn new(target: &str, cfg: &ProviderConfig, client: reqwest::Client) -> Vertex {
        let base_url = if !cfg.base_url.is_empty() {
            cfg.base_url.trim_end_matches('/').to_owned()
        } else if cfg.region == "global" {
            "https://aiplatform.googleapis.com".to_owned()
        } else {
            format!("https://{}-aiplatform.googleapis.com", cfg.region)
        };
        let account = match &cfg.credentials_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read credentials_file {}: {e}", path.display()))
                .and_then(|text| {
                    serde_json::from_str::<ServiceAccount>(&text).map_err(|e| {
                        format!(
                            "credentials_file {} is not a service-account key: {e}",
                            path.display()
                        )
                    })
                }),
            None => Err("no credentials_file configured".into()),
        };
        if let Err(e) = &account {
            tracing::error!(target, error = %e, "vertex provider cannot authenticate; its requests will fail");
        }
        Vertex {
            target: target.to_owned(),
            base_url,
            project: cfg.project_id.clone(),
            region: cfg.region.clone(),
            account,
            dialect: Dialect::new(Family::Vertex, cfg),
            client,
            token: Mutex::new(None),
        }
    }

    fn misconfigured(&self, message: String) -> ProviderError {
        ProviderError::Misconfigured {
            target: self.target.clone(),
            message,
        }
    }

    /// A valid access token, minted when the cached one is near expiry.
    async fn access_token(&self) -> Result<HeaderValue, ProviderError> {
        let account = self
            .account
            .as_ref()
            .map_err(|e| self.misconfigured(e.clone()))?;
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            iss: account.client_email.clone(),
            scope: SCOPE.into(),
            aud: account.token_uri.clone(),
            iat: now,
            exp: now + 3600,
        };
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(account.private_key.as_bytes())
            .map_err(|e| self.misconfigured(format!("service-account private_key: {e}")))?;
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &key,
        )
        .map_err(|e| self.misconfigured(format!("cannot sign the token request: {e}")))?;
        let response = self
            .client
            .post(&account.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", jwt.as_str()),
            ])
            .send()
            .await
            .map_err(|e| super::classify(&self.target, e, false))?;
        let status = response.status();
        let v: Value = response
            .json()
            .await
            .map_err(|e| super::classify(&self.target, e, true))?;
        let (Some(token), true) = (v["access_token"].as_str(), status.is_success()) else {
            return Err(ProviderError::Other {
                target: self.target.clone(),
                message: format!("token endpoint answered {status}: {v}"),
            });
        };
        let lifetime = Duration::from_secs(v["expires_in"].as_u64().unwrap_or(3600));
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| self.misconfigured(e.to_string()))?;
        value.set_sensitive(true);
        *cached = Some((
            value.clone(),
            Instant::now() + lifetime.saturating_sub(RENEW_BEFORE),
        ));
        Ok(value)
    }

    /// The rawPredict body and URL; returns (url, body, downgrades).
    fn translate(
        &self,
        request: &ProviderRequest,
    ) -> Result<(String, Vec<u8>, bool, Vec<String>), String> {
        let mut body = body_object(&request.body)?;
        let model = match body.get("model") {
            Some(Value::String(m)) => self.dialect.model_id(m),
            _ => return Err("the request has no \"model\"".into()),
        };
        let stream = matches!(body.get("stream"), Some(Value::Bool(true)));
        let (model_path, action) = if request.endpoint == Endpoint::CountTokens {
            body.insert("model".into(), Value::String(model));
            ("count-tokens".to_owned(), "rawPredict")
        } else {
            body.remove("model");
            (
                model,
                if stream {
                    "streamRawPredict"
                } else {
                    "rawPredict"
                },
            )
        };
        body.insert(
            "anthropic_version".into(),
            Value::String(VERTEX_VERSION.into()),
        );
        let header_betas = request
            .headers
            .get_all("anthropic-beta")
            .iter()
            .filter_map(|v| v.to_str().ok());
        let (_, downgrades) = self.dialect.filter_betas(header_betas);
        // Every segment is encoded: a body's `model` of `../..` must not
        // reach another path of Google's endpoint with our token.
        let url = format!(
            "{}/v1/projects/{}/locations/{}/publishers/anthropic/models/{}:{action}",
            self.base_url,
            super::path_segment(&self.project),
            super::path_segment(&self.region),
            super::model_version_segment(&model_path),
        );
        Ok((
            url,
            serde_json::to_vec(&Value::Object(body)).map_err(|e| e.to_string())?,
            stream,
            downgrades,
        ))
    }
}

#[async_trait::async_trait]
impl Provider for Vertex {
    fn kind(&self) -> &'static str {
        "vertex"
    }

    fn target(&self) -> &str {
        &self.target
    }

    async fn send(&self, request: ProviderRequest) -> Result<ProviderResponse, ProviderError> {
        if request.passthrough {
            return Err(super::passthrough_refused(&self.target));
        }
        let (url, body, _stream, downgrades) = match self.translate(&request) {
            Ok(t) => t,
            Err(message) => return Ok(super::invalid_request(&message)),
        };
        let token = self.access_token().await?;
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, token);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        // Accepted betas stay in the header on Vertex.
        let (kept, _) = self.dialect.filter_betas(
            request
                .headers
                .get_all("anthropic-beta")
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        if !kept.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&kept.join(",")) {
                headers.insert("anthropic-beta", v);
            }
        }
        let response = self
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| super::classify(&self.target, e, false))?;
        let status = response.status();
        let out_headers = response.headers().clone();
        if !status.is_success() {
            // Google's error shape → Anthropic's, same status.
            let text = response.text().await.unwrap_or_default();
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let body = if v["type"] == "error" {
                text
            } else {
                let message = v["error"]["message"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or(text);
                let error_type = super::error_types::error_type_for_status(status.as_u16());
                serde_json::json!({"type": "error", "error": {"type": error_type, "message": format!("vertex ({}): {message}", self.target)}}).to_string()
            };
            return Ok(json_answer(status, Bytes::from(body), downgrades));
        }
        let body = super::body_stream(response, &self.target);
        Ok(ProviderResponse {
            status,
            headers: out_headers,
            body,
            downgrades,
        })
    }
}
