//! File listings of a lake in a bucket, kept fresh ahead of the queries
//! that need them.
//!
//! A listing is a LIST request per 1,000 keys, tens to hundreds of
//! milliseconds on a real bucket. DataFusion's own listing cache forgets a
//! listing when its TTL runs out, so the next query waits for a new one:
//! at one lookup every 20 ms and a 1 s TTL, one lookup in fifty paid for a
//! LIST, which made the bucket's trace p99 five times local disk's. This
//! cache takes DataFusion's place (same trait, same key: the table's base
//! path) and re-lists a table in the background every half TTL while
//! queries keep using it, so a served listing is never older than the TTL
//! (the sink's flush interval) and a query in a busy API never waits for
//! one. A table nobody queried for [`KEEP_WARM`] is no longer refreshed
//! and its listing is dropped; the next query lists it itself, as before.

use std::collections::HashMap as StdHashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use datafusion::common::{HashMap, TableReference};
use datafusion::execution::cache::cache_manager::CachedFileList;
use datafusion::execution::cache::{Cache, CacheEntryInfo, CacheValue, TableScopedPath};
use datafusion::object_store::{ObjectMeta, ObjectStore};
use futures::TryStreamExt;
use tokio::time::Instant;

/// How long after its last query a table's listing is still refreshed.
/// Past it, an idle API stops listing the bucket (a LIST costs money and
/// requests on every refresh).
pub const KEEP_WARM: Duration = Duration::from_secs(60);

/// One table's listing.
struct Entry {
    listing: CachedFileList,
    /// When the LIST behind it started: nothing newer than that is in it.
    listed_at: Instant,
    /// When a query last asked for it.
    used_at: Instant,
}

/// The listing cache of a bucket's query runtime (see the module docs).
pub struct FreshListings {
    /// The store listings come from (the lake's view of the bucket, the
    /// one DataFusion lists through, so a refreshed listing equals one a
    /// query would have made).
    store: Arc<dyn ObjectStore>,
    ttl: Mutex<Duration>,
    /// Bytes of listings kept at most; the least recently used go first.
    limit: Mutex<usize>,
    entries: Mutex<StdHashMap<TableScopedPath, Entry>>,
    /// When a query last found no fresh listing of a table that it is now
    /// listing itself (see [`Cache::put`]).
    misses: Mutex<StdHashMap<TableScopedPath, Instant>>,
    /// How long after its last query a table is still refreshed
    /// ([`KEEP_WARM`] outside tests).
    keep_warm: Duration,
    /// Whether the background refresher is running.
    refreshing: AtomicBool,
    /// This cache, for the refresher to hold without keeping it alive.
    me: Weak<FreshListings>,
}

impl FreshListings {
    /// A cache listing through `store`, whose listings are served for at
    /// most `ttl` after they were taken, within `limit` bytes.
    pub fn new(store: Arc<dyn ObjectStore>, ttl: Duration, limit: usize) -> Arc<FreshListings> {
        Self::keeping_warm(store, ttl, limit, KEEP_WARM)
    }

    /// [`FreshListings::new`] with its own keep-warm period, so tests need
    /// not wait a minute for a table to go cold.
    fn keeping_warm(
        store: Arc<dyn ObjectStore>,
        ttl: Duration,
        limit: usize,
        keep_warm: Duration,
    ) -> Arc<FreshListings> {
        Arc::new_cyclic(|me| FreshListings {
            keep_warm,
            store,
            ttl: Mutex::new(ttl),
            limit: Mutex::new(limit),
            entries: Mutex::new(StdHashMap::new()),
            misses: Mutex::new(StdHashMap::new()),
            refreshing: AtomicBool::new(false),
            me: me.clone(),
        })
    }

    fn entries(&self) -> MutexGuard<'_, StdHashMap<TableScopedPath, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn misses(&self) -> MutexGuard<'_, StdHashMap<TableScopedPath, Instant>> {
        self.misses.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ttl(&self) -> Duration {
        *self.ttl.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a listing taken at `listed_at`, unless a newer one is there.
    fn store_listing(&self, key: &TableScopedPath, listing: CachedFileList, listed_at: Instant) {
        let limit = *self.limit.lock().unwrap_or_else(|p| p.into_inner());
        let mut entries = self.entries();
        let used_at = match entries.get(key) {
            Some(e) if e.listed_at > listed_at => return,
            Some(e) => e.used_at,
            None => Instant::now(),
        };
        entries.insert(
            key.clone(),
            Entry {
                listing,
                listed_at,
                used_at,
            },
        );
        evict_over(&mut entries, limit);
    }

    /// Starts the background refresher unless it runs. Outside a Tokio
    /// runtime there is none: listings then simply expire.
    fn ensure_refresher(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        handle.spawn(refresh_while_used(self.me.clone()));
    }

    /// The tables used within the keep-warm period; forgets the others.
    fn still_used(&self) -> Vec<TableScopedPath> {
        let keep_warm = self.keep_warm;
        let mut entries = self.entries();
        entries.retain(|_, e| e.used_at.elapsed() < keep_warm);
        entries.keys().cloned().collect()
    }
}

/// Drops the least recently used listings until the rest fit `limit`.
fn evict_over(entries: &mut StdHashMap<TableScopedPath, Entry>, limit: usize) {
    loop {
        let total: usize = entries.values().map(|e| e.listing.size()).sum();
        if total <= limit {
            return;
        }
        let Some(oldest) = entries
            .iter()
            .min_by_key(|(_, e)| e.used_at)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        entries.remove(&oldest);
    }
}

/// Re-lists every table still in use each half TTL; stops when none is
/// (or the cache is gone). A failed LIST keeps the old listing, which then
/// expires on its own: a query after that lists itself and reports the
/// error.
async fn refresh_while_used(cache: Weak<FreshListings>) {
    loop {
        let Some(ttl) = cache.upgrade().map(|c| c.ttl()) else {
            return;
        };
        tokio::time::sleep(ttl / 2).await;
        let Some(cache) = cache.upgrade() else { return };
        let tables = cache.still_used();
        if tables.is_empty() {
            cache.refreshing.store(false, Ordering::Release);
            return;
        }
        for table in tables {
            let listed_at = Instant::now();
            let listing = cache
                .store
                .list(Some(&table.path))
                .try_collect::<Vec<ObjectMeta>>();
            match listing.await {
                Ok(files) => cache.store_listing(&table, files.into(), listed_at),
                Err(e) => tracing::warn!(table = %table.path, error = %e,
                    "could not refresh the lake's file listing; queries list it themselves once it expires"),
            }
        }
    }
}

impl Cache<TableScopedPath, CachedFileList> for FreshListings {
    fn get(&self, key: &TableScopedPath) -> Option<CachedFileList> {
        let ttl = self.ttl();
        let mut entries = self.entries();
        let fresh = entries.get_mut(key).and_then(|entry| {
            entry.used_at = Instant::now();
            (entry.listed_at.elapsed() < ttl).then(|| entry.listing.clone())
        });
        drop(entries);
        if fresh.is_none() {
            self.misses()
                .entry(key.clone())
                .or_insert_with(Instant::now);
        }
        fresh
    }

    /// DataFusion listed the table itself after a miss: the listing is as
    /// old as that miss (the LIST began after it), which is when its TTL
    /// starts. Of two queries that missed together, the second's put may
    /// find the miss already taken and count from now: that overstates its
    /// listing's age by at most one LIST, and the refresher replaces it
    /// within half a TTL.
    fn put(&self, key: &TableScopedPath, value: CachedFileList) -> Option<CachedFileList> {
        let missed_at = self.misses().remove(key);
        let old = self.entries().get(key).map(|e| e.listing.clone());
        self.store_listing(key, value, missed_at.unwrap_or_else(Instant::now));
        self.ensure_refresher();
        old
    }

    fn remove(&self, k: &TableScopedPath) -> Option<CachedFileList> {
        self.entries().remove(k).map(|e| e.listing)
    }

    fn contains_key(&self, k: &TableScopedPath) -> bool {
        let ttl = self.ttl();
        self.entries()
            .get(k)
            .is_some_and(|e| e.listed_at.elapsed() < ttl)
    }

    fn len(&self) -> usize {
        self.entries().len()
    }

    fn clear(&self) {
        self.entries().clear();
    }

    fn name(&self) -> String {
        "tollgate::FreshListings".into()
    }

    fn cache_limit(&self) -> usize {
        *self.limit.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update_cache_limit(&self, limit: usize) {
        *self.limit.lock().unwrap_or_else(|p| p.into_inner()) = limit;
        evict_over(&mut self.entries(), limit);
    }

    fn cache_ttl(&self) -> Option<Duration> {
        Some(self.ttl())
    }

    /// A cache without a TTL would serve a listing forever; the lake's
    /// always has one, so `None` leaves it as it is.
    fn update_cache_ttl(&self, ttl: Option<Duration>) {
        if let Some(ttl) = ttl {
            *self.ttl.lock().unwrap_or_else(|p| p.into_inner()) = ttl;
        }
    }

    fn drop_table_entries(&self, table_ref: &TableReference) -> datafusion::error::Result<()> {
        self.entries()
            .retain(|k, _| k.table.as_ref() != Some(table_ref));
        Ok(())
    }

    fn list_entries(&self) -> HashMap<TableScopedPath, CacheEntryInfo<CachedFileList>> {
        let ttl = self.ttl();
        self.entries()
            .iter()
            .map(|(k, e)| {
                let info = CacheEntryInfo {
                    value: e.listing.clone(),
                    size_bytes: e.listing.size(),
                    hits: 0,
                    expires: Some((e.listed_at + ttl).into_std()),
                };
                (k.clone(), info)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::object_store::memory::InMemory;
    use datafusion::object_store::path::Path;
    use datafusion::object_store::{ObjectStoreExt, PutPayload};

    fn table() -> TableScopedPath {
        TableScopedPath {
            table: None,
            path: Path::from("events"),
        }
    }

    async fn add(store: &InMemory, name: &str) {
        store
            .put(
                &Path::from(format!("events/{name}")),
                PutPayload::from_static(b"x"),
            )
            .await
            .unwrap();
    }

    async fn list(store: &InMemory) -> CachedFileList {
        store
            .list(Some(&Path::from("events")))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .into()
    }

    /// Waits until `done` holds, failing after `limit`.
    async fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        start.elapsed()
    }

    #[tokio::test]
    async fn a_table_in_use_never_expires_and_sees_new_files_within_the_ttl() {
        let store = Arc::new(InMemory::new());
        add(&store, "a.parquet").await;
        // Long enough that a loaded test machine does not stall the
        // refresher past it (it runs every half TTL).
        let ttl = Duration::from_secs(2);
        let cache = FreshListings::new(store.clone(), ttl, 1 << 20);
        assert!(cache.get(&table()).is_none(), "nothing listed yet");
        cache.put(&table(), list(&store).await);
        add(&store, "b.parquet").await;
        // Every get below must be served (a table in use never expires),
        // and the second file must show up within the TTL; the deadline
        // is generous for a loaded machine, the TTL check is the contract.
        let seen_after = eventually(Duration::from_secs(10), "b.parquet listed", || {
            let listing = cache
                .get(&table())
                .expect("a table in use is always served");
            listing.files.len() == 2
        })
        .await;
        assert!(
            seen_after <= ttl,
            "seen {seen_after:?} after it was written"
        );
        let until = Instant::now() + ttl * 2;
        while Instant::now() < until {
            assert!(
                cache.get(&table()).is_some(),
                "served past its TTL while in use"
            );
            tokio::time::sleep(ttl / 10).await;
        }
    }

    #[tokio::test]
    async fn a_table_nobody_queries_is_dropped_and_its_refresh_stops() {
        let store = Arc::new(InMemory::new());
        add(&store, "a.parquet").await;
        let keep_warm = Duration::from_millis(200);
        let cache = FreshListings::keeping_warm(
            store.clone(),
            Duration::from_millis(100),
            1 << 20,
            keep_warm,
        );
        cache.put(&table(), list(&store).await);
        assert!(
            cache.refreshing.load(Ordering::Acquire),
            "refreshing once used"
        );
        eventually(Duration::from_secs(10), "unused listing dropped", || {
            cache.len() == 0
        })
        .await;
        eventually(Duration::from_secs(10), "refresher stopped", || {
            !cache.refreshing.load(Ordering::Acquire)
        })
        .await;
        cache.put(&table(), list(&store).await);
        assert!(
            cache.refreshing.load(Ordering::Acquire),
            "and starts again on use"
        );
    }

    #[test]
    fn without_a_refresher_a_listing_expires_after_the_ttl() {
        // Outside a runtime no refresher starts, so only the TTL applies.
        let cache = FreshListings::new(
            Arc::new(InMemory::new()),
            Duration::from_millis(20),
            1 << 20,
        );
        assert!(cache.get(&table()).is_none());
        cache.put(&table(), CachedFileList::new(Vec::new()));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while cache.get(&table()).is_some() {
            assert!(std::time::Instant::now() < deadline, "never expired");
            std::thread::yield_now();
        }
        assert_eq!(cache.len(), 1, "expired, kept for the refresher to replace");
    }

    #[tokio::test]
    async fn listings_over_the_limit_evict_the_least_recently_used() {
        let store = Arc::new(InMemory::new());
        let cache = FreshListings::new(store.clone(), Duration::from_secs(60), 0);
        cache.put(&table(), CachedFileList::new(Vec::new()));
        assert_eq!(cache.len(), 1, "an empty listing fits a zero limit");
        add(&store, "a.parquet").await;
        cache.put(&table(), list(&store).await);
        assert_eq!(
            cache.len(),
            0,
            "a listing bigger than the limit is not kept"
        );
    }
}
