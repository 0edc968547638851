//! The lake on object storage (S3 and S3-compatible stores, GCS, Azure
//! Blob) through the `object_store` crate DataFusion reads with.
//!
//! The layout is the local one, with keys under the URL's prefix:
//! `<prefix>/events/day=D/p00000-<first>-<last>.parquet`. What differs is
//! the commit point. Locally a file is written to a temp name and renamed;
//! an object store has no rename (copy + delete is not atomic), but it has
//! something as good: an object becomes visible only when its upload is
//! complete (a single PUT, or CompleteMultipartUpload for large files), so
//! a reader never sees part of a file and no temp name is needed.
//!
//! New files (sink flushes, compaction outputs) are written with a
//! conditional put (`PutMode::Create`): file names are offset ranges, so
//! a second writer of the same name (a sink that lost its partition but
//! does not know it yet, or a retry after a crash) holds the same rows,
//! and the first complete upload wins instead of being overwritten. A
//! small manifest would add a second object to keep consistent with the
//! files; the names already say everything a reader needs. Large files go
//! up in parts, which cannot be conditional: they check that the name is
//! free first, and a racing writer of the same name can only replace the
//! file by one holding the same rows. `reprice` replaces files in place
//! (a plain PUT: readers see the old object or the new one).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{
    ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutMode, PutOptions, PutPayload, WriteMultipart,
};
use tokio::runtime::{Handle, RuntimeFlavor};
use url::Url;

pub use super::config::LakeConfig;

/// Files larger than this are uploaded in parts.
const MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;

/// The size of one part of a multipart upload.
const PART_BYTES: usize = 8 * 1024 * 1024;

/// Why the lake's object store could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum ObjectLakeError {
    #[error("[lake] url {url:?} is not a valid URL: {message}")]
    BadUrl { url: String, message: String },
    #[error(
        "[lake] url {url:?}: scheme not supported (use s3://, gs://, az://, file:// or a plain path)"
    )]
    Scheme { url: String },
    #[error("[lake] url {url}: cannot set up the object store: {source}")]
    Build {
        url: String,
        source: object_store::Error,
    },
    #[error("lake object {path}: {source}")]
    Store {
        path: String,
        source: object_store::Error,
    },
    #[error("the lake's object store is used outside a Tokio runtime")]
    NoRuntime,
}

/// Where `[lake] url` points.
pub enum LakeLocation {
    /// A local directory (the default, `file://` or a plain path).
    Local(PathBuf),
    /// A bucket.
    Object(ObjectLake),
}

impl LakeLocation {
    /// Parses `[lake]`; `default_dir` is used when `url` is empty.
    /// Must run inside a Tokio runtime (the store is driven by it).
    pub fn parse(cfg: &LakeConfig, default_dir: PathBuf) -> Result<LakeLocation, ObjectLakeError> {
        let raw = cfg.url.trim();
        if raw.is_empty() {
            return Ok(LakeLocation::Local(default_dir));
        }
        if !raw.contains("://") {
            return Ok(LakeLocation::Local(PathBuf::from(raw)));
        }
        let bad = |message: String| ObjectLakeError::BadUrl {
            url: raw.to_owned(),
            message,
        };
        let url = Url::parse(raw).map_err(|e| bad(e.to_string()))?;
        if url.scheme() == "file" {
            let path = url
                .to_file_path()
                .map_err(|()| bad("not a local path".into()))?;
            return Ok(LakeLocation::Local(path));
        }
        let (scheme, prefix) = ObjectStoreScheme::parse(&url).map_err(|e| bad(e.to_string()))?;
        let store = build_store(&scheme, &url, &cfg.options)?;
        let base = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
        ObjectLake::new(store, &base, prefix).map(LakeLocation::Object)
    }
}

/// The store for a cloud URL: credentials and settings from the
/// environment first, then `[lake] options`.
fn build_store(
    scheme: &ObjectStoreScheme,
    url: &Url,
    options: &BTreeMap<String, String>,
) -> Result<Arc<dyn ObjectStore>, ObjectLakeError> {
    let build = |source| ObjectLakeError::Build {
        url: url.to_string(),
        source,
    };
    let key = |k: &str| k.to_ascii_lowercase();
    Ok(match scheme {
        ObjectStoreScheme::AmazonS3 => {
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(url.as_str());
            for (k, v) in options {
                if let Ok(k) = key(k).parse() {
                    b = b.with_config(k, v);
                }
            }
            Arc::new(b.build().map_err(build)?)
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let mut b =
                object_store::gcp::GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
            for (k, v) in options {
                if let Ok(k) = key(k).parse() {
                    b = b.with_config(k, v);
                }
            }
            Arc::new(b.build().map_err(build)?)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let mut b =
                object_store::azure::MicrosoftAzureBuilder::from_env().with_url(url.as_str());
            for (k, v) in options {
                if let Ok(k) = key(k).parse() {
                    b = b.with_config(k, v);
                }
            }
            Arc::new(b.build().map_err(build)?)
        }
        _ => {
            return Err(ObjectLakeError::Scheme {
                url: url.to_string(),
            });
        }
    })
}

/// A lake in a bucket: the store, where in it the lake is, and the
/// runtime that drives its requests.
#[derive(Debug)]
pub struct ObjectLake {
    store: Arc<dyn ObjectStore>,
    /// `scheme://bucket`, the key DataFusion finds the store under.
    base: String,
    /// The lake's prefix inside the bucket (may be empty).
    prefix: Path,
    /// Lake files are written and listed from blocking threads (the
    /// sink's and compaction's); their requests run on this runtime.
    handle: Handle,
    /// How long the query API may reuse a file listing.
    listing_ttl: Duration,
}

impl ObjectLake {
    /// A lake at `prefix` of `store`, which DataFusion will find under
    /// `base` (`scheme://bucket`). Must run inside a Tokio runtime.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        base: &str,
        prefix: Path,
    ) -> Result<ObjectLake, ObjectLakeError> {
        let handle = Handle::try_current().map_err(|_| ObjectLakeError::NoRuntime)?;
        Ok(ObjectLake {
            store,
            base: base.trim_end_matches('/').to_owned(),
            prefix,
            handle,
            listing_ttl: Duration::from_secs(1),
        })
    }

    /// Sets how long the query API may reuse a listing (keep it within
    /// the sink's flush interval).
    pub fn with_listing_ttl(mut self, ttl: Duration) -> ObjectLake {
        self.listing_ttl = ttl;
        self
    }

    /// The store itself.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// `scheme://bucket`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The lake's prefix inside the bucket.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// How long a listing may be reused.
    pub fn listing_ttl(&self) -> Duration {
        self.listing_ttl
    }

    /// The URL of the directory `dir` (a key prefix) for DataFusion.
    pub fn url_of(&self, dir: &FsPath) -> String {
        format!("{}/{}/", self.base, key(dir))
    }

    /// Runs a store request to completion from synchronous code: a
    /// blocking thread, or the sink's task (then the worker is handed
    /// over to others while it waits, as for a local file write).
    fn block<F: Future>(&self, fut: F) -> F::Output {
        match self.handle.runtime_flavor() {
            RuntimeFlavor::CurrentThread => self.handle.block_on(fut),
            _ => tokio::task::block_in_place(|| self.handle.block_on(fut)),
        }
    }

    /// Every object under `dir` with its size.
    pub fn list(&self, dir: &FsPath) -> Result<Vec<(PathBuf, u64)>, ObjectLakeError> {
        let prefix = Path::from(key(dir));
        let listed: Vec<_> = self
            .block(self.store.list(Some(&prefix)).try_collect::<Vec<_>>())
            .map_err(store_err(dir))?;
        Ok(listed
            .into_iter()
            .map(|m| (PathBuf::from(m.location.as_ref()), m.size))
            .collect())
    }

    /// The whole object at `path`.
    pub fn get(&self, path: &FsPath) -> Result<Bytes, ObjectLakeError> {
        let location = Path::from(key(path));
        self.block(async { self.store.get(&location).await?.bytes().await })
            .map_err(store_err(path))
    }

    /// Uploads `data` as `path`, visible only once complete. `create`:
    /// keep an object already there (see the module docs).
    pub fn put(&self, path: &FsPath, data: Vec<u8>, create: bool) -> Result<(), ObjectLakeError> {
        let location = Path::from(key(path));
        let store = self.store.as_ref();
        let result = self.block(async {
            let data = Bytes::from(data);
            if create {
                return upload(store, &location, data, true).await;
            }
            let old = match store.head(&location).await {
                Ok(meta) => Some(meta),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
            upload(store, &location, data.clone(), false).await?;
            if let Some(old) = old {
                distinguish_replacement(store, &location, &old, data).await?;
            }
            Ok(())
        });
        result.map_err(store_err(path))
    }

    /// Deletes `path`; one already gone is not an error.
    pub fn delete(&self, path: &FsPath) -> Result<(), ObjectLakeError> {
        let location = Path::from(key(path));
        match self.block(self.store.delete(&location)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err(path)(e)),
        }
    }
}

/// Uploads `data` whole or in parts (by size).
async fn upload(
    store: &dyn ObjectStore,
    location: &Path,
    data: Bytes,
    create: bool,
) -> object_store::Result<()> {
    if data.len() <= MULTIPART_THRESHOLD {
        put_whole(store, location, data, create).await
    } else {
        put_parts(store, location, data, create).await
    }
}

/// Most times a replacement is uploaded again to tell it from the old
/// object.
const REPLACE_TRIES: u32 = 3;

/// Makes sure the object that replaced `old` at `location` differs from it
/// in size or in its modification second. Readers cache a file's footer
/// and statistics by size and modification time (DataFusion does, and a
/// bucket gives that time in whole seconds): a replacement of the same
/// size written within the same second (a reprice right after the sink's
/// flush: prices change digits, not lengths) would be taken for the old
/// file by every such cache, for as long as it holds it. So it is
/// uploaded again in a later second.
async fn distinguish_replacement(
    store: &dyn ObjectStore,
    location: &Path,
    old: &object_store::ObjectMeta,
    data: Bytes,
) -> object_store::Result<()> {
    for _ in 0..REPLACE_TRIES {
        let new = store.head(location).await?;
        let same_second = new.last_modified.timestamp() == old.last_modified.timestamp();
        if new.size != old.size || !same_second {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        upload(store, location, data.clone(), false).await?;
    }
    Ok(())
}

/// One PUT; with `create`, a conditional one that leaves an existing
/// object (same name, same rows) in place.
async fn put_whole(
    store: &dyn ObjectStore,
    location: &Path,
    data: Bytes,
    create: bool,
) -> object_store::Result<()> {
    let mode = if create {
        PutMode::Create
    } else {
        PutMode::Overwrite
    };
    let opts = PutOptions {
        mode,
        ..PutOptions::default()
    };
    match store.put_opts(location, PutPayload::from(data), opts).await {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. }) if create => Ok(()),
        Err(e) => Err(e),
    }
}

/// A multipart upload, which becomes visible when completed (and is
/// aborted on failure, leaving nothing). With `create`, skipped when the
/// object is already there.
async fn put_parts(
    store: &dyn ObjectStore,
    location: &Path,
    data: Bytes,
    create: bool,
) -> object_store::Result<()> {
    if create {
        match store.head(location).await {
            Ok(_) => return Ok(()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let upload = store.put_multipart(location).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    writer.put(data);
    writer.finish().await.map(|_| ())
}

/// A lake path as an object key (`/`-separated, no leading `/`).
fn key(path: &FsPath) -> String {
    path.to_string_lossy().trim_matches('/').to_owned()
}

/// Names the object in a store error.
fn store_err(path: &FsPath) -> impl Fn(object_store::Error) -> ObjectLakeError + '_ {
    move |source| ObjectLakeError::Store {
        path: path.display().to_string(),
        source,
    }
}

/// A lake in an in-memory bucket, for tests of the bucket code paths.
#[cfg(test)]
pub(crate) fn in_memory_layout() -> crate::lake::files::LakeLayout {
    let store = std::sync::Arc::new(object_store::memory::InMemory::new());
    let lake = ObjectLake::new(
        store,
        "memory://lake",
        object_store::path::Path::from("pre"),
    )
    .expect("an in-memory lake");
    crate::lake::files::LakeLayout::on_object_store(lake)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_file_keeps_the_first_upload_and_a_replacement_overwrites() {
        let store = Arc::new(object_store::memory::InMemory::new());
        let lake = ObjectLake::new(store, "memory://lake", Path::from("pre")).unwrap();
        let lake = Arc::new(lake);
        let l = lake.clone();
        tokio::task::spawn_blocking(move || {
            let path = FsPath::new("pre/events/f.parquet");
            l.put(path, b"first".to_vec(), true).unwrap();
            l.put(path, b"second".to_vec(), true).unwrap();
            assert_eq!(l.get(path).unwrap().as_ref(), b"first");
            l.put(path, b"third".to_vec(), false).unwrap();
            assert_eq!(l.get(path).unwrap().as_ref(), b"third");
            let big = vec![7u8; MULTIPART_THRESHOLD + 1];
            let big_path = FsPath::new("pre/events/big.parquet");
            l.put(big_path, big.clone(), true).unwrap();
            assert_eq!(l.get(big_path).unwrap().len(), big.len());
            let listed = l.list(FsPath::new("pre/events")).unwrap();
            assert_eq!(listed.len(), 2);
            l.delete(path).unwrap();
            l.delete(path).unwrap();
            assert_eq!(l.list(FsPath::new("pre/events")).unwrap().len(), 1);
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replacement_of_the_same_size_differs_in_its_modification_second() {
        let store = Arc::new(object_store::memory::InMemory::new());
        let lake = ObjectLake::new(store.clone(), "memory://lake", Path::from("pre")).unwrap();
        let location = Path::from("pre/events_hourly/f.parquet");
        let meta = tokio::task::spawn_blocking(move || {
            let path = FsPath::new("pre/events_hourly/f.parquet");
            lake.put(path, b"cost=0.000752".to_vec(), true).unwrap();
            let old = lake.block(lake.store.head(&Path::from(key(path)))).unwrap();
            lake.put(path, b"cost=0.001504".to_vec(), false).unwrap();
            old
        })
        .await
        .unwrap();
        let new = store.head(&location).await.unwrap();
        assert_eq!(new.size, meta.size);
        assert_ne!(
            new.last_modified.timestamp(),
            meta.last_modified.timestamp(),
            "a cache keyed by size and second would take it for the old file"
        );
        let bytes = store.get(&location).await.unwrap().bytes().await.unwrap();
        assert_eq!(bytes.as_ref(), b"cost=0.001504");
    }

    #[test]
    fn plain_paths_file_urls_and_buckets_are_told_apart() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let _guard = rt.enter();
        let parse = |url: &str| {
            let cfg = LakeConfig {
                url: url.into(),
                options: BTreeMap::from([
                    ("aws_region".into(), "us-east-1".into()),
                    ("aws_endpoint".into(), "http://127.0.0.1:9".into()),
                    ("azure_storage_account_name".into(), "lakeaccount".into()),
                ]),
                ..LakeConfig::default()
            };
            LakeLocation::parse(&cfg, PathBuf::from("/default"))
        };
        let local = |url: &str| match parse(url) {
            Ok(LakeLocation::Local(p)) => p,
            _ => panic!("{url} should be local"),
        };
        assert_eq!(local(""), PathBuf::from("/default"));
        assert_eq!(local("/srv/lake"), PathBuf::from("/srv/lake"));
        assert_eq!(local("file:///srv/lake"), PathBuf::from("/srv/lake"));
        match parse("s3://bucket/some/prefix") {
            Ok(LakeLocation::Object(o)) => {
                assert_eq!(o.base(), "s3://bucket");
                assert_eq!(o.prefix().as_ref(), "some/prefix");
                assert_eq!(
                    o.url_of(FsPath::new("some/prefix/events")),
                    "s3://bucket/some/prefix/events/"
                );
            }
            _ => panic!("s3 should be an object lake"),
        }
        // No request is made: a store is built, credentials are found when
        // the first request needs them (GCS's from the environment or the
        // instance's metadata server).
        for (url, base) in [
            ("gs://bucket/some/prefix", "gs://bucket"),
            ("az://container/some/prefix", "az://container"),
        ] {
            match parse(url) {
                Ok(LakeLocation::Object(o)) => {
                    assert_eq!(o.base(), base);
                    assert_eq!(o.prefix().as_ref(), "some/prefix");
                }
                Ok(LakeLocation::Local(_)) => panic!("{url} should be an object lake"),
                Err(e) => panic!("{url}: {e}"),
            }
        }
        assert!(matches!(
            parse("ftp://host/x"),
            Err(ObjectLakeError::Scheme { .. } | ObjectLakeError::BadUrl { .. })
        ));
    }
}
