//! Google Vertex AI: Anthropic Messages through rawPredict /
//! streamRawPredict (regional or global endpoint), authorised with an OAuth
//! access token minted from a service-account key (an RS256 JWT exchanged
//! at the key's token URI) and cached until shortly before it expires.
//! The stream is Anthropic SSE already; it passes through.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;
use serde_json::Value;

use super::translate::{Dialect, Family, body_object};
use super::vertex_token::{Minter, TokenCache};
use super::{Endpoint, Provider, ProviderError, ProviderRequest, ProviderResponse, json_answer};
use crate::config::ProviderConfig;

/// The body's `anthropic_version` Vertex requires.
const VERTEX_VERSION: &str = "vertex-2023-10-16";

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
pub(super) struct Claims {
    pub(super) iss: String,
    pub(super) scope: String,
    pub(super) aud: String,
    pub(super) iat: i64,
    pub(super) exp: i64,
}

/// A configured Vertex target.
pub struct Vertex {
    target: String,
    base_url: String,
    project: String,
    region: String,
    dialect: Dialect,
    client: reqwest::Client,
    /// The shared access token, renewed by one request's mint.
    token: TokenCache,
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
            dialect: Dialect::new(Family::Vertex, cfg),
            token: TokenCache::new(Minter {
                target: target.to_owned(),
                account,
                client: client.clone(),
            }),
            client,
        }
    }

    /// A valid access token (renewed ahead of expiry, single flight).
    async fn access_token(&self) -> Result<HeaderValue, ProviderError> {
        self.token.get().await
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
        if !kept.is_empty()
            && let Ok(v) = HeaderValue::from_str(&kept.join(","))
        {
            headers.insert("anthropic-beta", v);
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
            let text = super::capped_text(response, super::MAX_ERROR_BODY, &self.target).await?;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::*;

    /// A token endpoint whose first answer is a token already due for
    /// renewal (valid five more minutes) and which never answers again.
    async fn slow_token_endpoint(hits: Arc<AtomicUsize>) -> String {
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move || {
                let hits = hits.clone();
                async move {
                    if hits.fetch_add(1, Ordering::SeqCst) > 0 {
                        std::future::pending::<()>().await;
                    }
                    axum::Json(serde_json::json!({"access_token": "first", "expires_in": 300}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/token")
    }

    /// A Vertex target whose service account's token URI is `token_uri`.
    fn vertex(dir: &std::path::Path, token_uri: &str) -> Vertex {
        let key = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/vertex-test-key.json"
        );
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(key).unwrap()).unwrap();
        v["token_uri"] = Value::from(token_uri);
        let path = dir.join("key.json");
        std::fs::write(&path, v.to_string()).unwrap();
        let cfg: ProviderConfig = toml::from_str(&format!(
            "kind = \"vertex\"\nproject_id = \"p\"\nregion = \"us-east5\"\ncredentials_file = {:?}",
            path.display().to_string()
        ))
        .unwrap();
        Vertex::new("vertex", &cfg, reqwest::Client::new())
    }

    #[tokio::test]
    async fn a_hanging_token_renewal_holds_up_no_request_while_the_old_token_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let vertex = Arc::new(vertex(dir.path(), &slow_token_endpoint(hits.clone()).await));
        assert_eq!(vertex.access_token().await.unwrap(), "Bearer first");
        // Due for renewal: the renewal hangs, yet every request is served.
        let requests: Vec<_> = (0..20)
            .map(|_| {
                let vertex = vertex.clone();
                tokio::spawn(async move { vertex.access_token().await })
            })
            .collect();
        for r in requests {
            let token = tokio::time::timeout(Duration::from_secs(10), r)
                .await
                .expect("a request waited on the token renewal")
                .unwrap()
                .unwrap();
            assert_eq!(token, "Bearer first");
        }
        // One renewal in flight, not one per request.
        let deadline = Instant::now() + Duration::from_secs(10);
        while hits.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "the renewal never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }
}
