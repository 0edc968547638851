//! Anthropic's API, first party: the request goes out as the client sent
//! it, with the provider key in place of the tollgate key — or, on
//! subscription passthrough, with the client's own credential untouched.

use http::{HeaderValue, header};

use super::{Endpoint, Provider, ProviderError, ProviderRequest, ProviderResponse};
use crate::config::ProviderConfig;

/// A configured Anthropic target.
pub struct Anthropic {
    target: String,
    /// `base_url` parsed once: parsing a URL (its host above all) was a
    /// few percent of a request's instructions, paid again per request.
    /// If it does not parse, why not, which each request then says.
    base: Result<reqwest::Url, String>,
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
        let base_url = cfg.base_url.trim_end_matches('/');
        Anthropic {
            target: target.to_owned(),
            base: reqwest::Url::parse(base_url)
                .map_err(|e| format!("base_url {base_url:?} is not a URL: {e}")),
            api_key,
            client,
        }
    }

    /// The endpoint's URL under `base_url`, with the client's query.
    fn url(&self, request: &ProviderRequest) -> Result<reqwest::Url, ProviderError> {
        let path = match request.endpoint {
            Endpoint::Messages => "/v1/messages",
            Endpoint::CountTokens => "/v1/messages/count_tokens",
        };
        let base = self
            .base
            .as_ref()
            .map_err(|message| ProviderError::Misconfigured {
                target: self.target.clone(),
                message: message.clone(),
            })?;
        let mut url = base.clone();
        url.set_path(&format!("{}{path}", base.path().trim_end_matches('/')));
        url.set_query(request.query.as_deref());
        Ok(url)
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
        let url = self.url(&request)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn anthropic(base_url: &str) -> Anthropic {
        let toml = format!("kind = \"anthropic\"\nbase_url = \"{base_url}\"\napi_key = \"k\"");
        let cfg: ProviderConfig = toml::from_str(&toml).unwrap();
        Anthropic::new("a", &cfg, reqwest::Client::new())
    }

    fn request(endpoint: Endpoint, query: Option<&str>) -> ProviderRequest {
        ProviderRequest {
            endpoint,
            query: query.map(str::to_owned),
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::new(),
            passthrough: false,
        }
    }

    /// The URL is the base's (with any path prefix) plus the endpoint and
    /// the client's query, as the string it replaced gave.
    #[test]
    fn urls_join_the_base_the_endpoint_and_the_query() {
        let cases = [
            (
                "https://api.anthropic.com",
                Endpoint::Messages,
                None,
                "https://api.anthropic.com/v1/messages",
            ),
            (
                "https://api.anthropic.com/",
                Endpoint::Messages,
                Some("beta=true"),
                "https://api.anthropic.com/v1/messages?beta=true",
            ),
            (
                "http://127.0.0.1:9/proxy/",
                Endpoint::CountTokens,
                None,
                "http://127.0.0.1:9/proxy/v1/messages/count_tokens",
            ),
        ];
        for (base, endpoint, query, want) in cases {
            let url = anthropic(base).url(&request(endpoint, query)).unwrap();
            assert_eq!(url.as_str(), want);
        }
        let err = anthropic("not a url").url(&request(Endpoint::Messages, None));
        assert!(err.unwrap_err().to_string().contains("is not a URL"));
    }
}
