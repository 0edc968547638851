//! Anthropic's API, first party: the request goes out as the client sent
//! it, with the provider key in place of the tollgate key — or, on
//! subscription passthrough, with the client's own credential untouched.

use http::{HeaderValue, header};

use super::{Endpoint, Provider, ProviderError, ProviderRequest, ProviderResponse};
use crate::config::ProviderConfig;

/// A configured Anthropic target.
pub struct Anthropic {
    target: String,
    base_url: String,
    api_key: Option<HeaderValue>,
    client: reqwest::Client,
}

impl Anthropic {
    /// Builds the target from its config entry.
    pub fn new(target: &str, cfg: &ProviderConfig, client: reqwest::Client) -> Anthropic {
        let api_key = (!cfg.api_key.is_empty())
            .then(|| HeaderValue::from_str(&cfg.api_key).ok())
            .flatten()
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        Anthropic {
            target: target.to_owned(),
            base_url: cfg.base_url.trim_end_matches('/').to_owned(),
            api_key,
            client,
        }
    }

    fn url(&self, request: &ProviderRequest) -> String {
        let path = match request.endpoint {
            Endpoint::Messages => "/v1/messages",
            Endpoint::CountTokens => "/v1/messages/count_tokens",
        };
        match &request.query {
            Some(q) => format!("{}{path}?{q}", self.base_url),
            None => format!("{}{path}", self.base_url),
        }
    }
}

#[async_trait::async_trait]
impl Provider for Anthropic {
    fn kind(&self) -> &'static str {
        "anthropic"
    }

    fn target(&self) -> &str {
        &self.target
    }

    async fn send(&self, request: ProviderRequest) -> Result<ProviderResponse, ProviderError> {
        let url = self.url(&request);
        let mut headers = request.headers;
        if !request.passthrough {
            let Some(api_key) = &self.api_key else {
                return Err(ProviderError::Misconfigured {
                    target: self.target.clone(),
                    message: "no api_key configured (is ANTHROPIC_API_KEY set?)".into(),
                });
            };
            headers.insert("x-api-key", api_key.clone());
        }
        // The tee must read usage out of the answer, so ask for it plain.
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        let response = self
            .client
            .post(url)
            .headers(headers)
            .body(request.body)
            .send()
            .await
            .map_err(|e| super::classify(&self.target, e, false))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = super::body_stream(response, &self.target);
        Ok(ProviderResponse {
            status,
            headers,
            body,
            downgrades: Vec::new(),
        })
    }
}
