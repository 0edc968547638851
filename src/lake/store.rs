//! The object store the query engine reads the lake through.
//!
//! It is the lake's store (the local file system, or the bucket) with one
//! rule added: a file whose offset
//! range another file of the same partition and day already covers is not
//! listed. Compaction writes the merged file first and deletes its inputs
//! after, so between the two (or after a crash between them) a reader
//! sees each row exactly once instead of twice.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::object_store::local::LocalFileSystem;
use datafusion::object_store::path::Path;
use datafusion::object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use futures::stream::{self, BoxStream, StreamExt};

use super::files::parse_file_name;

/// The lake's view of its store (see the module docs).
#[derive(Debug)]
pub struct LakeStore {
    inner: Arc<dyn ObjectStore>,
}

impl LakeStore {
    /// A store over the whole local file system, like DataFusion's default.
    pub fn new() -> LakeStore {
        LakeStore::over(Arc::new(LocalFileSystem::new()))
    }

    /// The lake's view of `inner` (a bucket).
    pub fn over(inner: Arc<dyn ObjectStore>) -> LakeStore {
        LakeStore { inner }
    }
}

impl Default for LakeStore {
    fn default() -> Self {
        LakeStore::new()
    }
}

impl fmt::Display for LakeStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LakeStore({})", self.inner)
    }
}

/// `(directory, partition)` → the offset ranges of the files there.
type Ranges = HashMap<(String, u32), Vec<(u64, u64)>>;

/// Drops every lake file whose range another listed file strictly covers.
/// Files that are not lake files (other names) pass through.
pub fn without_superseded(objects: Vec<ObjectMeta>) -> Vec<ObjectMeta> {
    let key = |m: &ObjectMeta| {
        let name = m.location.filename()?;
        let (p, first, last) = parse_file_name(std::path::Path::new(name))?;
        let dir = m.location.as_ref().strip_suffix(name)?.to_owned();
        Some(((dir, p), (first, last)))
    };
    let mut ranges: Ranges = HashMap::new();
    for m in &objects {
        if let Some((k, r)) = key(m) {
            ranges.entry(k).or_default().push(r);
        }
    }
    objects
        .into_iter()
        .filter(|m| match key(m) {
            Some((k, (first, last))) => !ranges[&k]
                .iter()
                .any(|&(f, l)| f <= first && last <= l && (f, l) != (first, last)),
            None => true,
        })
        .collect()
}

#[async_trait]
impl ObjectStore for LakeStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        // The whole listing is needed to know what supersedes what; a
        // day's listing is small enough to collect.
        let listing = self.inner.list(prefix);
        stream::once(async move {
            let all: Vec<Result<ObjectMeta>> = listing.collect().await;
            let (ok, errors): (Vec<_>, Vec<_>) = all.into_iter().partition(|r| r.is_ok());
            let kept = without_superseded(ok.into_iter().filter_map(Result::ok).collect());
            stream::iter(errors.into_iter().chain(kept.into_iter().map(Ok)))
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        listed.objects = without_superseded(listed.objects);
        Ok(listed)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(path: &str) -> ObjectMeta {
        ObjectMeta {
            location: Path::from(path),
            last_modified: chrono::Utc::now(),
            size: 1,
            e_tag: None,
            version: None,
        }
    }

    #[test]
    fn files_covered_by_a_merged_file_are_hidden_and_others_kept() {
        let names = [
            "events/day=2026-11-22/p00000-00000000000000000000-00000000000000000009.parquet",
            "events/day=2026-11-22/p00000-00000000000000000010-00000000000000000019.parquet",
            "events/day=2026-11-22/p00000-00000000000000000000-00000000000000000019.parquet",
            "events/day=2026-11-22/p00001-00000000000000000000-00000000000000000009.parquet",
            "events/day=2026-11-23/p00000-00000000000000000000-00000000000000000009.parquet",
            "events/day=2026-11-22/notes.txt",
        ];
        let kept: Vec<String> = without_superseded(names.iter().map(|n| meta(n)).collect())
            .into_iter()
            .map(|m| m.location.to_string())
            .collect();
        assert_eq!(kept, vec![names[2], names[3], names[4], names[5]]);
    }
}
