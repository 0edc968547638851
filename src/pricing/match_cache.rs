//! Which price entries' `match` regexes accept a model name, remembered
//! per name.
//!
//! Every request (admission's worst case) and every event (the
//! accountant) looks a model up; running each entry's regexes every time
//! was a visible share of the gateway's CPU profile. Model names repeat,
//! so the indices of the entries that match a name are kept (for a bounded
//! number of names); time, provider and endpoint still filter on each
//! lookup, so the answer is exactly the uncached one.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Most distinct model names remembered; names past it are matched every
/// time (a client inventing names cannot grow the map).
const MAX_NAMES: usize = 4096;

/// Model name → indices (ascending) of the entries whose regexes match it.
#[derive(Default)]
pub struct MatchCache {
    names: RwLock<HashMap<Box<str>, Arc<[u32]>>>,
}

impl MatchCache {
    /// The remembered indices for `model`, or `compute`'s (remembered while
    /// there is room).
    pub fn get_or_compute(&self, model: &str, compute: impl FnOnce() -> Vec<u32>) -> Arc<[u32]> {
        if let Some(hit) = self.read().get(model) {
            return hit.clone();
        }
        let ids: Arc<[u32]> = compute().into();
        let mut names = self.names.write().unwrap_or_else(|p| p.into_inner());
        if names.len() < MAX_NAMES {
            names.insert(model.into(), ids.clone());
        }
        ids
    }

    /// The map for reading (a poisoned lock still holds valid entries).
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Box<str>, Arc<[u32]>>> {
        self.names.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// A copy of a book starts with an empty cache (it fills again on use).
impl Clone for MatchCache {
    fn clone(&self) -> Self {
        MatchCache::default()
    }
}

/// Shows how many names are remembered, not the map.
impl std::fmt::Debug for MatchCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MatchCache({} names)", self.read().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computes_once_per_name_and_stays_bounded() {
        let cache = MatchCache::default();
        let mut calls = 0;
        for _ in 0..3 {
            let ids = cache.get_or_compute("claude-x", || {
                calls += 1;
                vec![1, 4]
            });
            assert_eq!(&ids[..], &[1, 4]);
        }
        assert_eq!(calls, 1);
        for i in 0..MAX_NAMES + 10 {
            cache.get_or_compute(&format!("m{i}"), Vec::new);
        }
        assert_eq!(cache.read().len(), MAX_NAMES);
    }
}
