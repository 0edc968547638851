//! `[[keys]]` of the configuration and the stored form of a key
//! (`sha256:<hex>`): beside the gateway's auth that checks keys; `config`
//! re-exports it.

use std::collections::BTreeMap;

use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::gateway::route::RouteConfig;

/// One tollgate key: who is calling, stored as a hash only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// A stable, non-secret name for the key (on events and in the lake).
    pub id: String,
    /// `sha256:<hex>` of the key.
    pub hash: String,
    #[serde(default = "default_workspace")]
    pub workspace: String,
    pub team: String,
    pub user: String,
    /// The provider (a `[providers.NAME]`) this key's requests go to.
    pub provider: String,
    /// A `[routes.NAME]` to use instead of the plain provider.
    #[serde(default)]
    pub route: Option<String>,
    /// Subscription passthrough: the client authenticates to tollgate with
    /// `x-tollgate-api-key` only, and its own `Authorization` / `x-api-key`
    /// (Claude Max or Anthropic OAuth token, or the user's own key) goes to
    /// Anthropic unchanged; Anthropic bills the client, tollgate records.
    #[serde(default)]
    pub passthrough: bool,
    /// Whether the key's requests may carry their own routing config
    /// (`x-tollgate-config` JSON, `x-tollgate-provider`): off by default,
    /// since such a config picks providers and the number of upstream calls.
    #[serde(default)]
    pub allow_client_config: bool,
    /// The `[routes.NAME]` a request of this key may name in
    /// `x-tollgate-config`.
    #[serde(default)]
    pub client_routes: Vec<String>,
}

impl KeyConfig {
    /// Whether this key's requests are subscription passthrough: the key
    /// says so, or the route it names does.
    pub fn is_passthrough(&self, routes: &BTreeMap<String, RouteConfig>) -> bool {
        self.passthrough
            || self
                .route
                .as_ref()
                .and_then(|r| routes.get(r))
                .is_some_and(|r| r.passthrough)
    }
}

fn default_workspace() -> String {
    "default".into()
}

/// The stored form of a key: `sha256:<hex>`.
pub fn hash_key(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// Decodes a stored key hash into its digest bytes.
pub fn parse_key_hash(stored: &str) -> Option<[u8; 32]> {
    let hex_digits = stored.strip_prefix("sha256:")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut out).ok()?;
    Some(out)
}

/// A new random tollgate key (192 bits): hashing it with plain SHA-256 is
/// safe because, unlike a password, it cannot be guessed.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("tg-{}", hex::encode(bytes))
}
