//! The exact-match response cache of routes with `cache = { mode = "simple" }`:
//! an identical request (same endpoint, targets and body bytes) within
//! `max_age` is answered from memory, recorded as a cache hit (provider
//! `cache`, no usage, so it is priced at $0). Bounded by bytes (moka).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};

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
    /// The key of a request: what it asks and where it would go.
    pub fn key(endpoint: &str, targets: &[&str], body: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(endpoint.as_bytes());
        for t in targets {
            h.update([0]);
            h.update(t.as_bytes());
        }
        h.update([0]);
        h.update(body);
        h.finalize().into()
    }

    /// A fresh answer for `key`, if one is stored.
    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<Cached>> {
        let hit = self.entries.get(key)?;
        if hit.stored.elapsed() <= hit.max_age {
            Some(hit)
        } else {
            self.entries.invalidate(key);
            None
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
