//! The lake: costed events as Parquet files, partitioned by day, and the
//! DataFusion queries over them.

#[cfg(feature = "lake")]
pub mod audit;
#[cfg(feature = "lake")]
pub mod compact;
pub mod config;
#[cfg(feature = "lake")]
pub mod files;
#[cfg(feature = "lake")]
pub mod object;
#[cfg(feature = "lake")]
pub mod query;
#[cfg(feature = "lake")]
pub mod reprice;
#[cfg(feature = "lake")]
pub mod retention;
#[cfg(feature = "lake")]
pub mod rollup;
#[cfg(feature = "lake")]
pub mod sink;
#[cfg(feature = "lake")]
pub mod store;

pub use config::{LakeConfig, SinkConfig};

/// Why a lake operation failed; names the file or query involved.
#[cfg(feature = "lake")]
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake file {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("writing Parquet {path}: {message}")]
    Write {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("query failed: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    #[error("encoding query result: {0}")]
    Encode(String),
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
    #[error("SQL refused: {0}")]
    Refused(String),
    /// A trace or session view would hold more events than the API's
    /// `api.max_view_events`: the whole view is refused rather than cut,
    /// so its totals and agent tree are never those of part of it.
    #[error(
        "{column} {value} has more than {limit} events (api.max_view_events); page through them with GET /v1/logs?{column}=<id>"
    )]
    TooManyEvents {
        column: &'static str,
        value: String,
        limit: usize,
    },
    #[error("SQL failed: {0}")]
    BadSql(String),
    #[error("query ran longer than its {0:?} time limit and was cancelled")]
    TimedOut(std::time::Duration),
    #[error(transparent)]
    Object(#[from] object::ObjectLakeError),
    #[error("lake worker stopped unexpectedly: {0}")]
    Worker(String),
}
