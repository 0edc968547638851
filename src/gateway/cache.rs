//! The exact-match response cache of routes with `cache = { mode = "simple" }`:
//! an identical request within `max_age` is answered from memory, recorded
//! as a cache hit (provider `cache`, no usage, so it is priced at $0).
//! Bounded by bytes (moka).
//!
//! "Identical" means everything that can change the answer or who may see
//! it: the key's team (one team never answers another's requests), every
//! target with the body it would be sent after its overrides, and the
//! upstream headers (betas, version, anything forwarded). An entry is
//! fresh for the reader's `max_age`, not the writer's: a request asking
//! for answers at most a minute old never gets an older one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use sha2::{Digest, Sha256};

/// Upstream headers that describe the client, not the question: two
/// requests differing only in these get the same answer.
const NOT_IN_KEY: &[&str] = &[
    "user-agent",
    "accept",
    "x-claude-code-session-id",
    "x-claude-code-agent-id",
    "x-claude-code-parent-agent-id",
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-app",
];

/// Whether an upstream header is part of the cache key.
fn changes_the_answer(name: &str) -> bool {
    !NOT_IN_KEY.contains(&name) && !name.starts_with("x-stainless-")
}

/// Most bytes the cache holds in all.
const CAPACITY_BYTES: u64 = 256 * 1024 * 1024;
/// Largest answer kept.
pub const MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;

/// One cached answer.
#[derive(Debug)]
pub struct Cached {
    pub content_type: Option<http::HeaderValue>,
    pub body: Bytes,
    stored: Instant,
    max_age: Duration,
}

/// The process's response cache.
pub struct ResponseCache {
    entries: moka::sync::Cache<[u8; 32], Arc<Cached>>,
}

impl Default for ResponseCache {
    fn default() -> Self {
        ResponseCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(CAPACITY_BYTES)
                .weigher(|_, v: &Arc<Cached>| v.body.len().try_into().unwrap_or(u32::MAX))
                .time_to_live(Duration::from_secs(7 * 24 * 3600))
                .build(),
        }
    }
}

impl ResponseCache {
    /// The key of a request: who asks, what it asks, where it would go
    /// and with which headers. Each part is length-prefixed so no two
    /// different requests can run together into the same bytes.
    pub fn key(
        endpoint: &str,
        team: &str,
        targets: &[(&str, &[u8])],
        headers: &HeaderMap,
    ) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut part = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        part(endpoint.as_bytes());
        part(team.as_bytes());
        for (provider, body) in targets {
            part(provider.as_bytes());
            part(body);
        }
        let mut named: Vec<(&str, &[u8])> = headers
            .iter()
            .filter(|(n, _)| changes_the_answer(n.as_str()))
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        named.sort_unstable();
        for (name, value) in named {
            part(name.as_bytes());
            part(value);
        }
        h.finalize().into()
    }

    /// An answer for `key` no older than `max_age` (the reader's), if one
    /// is stored.
    pub fn get(&self, key: &[u8; 32], max_age: Duration) -> Option<Arc<Cached>> {
        let hit = self.entries.get(key)?;
        let age = hit.stored.elapsed();
        if age > hit.max_age {
            self.entries.invalidate(key);
            None
        } else {
            (age <= max_age).then_some(hit)
        }
    }

    /// Stores a whole, successful answer.
    pub fn put(
        &self,
        key: [u8; 32],
        content_type: Option<http::HeaderValue>,
        body: Bytes,
        max_age: Duration,
    ) {
        if body.len() <= MAX_ENTRY_BYTES {
            self.entries.insert(
                key,
                Arc::new(Cached {
                    content_type,
                    body,
                    stored: Instant::now(),
                    max_age,
                }),
            );
        }
    }
}

/// What a cache miss needs to store its answer once it is whole.
pub struct Capture {
    pub cache: Arc<ResponseCache>,
    pub key: [u8; 32],
    pub max_age: Duration,
    pub content_type: Option<http::HeaderValue>,
    pub body: bytes::BytesMut,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn key_separates_teams_targets_bodies_and_answer_changing_headers() {
        let body: &[u8] = br#"{"model":"m"}"#;
        let base = ResponseCache::key("messages", "eng", &[("anthropic", body)], &HeaderMap::new());
        let other_team =
            ResponseCache::key("messages", "ops", &[("anthropic", body)], &HeaderMap::new());
        let overridden = ResponseCache::key(
            "messages",
            "eng",
            &[("anthropic", br#"{"model":"n"}"#)],
            &HeaderMap::new(),
        );
        let beta = ResponseCache::key(
            "messages",
            "eng",
            &[("anthropic", body)],
            &headers(&[("anthropic-beta", "x")]),
        );
        let session = ResponseCache::key(
            "messages",
            "eng",
            &[("anthropic", body)],
            &headers(&[("x-claude-code-session-id", "s"), ("user-agent", "u")]),
        );
        assert_ne!(base, other_team);
        assert_ne!(base, overridden);
        assert_ne!(base, beta);
        assert_eq!(base, session);
        // Parts cannot run together: ("ab","c") differs from ("a","bc").
        let run_a = ResponseCache::key("messages", "ab", &[("c", body)], &HeaderMap::new());
        let run_b = ResponseCache::key("messages", "a", &[("bc", body)], &HeaderMap::new());
        assert_ne!(run_a, run_b);
    }

    #[test]
    fn the_readers_max_age_bounds_what_it_gets() {
        let cache = ResponseCache::default();
        let key = [7; 32];
        cache.put(
            key,
            None,
            Bytes::from_static(b"x"),
            Duration::from_secs(3600),
        );
        std::thread::sleep(Duration::from_millis(20));
        assert!(cache.get(&key, Duration::from_millis(5)).is_none());
        assert!(cache.get(&key, Duration::from_secs(60)).is_some());
    }
}
