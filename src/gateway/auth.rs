//! Who is calling: the tollgate key, looked up by its hash.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use sha2::{Digest, Sha256};

use super::error::GatewayError;
use crate::config::{KeyConfig, parse_key_hash};

/// What a key says about its holder; stored on every event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub key_id: String,
    pub workspace: String,
    pub team: String,
    pub user: String,
    /// The provider target the key's requests go to.
    pub provider: String,
    /// The key's `[routes.NAME]`, if it has one.
    pub route: Option<String>,
}

/// The configured keys by SHA-256 digest: plaintext keys are never held.
#[derive(Debug, Default)]
pub struct KeyRing {
    by_digest: HashMap<[u8; 32], Arc<Identity>>,
}

impl KeyRing {
    /// Indexes the config's keys (their hashes were validated at load).
    pub fn new(keys: &[KeyConfig]) -> KeyRing {
        let by_digest = keys
            .iter()
            .filter_map(|k| {
                let digest = parse_key_hash(&k.hash)?;
                let identity = Identity {
                    key_id: k.id.clone(),
                    workspace: k.workspace.clone(),
                    team: k.team.clone(),
                    user: k.user.clone(),
                    provider: k.provider.clone(),
                    route: k.route.clone(),
                };
                Some((digest, Arc::new(identity)))
            })
            .collect();
        KeyRing { by_digest }
    }

    /// Finds the caller from the request headers.
    ///
    /// Claude Code sends `ANTHROPIC_AUTH_TOKEN` as `Authorization: Bearer`
    /// and `ANTHROPIC_API_KEY` as `x-api-key`; `x-tollgate-api-key` (alias
    /// `x-portkey-api-key`) serves modes that send no Authorization.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Identity>, GatewayError> {
        let candidates = presented_keys(headers);
        if candidates.is_empty() {
            return Err(GatewayError::MissingKey);
        }
        candidates
            .into_iter()
            .find_map(|key| self.by_digest.get(&<[u8; 32]>::from(Sha256::digest(key))))
            .cloned()
            .ok_or(GatewayError::UnknownKey)
    }
}

/// Every key-like credential on the request, tollgate's own header first.
fn presented_keys(headers: &HeaderMap) -> Vec<&[u8]> {
    let mut keys = Vec::with_capacity(2);
    for name in ["x-tollgate-api-key", "x-portkey-api-key", "x-api-key"] {
        if let Some(v) = headers.get(name) {
            keys.push(v.as_bytes());
        }
    }
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.as_bytes();
        let token = v
            .strip_prefix(b"Bearer ")
            .or_else(|| v.strip_prefix(b"bearer "))
            .unwrap_or(v);
        keys.push(token);
    }
    keys.retain(|k| !k.is_empty());
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::hash_key;

    fn ring() -> KeyRing {
        KeyRing::new(&[KeyConfig {
            id: "k1".into(),
            hash: hash_key("tg-secret"),
            workspace: "w".into(),
            team: "t".into(),
            user: "u".into(),
            provider: "anthropic".into(),
            route: None,
        }])
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn bearer_token_and_x_api_key_both_authenticate() {
        let ring = ring();
        let bearer = ring.authenticate(&headers(&[("authorization", "Bearer tg-secret")]));
        assert_eq!(bearer.unwrap().key_id, "k1");
        let api_key = ring.authenticate(&headers(&[("x-api-key", "tg-secret")]));
        assert_eq!(api_key.unwrap().team, "t");
    }

    #[test]
    fn missing_and_wrong_keys_are_told_apart() {
        let ring = ring();
        assert!(matches!(
            ring.authenticate(&HeaderMap::new()),
            Err(GatewayError::MissingKey)
        ));
        assert!(matches!(
            ring.authenticate(&headers(&[("x-api-key", "tg-wrong")])),
            Err(GatewayError::UnknownKey)
        ));
    }
}
