//! Who is calling: the tollgate key, looked up by its hash.
//!
//! `x-tollgate-api-key` (alias `x-portkey-api-key`), when sent, is the only
//! header tried: the request's `Authorization` / `x-api-key` then belong to
//! the client (subscription passthrough) and are never looked up.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use http::HeaderMap;
use sha2::{Digest, Sha256};

use super::error::GatewayError;
use crate::http_headers::bearer_token;

pub mod config;

pub use config::{KeyConfig, parse_key_hash};

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
    /// Subscription passthrough: the client's own credential goes to
    /// Anthropic, which bills the client (the key or its route says so).
    pub passthrough: bool,
    /// What the key's requests may say about their own routing.
    pub client_routing: super::route::ClientRouting,
}

/// A key's identity and the end of its validity, if it has one.
type ValidKey = (Arc<Identity>, Option<DateTime<Utc>>);

/// The configured keys by SHA-256 digest: plaintext keys are never held.
/// A key may have an end of validity (its expiry, or a rotated-away hash's
/// grace period).
#[derive(Debug, Default)]
pub struct KeyRing {
    by_digest: HashMap<[u8; 32], ValidKey>,
    /// Whether any key is passthrough: a client then may have sent its own
    /// credential where a key was expected, and is told where the key goes.
    any_passthrough: bool,
}

impl KeyRing {
    /// Indexes the config's keys (their hashes were validated at load);
    /// `routes` tell which keys are passthrough through their route.
    pub fn new(
        keys: &[KeyConfig],
        routes: &BTreeMap<String, super::route::RouteConfig>,
    ) -> KeyRing {
        KeyRing::with_validity(
            keys.iter().map(|k| RingKey {
                config: k,
                expires_at: None,
                previous: None,
            }),
            routes,
        )
    }

    /// Indexes keys with their validity: a key past `expires_at` is
    /// unknown, and a rotated key's previous hash authenticates as the key
    /// until its own end.
    pub fn with_validity<'a>(
        keys: impl IntoIterator<Item = RingKey<'a>>,
        routes: &BTreeMap<String, super::route::RouteConfig>,
    ) -> KeyRing {
        let mut by_digest = HashMap::new();
        for k in keys {
            let identity = Arc::new(identity_of(k.config, routes));
            if let Some(digest) = parse_key_hash(&k.config.hash) {
                by_digest.insert(digest, (identity.clone(), k.expires_at));
            }
            if let Some((hash, until)) = k.previous {
                let until = k.expires_at.map_or(until, |e| e.min(until));
                if let Some(digest) = parse_key_hash(hash) {
                    by_digest.insert(digest, (identity, Some(until)));
                }
            }
        }
        let any_passthrough = by_digest.values().any(|(i, _)| i.passthrough);
        KeyRing {
            by_digest,
            any_passthrough,
        }
    }

    /// How many hashes authenticate (current and rotated-away ones).
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether no key authenticates.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Finds the caller from the request headers.
    ///
    /// Claude Code sends `ANTHROPIC_AUTH_TOKEN` as `Authorization: Bearer`
    /// and `ANTHROPIC_API_KEY` as `x-api-key`; `x-tollgate-api-key` (alias
    /// `x-portkey-api-key`) serves modes that send no Authorization and
    /// passthrough, where Authorization is the client's own. A passthrough
    /// key is accepted from `x-tollgate-api-key` only: sent as
    /// Authorization it would be the credential forwarded to Anthropic.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Identity>, GatewayError> {
        if let Some(key) = ["x-tollgate-api-key", "x-portkey-api-key"]
            .iter()
            .find_map(|n| headers.get(*n))
        {
            return self.lookup(key.as_bytes()).ok_or(GatewayError::UnknownKey);
        }
        let candidates = presented_keys(headers);
        if candidates.is_empty() {
            return Err(GatewayError::MissingKey);
        }
        match candidates.into_iter().find_map(|key| self.lookup(key)) {
            Some(identity) if identity.passthrough => Err(GatewayError::PassthroughKeyHeader),
            Some(identity) => Ok(identity),
            // Likely the client's own token with the tollgate key left out.
            None if self.any_passthrough => Err(GatewayError::PassthroughKeyHeader),
            None => Err(GatewayError::UnknownKey),
        }
    }

    fn lookup(&self, key: &[u8]) -> Option<Arc<Identity>> {
        if key.is_empty() {
            return None;
        }
        let (identity, until) = self.by_digest.get(&<[u8; 32]>::from(Sha256::digest(key)))?;
        match until {
            Some(until) if *until <= Utc::now() => None,
            _ => Some(identity.clone()),
        }
    }
}

/// One key as [`KeyRing::with_validity`] takes it.
pub struct RingKey<'a> {
    pub config: &'a KeyConfig,
    /// After this the key is refused.
    pub expires_at: Option<DateTime<Utc>>,
    /// A rotated-away hash and until when it still authenticates.
    pub previous: Option<(&'a str, DateTime<Utc>)>,
}

/// What a key says about its holder.
fn identity_of(k: &KeyConfig, routes: &BTreeMap<String, super::route::RouteConfig>) -> Identity {
    Identity {
        key_id: k.id.clone(),
        workspace: k.workspace.clone(),
        team: k.team.clone(),
        user: k.user.clone(),
        provider: k.provider.clone(),
        route: k.route.clone(),
        passthrough: k.is_passthrough(routes),
        client_routing: super::route::ClientRouting {
            allow_config: k.allow_client_config,
            routes: k.client_routes.clone(),
        },
    }
}

/// The credentials a client without `x-tollgate-api-key` may have sent
/// its tollgate key in.
fn presented_keys(headers: &HeaderMap) -> Vec<&[u8]> {
    let mut keys = Vec::with_capacity(2);
    if let Some(v) = headers.get("x-api-key") {
        keys.push(v.as_bytes());
    }
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        // A bare key (no scheme) is accepted too, as clients send it.
        keys.push(bearer_token(headers).unwrap_or(v.as_bytes()));
    }
    keys.retain(|k| !k.is_empty());
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::hash_key;

    fn key(id: &str, secret: &str, passthrough: bool) -> KeyConfig {
        KeyConfig {
            id: id.into(),
            hash: hash_key(secret),
            workspace: "w".into(),
            team: "t".into(),
            user: "u".into(),
            provider: "anthropic".into(),
            route: None,
            passthrough,
            allow_client_config: false,
            client_routes: Vec::new(),
        }
    }

    fn ring() -> KeyRing {
        KeyRing::new(&[key("k1", "tg-secret", false)], &BTreeMap::new())
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
    fn a_rotated_hash_works_until_its_grace_ends_and_expired_keys_do_not() {
        let now = Utc::now();
        let (new, old, gone) = (
            key("k1", "tg-new", false),
            hash_key("tg-old"),
            key("k2", "tg-gone", false),
        );
        let ring = KeyRing::with_validity(
            [
                RingKey {
                    config: &new,
                    expires_at: None,
                    previous: Some((&old, now + chrono::Duration::hours(1))),
                },
                RingKey {
                    config: &gone,
                    expires_at: Some(now - chrono::Duration::seconds(1)),
                    previous: None,
                },
            ],
            &BTreeMap::new(),
        );
        for secret in ["tg-new", "tg-old"] {
            let who = ring.authenticate(&headers(&[("x-api-key", secret)]));
            assert_eq!(who.unwrap().key_id, "k1");
        }
        assert!(
            ring.authenticate(&headers(&[("x-api-key", "tg-gone")]))
                .is_err()
        );
        let later = KeyRing::with_validity(
            [RingKey {
                config: &new,
                expires_at: None,
                previous: Some((&old, now - chrono::Duration::seconds(1))),
            }],
            &BTreeMap::new(),
        );
        assert!(
            later
                .authenticate(&headers(&[("x-api-key", "tg-old")]))
                .is_err()
        );
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

    #[test]
    fn tollgate_header_alone_decides_and_passthrough_keys_need_it() {
        let ring = KeyRing::new(
            &[key("k1", "tg-secret", false), key("sub", "tg-sub", true)],
            &BTreeMap::new(),
        );
        // With x-tollgate-api-key, Authorization is the client's: a wrong
        // tollgate header is not rescued by it.
        let wrong = ring.authenticate(&headers(&[
            ("x-tollgate-api-key", "tg-nope"),
            ("authorization", "Bearer tg-secret"),
        ]));
        assert!(matches!(wrong, Err(GatewayError::UnknownKey)));
        let sub = ring
            .authenticate(&headers(&[
                ("x-portkey-api-key", "tg-sub"),
                ("authorization", "Bearer sk-ant-oat01-client"),
            ]))
            .unwrap();
        assert!(sub.passthrough);
        // A passthrough key as Authorization, or a client token with the
        // tollgate header left out: told to use x-tollgate-api-key.
        for h in [
            headers(&[("authorization", "Bearer tg-sub")]),
            headers(&[("authorization", "Bearer sk-ant-oat01-client")]),
        ] {
            let err = ring.authenticate(&h).unwrap_err();
            assert!(matches!(err, GatewayError::PassthroughKeyHeader));
            assert!(err.to_string().contains("x-tollgate-api-key"), "{err}");
        }
        assert!(
            !ring
                .authenticate(&headers(&[("x-api-key", "tg-secret")]))
                .unwrap()
                .passthrough
        );
    }
}
