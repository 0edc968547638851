//! `[lake]` and `[sink]` of the configuration, apart from the lake itself
//! so that a build without the `lake` feature (the gateway's) still reads
//! every config file the full build reads.

use std::collections::BTreeMap;
use std::path::Path as FsPath;

/// `[lake]` in `tollgate.toml`: where the Parquet lake lives.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`,
    /// `file:///path` or a plain path. Empty: `data.dir/lake`.
    pub url: String,
    /// Settings of the object store, by the `object_store` crate's config
    /// keys (`aws_endpoint`, `aws_region`, `aws_allow_http`,
    /// `aws_virtual_hosted_style_request`, `aws_access_key_id`,
    /// `google_service_account`, `azure_storage_account_name`, …). They
    /// override what the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`)
    /// says.
    pub options: BTreeMap<String, String>,
    /// Raw events older than this many days are deleted, whole days at a
    /// time, by the sink's compactor (0: kept for ever).
    pub retention_days: u32,
    /// Hourly rollups older than this many days are deleted likewise (0:
    /// kept for ever). Longer than `retention_days`, spend over old days
    /// is still answered from rollups.
    pub rollup_retention_days: u32,
}

impl LakeConfig {
    /// A relative plain path is taken from the config file's directory,
    /// like `data.dir`.
    pub fn resolve_relative(&mut self, base: &FsPath) {
        let plain = !self.url.is_empty() && !self.url.contains("://");
        if plain && FsPath::new(&self.url).is_relative() {
            self.url = base.join(&self.url).display().to_string();
        }
    }
}

/// When the sink turns buffered events into a Parquet file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    pub flush_rows: usize,
    pub flush_interval_ms: u64,
    /// How often the sink merges small lake files (0 turns it off).
    pub compact_interval_secs: u64,
    /// Fewest consecutive small files worth merging.
    pub compact_min_files: usize,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            flush_rows: 50_000,
            flush_interval_ms: 2_000,
            compact_interval_secs: 600,
            compact_min_files: 8,
        }
    }
}
