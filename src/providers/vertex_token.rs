//! Vertex's OAuth access token: minted from a service-account key (an
//! RS256 JWT exchanged at the key's token URI), shared by every request,
//! renewed once per expiry by a single flight.
//!
//! The cache is a *generation*: a `OnceCell` that one mint fills. A token
//! past its renewal point starts the next generation, whose mint runs in a
//! task of its own while requests keep using the old token, still valid
//! for minutes: a slow or hanging token endpoint holds up no request that
//! has a usable token. Only with no valid token do requests wait, all on
//! the same mint. No lock is held across the token request: the std mutex
//! only swaps generations.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::HeaderValue;
use serde_json::Value;
use tokio::sync::OnceCell;

use super::ProviderError;
use super::vertex::{Claims, ServiceAccount};

/// The OAuth scope tollgate asks for.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// A token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(300);
/// A token is no longer sent this close to its expiry.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// After a failed background renewal, the next one waits this long.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// The most bytes of a token endpoint answer read.
const MAX_TOKEN_ANSWER: usize = 64 * 1024;

/// One access token and when to renew it.
#[derive(Clone)]
struct Token {
    value: HeaderValue,
    renew_at: Instant,
    expires_at: Instant,
}

/// Mints tokens for one target.
pub struct Minter {
    /// The target's name, for errors.
    pub target: String,
    /// The service account, or why it could not be read (every mint then
    /// fails with that reason).
    pub account: Result<ServiceAccount, String>,
    /// The shared upstream HTTP client.
    pub client: reqwest::Client,
}

/// One round of the cache: the token its mint produces, and the previous
/// token, served while the mint runs and it is still valid.
struct Generation {
    token: OnceCell<Token>,
    fallback: Option<Token>,
    /// Its background mint failed: a new generation may retry after
    /// [`RETRY_AFTER`].
    failed: AtomicBool,
    born: Instant,
}

impl Generation {
    /// A generation with nothing minted yet.
    fn new(fallback: Option<Token>) -> Arc<Generation> {
        Arc::new(Generation {
            token: OnceCell::new(),
            fallback,
            failed: AtomicBool::new(false),
            born: Instant::now(),
        })
    }
}

/// The shared token of one Vertex target.
pub struct TokenCache {
    minter: Arc<Minter>,
    current: Mutex<Arc<Generation>>,
}

impl TokenCache {
    /// An empty cache: the first request mints.
    pub fn new(minter: Minter) -> TokenCache {
        TokenCache {
            minter: Arc::new(minter),
            current: Mutex::new(Generation::new(None)),
        }
    }

    fn current(&self) -> MutexGuard<'_, Arc<Generation>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A valid access token (the `Authorization` header value).
    pub async fn get(&self) -> Result<HeaderValue, ProviderError> {
        let generation = self.current().clone();
        let now = Instant::now();
        let next = match generation.token.get() {
            Some(t) if now < t.renew_at => return Ok(t.value.clone()),
            Some(t) => self.rotate(&generation, Some(t.clone())),
            None if generation.failed.load(Ordering::Relaxed)
                && generation.born.elapsed() >= RETRY_AFTER =>
            {
                self.rotate(&generation, generation.fallback.clone())
            }
            None => generation,
        };
        self.serve(&next).await
    }

    /// The generation's token, else its still-valid fallback, else the
    /// result of its (single) mint.
    async fn serve(&self, generation: &Generation) -> Result<HeaderValue, ProviderError> {
        if let Some(t) = generation.token.get() {
            return Ok(t.value.clone());
        }
        let now = Instant::now();
        if let Some(f) = generation.fallback.as_ref().filter(|f| now < f.expires_at) {
            return Ok(f.value.clone());
        }
        let minter = &self.minter;
        let t = generation.token.get_or_try_init(|| minter.mint()).await?;
        Ok(t.value.clone())
    }

    /// Replaces `seen` by a new generation (unless another request did
    /// already) whose mint starts in the background; returns the current one.
    fn rotate(&self, seen: &Arc<Generation>, fallback: Option<Token>) -> Arc<Generation> {
        let mut current = self.current();
        if Arc::ptr_eq(&current, seen) {
            *current = Generation::new(fallback);
            let generation = current.clone();
            let minter = self.minter.clone();
            tokio::spawn(async move {
                if let Err(e) = generation.token.get_or_try_init(|| minter.mint()).await {
                    generation.failed.store(true, Ordering::Relaxed);
                    tracing::error!(target = %minter.target, error = %e,
                        "vertex token renewal failed; the current token is used while it lasts");
                }
            });
        }
        current.clone()
    }
}

impl Minter {
    fn misconfigured(&self, message: String) -> ProviderError {
        ProviderError::Misconfigured {
            target: self.target.clone(),
            message,
        }
    }

    /// The token request's signed JWT assertion.
    fn assertion(&self, account: &ServiceAccount) -> Result<String, ProviderError> {
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
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &key,
        )
        .map_err(|e| self.misconfigured(format!("cannot sign the token request: {e}")))
    }

    /// Exchanges a fresh JWT for an access token.
    async fn mint(&self) -> Result<Token, ProviderError> {
        let account = self
            .account
            .as_ref()
            .map_err(|e| self.misconfigured(e.clone()))?;
        let jwt = self.assertion(account)?;
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
        let text = super::capped_text(response, MAX_TOKEN_ANSWER, &self.target).await?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let (Some(token), true) = (v["access_token"].as_str(), status.is_success()) else {
            return Err(ProviderError::Other {
                target: self.target.clone(),
                message: format!("token endpoint answered {status}: {text}"),
            });
        };
        let lifetime = Duration::from_secs(v["expires_in"].as_u64().unwrap_or(3600));
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| self.misconfigured(format!("the token endpoint's token: {e}")))?;
        value.set_sensitive(true);
        let now = Instant::now();
        Ok(Token {
            value,
            renew_at: now + lifetime.saturating_sub(RENEW_BEFORE),
            expires_at: now + lifetime.saturating_sub(EXPIRY_MARGIN),
        })
    }
}
