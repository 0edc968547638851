//! `[[webhooks]]` of the configuration: where the notifier delivers
//! alerts, and how their URLs are shown in logs. Beside the notifier
//! that reads it; `config` re-exports it. Imports nothing of tollgate.

use serde::{Deserialize, Serialize};

/// Body shape of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
}

/// Where budget alerts are delivered.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A secret in itself for Slack (the path is the credential): only
    /// [`WebhookConfig::redacted_url`] is ever logged.
    pub url: String,
    #[serde(default)]
    pub format: WebhookFormat,
    /// Shared secret of the `x-tollgate-signature` HMAC-SHA256 header.
    #[serde(default)]
    pub secret: Option<String>,
}

impl WebhookConfig {
    /// The URL as logs may show it: scheme, host and port; the path and
    /// query (where Slack and others keep the credential) become `…`.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// `Debug` that never prints the URL's path or the secret.
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.redacted_url())
            .field("format", &self.format)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `scheme://host[:port]` of `url`, with `/…` when it had a path or query
/// beyond `/`; a URL that does not parse is shown as `<unparsable URL>`.
pub fn redact_url(url: &str) -> String {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return "<unparsable URL>".into();
    };
    let mut out = format!("{}://{}", parsed.scheme(), parsed.host_str().unwrap_or(""));
    if let Some(port) = parsed.port() {
        out.push_str(&format!(":{port}"));
    }
    if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
        out.push_str("/…");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_redacted_to_scheme_and_host_in_logs_and_debug() {
        let url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET?token=abc";
        assert_eq!(redact_url(url), "https://hooks.slack.com/…");
        assert_eq!(
            redact_url("http://127.0.0.1:9000/"),
            "http://127.0.0.1:9000"
        );
        assert_eq!(redact_url("not a url XXXXSECRET"), "<unparsable URL>");
        let hook = WebhookConfig {
            url: url.into(),
            format: WebhookFormat::Slack,
            secret: Some("hmac-secret".into()),
        };
        let shown = format!("{hook:?}");
        assert!(
            !shown.contains("XXXXSECRET") && !shown.contains("abc"),
            "{shown}"
        );
        assert!(!shown.contains("hmac-secret"), "{shown}");
        assert!(shown.contains("hooks.slack.com"), "{shown}");
    }
}
