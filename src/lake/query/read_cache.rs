//! What the query API keeps of a bucket's objects between queries.
//!
//! On local disk the OS page cache keeps what queries read; a bucket has
//! none, and every column chunk a query reads is a request (tens of
//! milliseconds on S3). Dashboards ask the same spend queries again and
//! again, of the same rollup files, so this layer keeps the bytes read,
//! bounded by size (least recently used out first):
//! - an object no larger than [`WHOLE_OBJECT_BYTES`] (rollups, a sink's
//!   recent flushes) is fetched whole on its first read, in one request
//!   instead of one per column chunk, and every later range is a slice;
//! - of a larger object (a compacted day), each range is kept as read.
//!
//! The two are kept apart: a few hundred trace lookups read hundreds of
//! MiB of one-off pages of large objects, and must not push out the
//! rollups every dashboard refresh reads again. Small objects get a
//! quarter of the capacity (a 100M-event lake's rollups are 34 MiB; they
//! grow with hours × teams × users × models, not with events), ranges
//! the rest: the bloom filters and pages of a lake's large files are what
//! outgrows a cache. On the 100M bench lake in a bucket, with 256 MiB,
//! halves left repeated trace lookups at p99 61.2 ms and p50 39.5 ms;
//! three quarters for ranges, 23.5–24.2 and 17.1–17.2 ms.
//!
//! `tollgate reprice` rewrites objects under the same names, so every
//! entry is keyed by the object's version as the last listing saw it (its
//! ETag, else its size and modification time), and bytes are kept only
//! when the answer came from that very version. A rewritten object gets a
//! new version at the next listing (within the listing TTL) and its old
//! entries are never read again; until then a query sees the old object
//! whole, consistent with the footer DataFusion cached for it (keyed the
//! same way). An object no listing has named is read through, uncached.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::object_store::path::Path;
use datafusion::object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
    coalesce_ranges,
};
use futures::stream::{self, BoxStream, StreamExt};
use moka::policy::EvictionPolicy;

use crate::metrics::METRICS;

/// Objects up to this size are fetched whole on their first read.
pub const WHOLE_OBJECT_BYTES: u64 = 4 * 1024 * 1024;

/// Ranges of a large object at most this far apart are read in one
/// request. `object_store`'s default (1 MiB) assumes a request costs more
/// than a megabyte of transfer; for a trace lookup it merged the 35 pages
/// a trace has in a compacted day (69 KB) into one 5.4 MB read, 85 ms on
/// s3s-fs and as slow on S3 (one connection moves 50–100 MB/s). Separate
/// ranges are read ten at a time, so a few rounds of small requests beat
/// one long transfer; a gap this small costs about a millisecond to read
/// through. In the 10M bench lake, the p99 of a trace's first lookup fell
/// from 168 to 54 ms.
const COALESCE_GAP: u64 = 64 * 1024;

/// Objects whose listed version is remembered: far more than a lake has
/// files (a year of 4 partitions compacted daily is ~1,500, rollups as
/// many again); what falls out is only read through uncached.
const KNOWN_OBJECTS: u64 = 1_000_000;

/// An object as the last listing saw it.
#[derive(Clone)]
struct Known {
    meta: ObjectMeta,
    /// The version entries are keyed by (see [`version_of`]).
    version: Arc<str>,
}

/// One cached range of one version of an object.
#[derive(Clone, PartialEq, Eq, Hash)]
struct RangeKey {
    path: Path,
    version: Arc<str>,
    start: u64,
    end: u64,
}

/// The bucket's store with a bounded cache of what was read from it.
pub struct ReadCache {
    inner: Arc<dyn ObjectStore>,
    known: moka::sync::Cache<Path, Known>,
    /// Whole small objects.
    small: moka::sync::Cache<RangeKey, Bytes>,
    /// Ranges of large objects.
    ranges: moka::sync::Cache<RangeKey, Bytes>,
}

impl fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = self.small.weighted_size() + self.ranges.weighted_size();
        write!(f, "ReadCache({}, {held} bytes)", self.inner)
    }
}

impl fmt::Display for ReadCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReadCache({})", self.inner)
    }
}

/// The version an object's entries are keyed by: its ETag, else its size
/// and modification time to the second (see [`same_version`]).
fn version_of(meta: &ObjectMeta) -> Arc<str> {
    match &meta.e_tag {
        Some(tag) => Arc::from(tag.trim_matches('"')),
        None => Arc::from(format!("{}@{}", meta.size, meta.last_modified.timestamp())),
    }
}

/// Whether an answer (`got`) came from the version a listing saw
/// (`listed`). ETags are compared when both have one (quotes dropped: a
/// store may quote them in one and not the other); some stores list no
/// ETag, and then size and modification time are, to the second (what a
/// `Last-Modified` header can say, while listings give milliseconds).
fn same_version(listed: &ObjectMeta, got: &ObjectMeta) -> bool {
    match (&listed.e_tag, &got.e_tag) {
        (Some(a), Some(b)) => a.trim_matches('"') == b.trim_matches('"'),
        _ => {
            listed.size == got.size
                && listed.last_modified.timestamp() == got.last_modified.timestamp()
        }
    }
}

/// Whether `options` only asks for bytes: no condition, no version, not a
/// HEAD. Anything else goes to the store as asked.
fn plain(options: &GetOptions) -> bool {
    options.if_match.is_none()
        && options.if_none_match.is_none()
        && options.if_modified_since.is_none()
        && options.if_unmodified_since.is_none()
        && options.version.is_none()
        && !options.head
}

/// The byte range `range` asks for of an object of `size` bytes, as the
/// store would serve it; `None` for a range the store must reject itself.
fn resolve(range: Option<&GetRange>, size: u64) -> Option<Range<u64>> {
    let r = match range {
        None => 0..size,
        Some(GetRange::Bounded(r)) => r.start..r.end.min(size),
        Some(GetRange::Offset(o)) => *o..size,
        Some(GetRange::Suffix(n)) => size.saturating_sub(*n)..size,
    };
    (r.start < r.end || (r.start == 0 && size == 0)).then_some(r)
}

impl ReadCache {
    /// `inner` with up to `capacity` bytes of what was read from it kept.
    pub fn over(inner: Arc<dyn ObjectStore>, capacity: u64) -> ReadCache {
        // `share` quarters of the capacity.
        let bytes = |policy, share: u64| {
            moka::sync::Cache::builder()
                .max_capacity(capacity / 4 * share)
                .weigher(|_, b: &Bytes| u32::try_from(b.len()).unwrap_or(u32::MAX))
                .eviction_policy(policy)
                .build()
        };
        ReadCache {
            inner,
            known: moka::sync::Cache::new(KNOWN_OBJECTS),
            // Small objects are read again and again: a new one is kept
            // only if it is read more often than what it would push out.
            small: bytes(EvictionPolicy::tiny_lfu(), 1),
            // Once full of one-off lookup pages, that rule would refuse a
            // repeated query's ranges until its third run; the most
            // recently read are kept instead.
            ranges: bytes(EvictionPolicy::lru(), 3),
        }
    }

    /// The key of `range` of the listed version of `path`.
    fn key(path: &Path, known: &Known, range: &Range<u64>) -> RangeKey {
        RangeKey {
            path: path.clone(),
            version: known.version.clone(),
            start: range.start,
            end: range.end,
        }
    }

    /// `ranges` of the listed version of `path`, from the cache where it
    /// has them.
    async fn read(&self, path: &Path, known: &Known, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        if known.meta.size > WHOLE_OBJECT_BYTES {
            return self.read_ranges(path, known, ranges).await;
        }
        let whole = self.whole(path, known).await?;
        Ok(ranges
            .iter()
            .map(|r| {
                let end = (r.end as usize).min(whole.len());
                whole.slice((r.start as usize).min(end)..end)
            })
            .collect())
    }

    /// `ranges` of a large object: the kept ones from the cache, the rest
    /// read (coalesced, as `object_store` does) and kept.
    async fn read_ranges(
        &self,
        path: &Path,
        known: &Known,
        ranges: &[Range<u64>],
    ) -> Result<Vec<Bytes>> {
        let mut out: Vec<Option<Bytes>> = ranges
            .iter()
            .map(|r| self.ranges.get(&Self::key(path, known, r)))
            .collect();
        let missing: Vec<Range<u64>> = ranges
            .iter()
            .zip(&out)
            .filter(|(_, hit)| hit.is_none())
            .map(|(r, _)| r.clone())
            .collect();
        count(ranges.len() - missing.len(), missing.len());
        if !missing.is_empty() {
            let fetched = self.fetch_and_keep(path, known, &missing).await?;
            let slots = out.iter_mut().filter(|s| s.is_none());
            slots
                .zip(fetched)
                .for_each(|(slot, bytes)| *slot = Some(bytes));
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Reads `missing` from the store and keeps them, unless the object
    /// turned out not to be the listed version any more: then nothing is
    /// kept and it is read through until listed again.
    async fn fetch_and_keep(
        &self,
        path: &Path,
        known: &Known,
        missing: &[Range<u64>],
    ) -> Result<Vec<Bytes>> {
        let changed = AtomicBool::new(false);
        let started = std::time::Instant::now();
        let fetched = coalesce_ranges(
            missing,
            |r| self.fetch(path, known, r, &changed),
            COALESCE_GAP,
        )
        .await?;
        // What a query's GETs cost, per object: a first lookup's time in a
        // bucket is these reads (`TOLLGATE_LOG=tollgate::lake::query=debug`).
        tracing::debug!(
            object = %path,
            ranges = missing.len(),
            bytes = missing.iter().map(|r| r.end - r.start).sum::<u64>(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "bucket ranges read"
        );
        if changed.load(Ordering::Relaxed) {
            self.known.invalidate(path);
            return Ok(fetched);
        }
        for (range, bytes) in missing.iter().zip(&fetched) {
            // A copy: the answer may be a slice of a larger coalesced
            // read, which the cache's weight would not count.
            let owned = Bytes::copy_from_slice(bytes);
            self.ranges.insert(Self::key(path, known, range), owned);
        }
        Ok(fetched)
    }

    /// One range read from the store; sets `changed` if the object is no
    /// longer the listed version.
    async fn fetch(
        &self,
        path: &Path,
        known: &Known,
        range: Range<u64>,
        changed: &AtomicBool,
    ) -> Result<Bytes> {
        let got = self
            .inner
            .get_opts(path, GetOptions::new().with_range(Some(range)))
            .await?;
        if !same_version(&known.meta, &got.meta) {
            changed.store(true, Ordering::Relaxed);
        }
        got.bytes().await
    }

    /// The whole listed version of a small object, fetched once.
    async fn whole(&self, path: &Path, known: &Known) -> Result<Bytes> {
        let key = Self::key(path, known, &(0..known.meta.size));
        if let Some(bytes) = self.small.get(&key) {
            count(1, 0);
            return Ok(bytes);
        }
        count(0, 1);
        let started = std::time::Instant::now();
        let got = self.inner.get_opts(path, GetOptions::new()).await?;
        let same = same_version(&known.meta, &got.meta);
        let bytes = got.bytes().await?;
        tracing::debug!(
            object = %path,
            bytes = bytes.len(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "bucket object read whole"
        );
        if same && bytes.len() as u64 == known.meta.size {
            self.small.insert(key, bytes.clone());
        } else {
            self.known.invalidate(path);
        }
        Ok(bytes)
    }
}

/// Remembers the version a listing gives `meta`'s object.
fn learn(known: &moka::sync::Cache<Path, Known>, meta: &ObjectMeta) {
    let entry = Known {
        meta: meta.clone(),
        version: version_of(meta),
    };
    known.insert(meta.location.clone(), entry);
}

/// Counts reads served from the cache and from the store.
fn count(hits: usize, misses: usize) {
    let reads = &METRICS.lake_cached_reads;
    reads.with_label_values(&["hit"]).inc_by(hits as u64);
    reads.with_label_values(&["miss"]).inc_by(misses as u64);
}

#[async_trait]
impl ObjectStore for ReadCache {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.known.invalidate(location);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.known.invalidate(location);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let known = match self.known.get(location) {
            Some(known) if plain(&options) => known,
            _ => return self.inner.get_opts(location, options).await,
        };
        let Some(range) = resolve(options.range.as_ref(), known.meta.size) else {
            return self.inner.get_opts(location, options).await;
        };
        let mut bytes = self
            .read(location, &known, std::slice::from_ref(&range))
            .await?;
        let bytes = bytes.pop().unwrap_or_default();
        let range = range.start..range.start + bytes.len() as u64;
        Ok(GetResult {
            payload: GetResultPayload::Stream(stream::once(async move { Ok(bytes) }).boxed()),
            meta: known.meta,
            range,
            attributes: Default::default(),
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        match self.known.get(location) {
            Some(known) => self.read(location, &known, ranges).await,
            None => self.inner.get_ranges(location, ranges).await,
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let known = self.known.clone();
        let locations = locations
            .map(move |l| {
                if let Ok(path) = &l {
                    known.invalidate(path);
                }
                l
            })
            .boxed();
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let known = self.known.clone();
        self.inner
            .list(prefix)
            .map(move |m| {
                if let Ok(meta) = &m {
                    learn(&known, meta);
                }
                m
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let listed = self.inner.list_with_delimiter(prefix).await?;
        listed.objects.iter().for_each(|m| learn(&self.known, m));
        Ok(listed)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.known.invalidate(to);
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::object_store::ObjectStoreExt;
    use datafusion::object_store::memory::InMemory;
    use futures::TryStreamExt;

    /// `len` bytes that differ with `seed`.
    fn content(seed: u8, len: usize) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    /// A cache over an in-memory bucket, and the bucket itself (to change
    /// objects behind the cache's back, as another process would).
    fn bucket() -> (ReadCache, Arc<InMemory>) {
        let inner = Arc::new(InMemory::new());
        (ReadCache::over(inner.clone(), 64 << 20), inner)
    }

    async fn list_all(cache: &ReadCache) {
        let listed: Vec<ObjectMeta> = cache.list(None).try_collect().await.unwrap();
        assert!(!listed.is_empty());
    }

    #[tokio::test]
    async fn a_listed_small_object_is_read_once_until_a_listing_shows_a_new_version() {
        let (cache, inner) = bucket();
        let path = Path::from("events_hourly/day=2026-11-01/p00000-1-2.parquet");
        inner.put(&path, content(1, 1000).into()).await.unwrap();
        list_all(&cache).await;
        let first = cache.get_ranges(&path, &[0..10, 990..1000]).await.unwrap();
        assert_eq!(
            first,
            vec![
                content(1, 1000).slice(0..10),
                content(1, 1000).slice(990..1000)
            ]
        );

        // Rewritten in place (as reprice does): until a listing shows the
        // new version, reads are of the old one, whole.
        inner.put(&path, content(2, 1000).into()).await.unwrap();
        let suffix = cache
            .get_opts(
                &path,
                GetOptions::new().with_range(Some(GetRange::Suffix(8))),
            )
            .await
            .unwrap();
        assert_eq!(suffix.range, 992..1000);
        assert_eq!(
            suffix.bytes().await.unwrap(),
            content(1, 1000).slice(992..1000)
        );

        list_all(&cache).await;
        let after = cache.get_range(&path, 0..10).await.unwrap();
        assert_eq!(after, content(2, 1000).slice(0..10));
    }

    #[tokio::test]
    async fn ranges_of_a_large_object_are_kept_and_a_changed_object_is_not_cached() {
        let (cache, inner) = bucket();
        let path = Path::from("events/day=2026-11-01/p00000-1-2.parquet");
        let len = WHOLE_OBJECT_BYTES as usize + 4096;
        inner.put(&path, content(1, len).into()).await.unwrap();
        list_all(&cache).await;
        assert_eq!(
            cache.get_range(&path, 100..200).await.unwrap(),
            content(1, len).slice(100..200)
        );

        inner.put(&path, content(2, len).into()).await.unwrap();
        // The kept range is the listed version's; a new range finds the
        // object changed, is served as read, and nothing of it is kept.
        let got = cache
            .get_ranges(&path, &[100..200, 5000..5100])
            .await
            .unwrap();
        assert_eq!(got[0], content(1, len).slice(100..200));
        assert_eq!(got[1], content(2, len).slice(5000..5100));
        // The object is read through from then on, until it is listed again.
        assert_eq!(
            cache.get_range(&path, 100..200).await.unwrap(),
            content(2, len).slice(100..200)
        );
        inner.put(&path, content(3, len).into()).await.unwrap();
        assert_eq!(
            cache.get_range(&path, 100..200).await.unwrap(),
            content(3, len).slice(100..200)
        );
    }

    #[test]
    fn versions_compare_etags_else_size_and_time_to_the_second() {
        let at = |ms| chrono::DateTime::from_timestamp_millis(ms).unwrap();
        let meta = |e_tag: Option<&str>, size, ms| ObjectMeta {
            location: Path::from("a"),
            last_modified: at(ms),
            size,
            e_tag: e_tag.map(str::to_owned),
            version: None,
        };
        let listed = meta(Some("\"abc\""), 10, 1_000_400);
        assert!(same_version(&listed, &meta(Some("abc"), 10, 1_000_000)));
        assert!(!same_version(&listed, &meta(Some("abd"), 10, 1_000_400)));
        // A store that lists no ETag: size and the second of the change.
        let untagged = meta(None, 10, 1_000_400);
        assert!(same_version(&untagged, &meta(Some("abc"), 10, 1_000_000)));
        assert!(!same_version(&untagged, &meta(Some("abc"), 11, 1_000_000)));
        assert!(!same_version(&untagged, &meta(Some("abc"), 10, 1_001_000)));
    }

    #[tokio::test]
    async fn unlisted_objects_heads_and_conditional_reads_go_to_the_store() {
        let (cache, inner) = bucket();
        let path = Path::from("audit/day=2026-11-01/a.parquet");
        inner.put(&path, content(1, 100).into()).await.unwrap();
        assert_eq!(
            cache.get_range(&path, 0..4).await.unwrap(),
            content(1, 100).slice(0..4)
        );
        inner.put(&path, content(2, 100).into()).await.unwrap();
        assert_eq!(
            cache.get_range(&path, 0..4).await.unwrap(),
            content(2, 100).slice(0..4)
        );

        list_all(&cache).await;
        assert_eq!(cache.head(&path).await.unwrap().size, 100);
        let stale = GetOptions {
            if_none_match: inner.head(&path).await.unwrap().e_tag,
            ..GetOptions::new()
        };
        assert!(cache.get_opts(&path, stale).await.is_err(), "not modified");
        let past_the_end = GetOptions::new().with_range(Some(GetRange::Offset(500)));
        assert!(cache.get_opts(&path, past_the_end).await.is_err());
    }
}
