//! Where lake files go and how they are written.
//!
//! A file is named by the bus partition and offset range it holds
//! (`day=D/p00000-<first>-<last>.parquet`), so writing the same records
//! again after a crash produces the same file, and the highest offset in
//! the file names tells a restarted sink what is already durable.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::NaiveDate;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::LakeError;
use super::object::{LakeLocation, ObjectLake};

/// Columns that get bloom filters: the point lookups of the query API.
const BLOOM_COLUMNS: &[&str] = &["trace_id", "session_id", "event_id"];

/// The lake's layout, in a local directory or a bucket (`remote`; paths
/// are then object keys). Its file operations are synchronous: call them
/// from blocking threads.
#[derive(Debug, Clone)]
pub struct LakeLayout {
    root: PathBuf,
    remote: Option<Arc<ObjectLake>>,
}

/// How writing a lake file treats one already there under its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// A new file (sink flush, compaction output): on object storage an
    /// existing object of the name holds the same rows and is kept.
    New,
    /// A rewrite of the file (reprice).
    Replace,
}

/// One lake file: where it is, the offsets it holds, its size.
#[derive(Debug, Clone)]
pub struct ListedFile {
    pub path: PathBuf,
    pub partition: u32,
    pub first: u64,
    pub last: u64,
    pub bytes: u64,
}

impl LakeLayout {
    /// A layout rooted at `root` (the lake directory).
    pub fn new(root: impl Into<PathBuf>) -> LakeLayout {
        LakeLayout {
            root: root.into(),
            remote: None,
        }
    }

    /// A layout in a bucket, under the lake's prefix.
    pub fn on_object_store(lake: ObjectLake) -> LakeLayout {
        LakeLayout {
            root: PathBuf::from(lake.prefix().as_ref()),
            remote: Some(Arc::new(lake)),
        }
    }

    /// The lake `[lake]` points at (default `data.dir/lake`); a bucket's
    /// listings may be reused by the query API for at most the sink's
    /// flush interval. Must run inside a Tokio runtime.
    pub fn from_config(cfg: &crate::config::Config) -> Result<LakeLayout, LakeError> {
        let flush = std::time::Duration::from_millis(cfg.sink.flush_interval_ms.max(1));
        Ok(match LakeLocation::parse(&cfg.lake, cfg.data.lake_dir())? {
            LakeLocation::Local(dir) => LakeLayout::new(dir),
            LakeLocation::Object(lake) => LakeLayout::on_object_store(lake.with_listing_ttl(flush)),
        })
    }

    /// The bucket the lake is in, if it is not local.
    pub fn remote(&self) -> Option<&Arc<ObjectLake>> {
        self.remote.as_ref()
    }

    /// The `events` table's directory (Hive-style `day=` partitions).
    pub fn events_dir(&self) -> PathBuf {
        self.root.join("events")
    }

    /// The file holding offsets `first..=last` of `partition` for `day`.
    pub fn file_path(&self, day: NaiveDate, partition: u32, first: u64, last: u64) -> PathBuf {
        self.events_dir()
            .join(format!("day={day}"))
            .join(file_name(partition, first, last))
    }

    /// Every lake file with its `(partition, first, last)`.
    pub fn files(&self) -> Result<Vec<(PathBuf, u32, u64, u64)>, LakeError> {
        Ok(self
            .listing()?
            .into_iter()
            .map(|f| (f.path, f.partition, f.first, f.last))
            .collect())
    }

    /// Every lake file with its offsets and size.
    pub fn listing(&self) -> Result<Vec<ListedFile>, LakeError> {
        self.listing_of(&self.events_dir())
    }

    /// The `events_hourly` table's directory: one rollup file per raw
    /// file, of the same name (see [`super::rollup`]).
    pub fn hourly_dir(&self) -> PathBuf {
        self.root.join("events_hourly")
    }

    /// The daily rollups' directory: like `events_hourly`, a day's sums
    /// per group instead of an hour's (see [`super::rollup`]).
    pub fn daily_dir(&self) -> PathBuf {
        self.root.join("events_daily")
    }

    /// Where the hourly rollup of the raw file at `raw` goes (`None` for a
    /// path that is not a raw lake file).
    pub fn hourly_path_of(&self, raw: &Path) -> Option<PathBuf> {
        rollup_path_of(&self.hourly_dir(), raw)
    }

    /// Where the daily rollup of the raw file at `raw` goes.
    pub fn daily_path_of(&self, raw: &Path) -> Option<PathBuf> {
        rollup_path_of(&self.daily_dir(), raw)
    }

    /// Every hourly rollup file with its offsets and size.
    pub fn hourly_listing(&self) -> Result<Vec<ListedFile>, LakeError> {
        self.listing_of(&self.hourly_dir())
    }

    /// Every daily rollup file with its offsets and size.
    pub fn daily_listing(&self) -> Result<Vec<ListedFile>, LakeError> {
        self.listing_of(&self.daily_dir())
    }

    /// The lake files (offset-named Parquet) under a table directory.
    pub fn listing_of(&self, table: &Path) -> Result<Vec<ListedFile>, LakeError> {
        let listed = match &self.remote {
            Some(lake) => lake.list(table)?,
            None => Self::local_files(table)?,
        };
        Ok(listed
            .into_iter()
            .filter_map(|(path, bytes)| {
                let (partition, first, last) = parse_file_name(&path)?;
                Some(ListedFile {
                    path,
                    partition,
                    first,
                    last,
                    bytes,
                })
            })
            .collect())
    }

    /// The files in the local `day=` directories, with their sizes.
    fn local_files(dir: &Path) -> Result<Vec<(PathBuf, u64)>, LakeError> {
        let dir = dir.to_owned();
        let mut out = Vec::new();
        let days = match std::fs::read_dir(&dir) {
            Ok(days) => days,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(source) => return Err(LakeError::Io { path: dir, source }),
        };
        for day in days {
            let day = day.map_err(|source| LakeError::Io {
                path: dir.clone(),
                source,
            })?;
            let day_path = day.path();
            if !day_path.is_dir() {
                continue;
            }
            let entries = std::fs::read_dir(&day_path).map_err(|source| LakeError::Io {
                path: day_path.clone(),
                source,
            })?;
            for entry in entries.flatten() {
                let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
                out.push((entry.path(), bytes));
            }
        }
        Ok(out)
    }

    /// Reads a lake file (see [`read_file`]).
    pub fn read(&self, path: &Path) -> Result<Vec<RecordBatch>, LakeError> {
        self.read_as(path, &crate::event::arrow_schema())
    }

    /// Reads a lake file of another table (a rollup) as `schema`.
    pub fn read_as(&self, path: &Path, schema: &SchemaRef) -> Result<Vec<RecordBatch>, LakeError> {
        match &self.remote {
            Some(lake) => read_batches(path, lake.get(path)?, schema),
            None => read_file_as(path, schema),
        }
    }

    /// Writes a lake file so that readers see all of it or nothing: locally
    /// by [`write_atomically`], in a bucket by one complete upload (see
    /// [`super::object`] for `mode`).
    pub fn write(
        &self,
        path: &Path,
        batch: &RecordBatch,
        mode: WriteMode,
    ) -> Result<(), LakeError> {
        match &self.remote {
            Some(lake) => {
                let data = write_parquet(Vec::new(), path, batch)?;
                Ok(lake.put(path, data, mode == WriteMode::New)?)
            }
            None => write_atomically(path, batch),
        }
    }

    /// Writes a small non-Parquet lake object (an audit record) whole:
    /// locally a temp file, fsync and rename; in a bucket one upload.
    pub fn put_bytes(&self, path: &Path, data: Vec<u8>) -> Result<(), LakeError> {
        if let Some(lake) = &self.remote {
            return Ok(lake.put(path, data, true)?);
        }
        let io = |p: &Path| {
            let p = p.to_owned();
            move |source| LakeError::Io { path: p, source }
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        crate::private_fs::create_dir_all(dir).map_err(io(dir))?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut file = crate::private_fs::create_file(&tmp).map_err(io(&tmp))?;
        file.write_all(&data).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    }

    /// The lake's root (a directory, or the prefix in a bucket).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Deletes a lake file; one already gone is not an error.
    pub fn remove(&self, path: &Path) -> Result<(), LakeError> {
        if let Some(lake) = &self.remote {
            return Ok(lake.delete(path)?);
        }
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(LakeError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// The highest offset per partition already in the lake.
    pub fn max_offsets(&self) -> Result<HashMap<u32, u64>, LakeError> {
        let mut max = HashMap::new();
        for (_, p, _, last) in self.files()? {
            let m = max.entry(p).or_insert(last);
            *m = (*m).max(last);
        }
        Ok(max)
    }
}

/// The name of the file holding offsets `first..=last` of `partition`.
pub fn file_name(partition: u32, first: u64, last: u64) -> String {
    format!("p{partition:05}-{first:020}-{last:020}.parquet")
}

/// The rollup under `dir` of the raw file at `raw`: same day directory,
/// same name (`None` for a path that is not a raw lake file).
fn rollup_path_of(dir: &Path, raw: &Path) -> Option<PathBuf> {
    let name = raw.file_name()?;
    let day = raw.parent()?.file_name()?;
    parse_file_name(raw)?;
    Some(dir.join(day).join(name))
}

/// `p00000-<first>-<last>.parquet` → `(partition, first, last)`.
pub(crate) fn parse_file_name(path: &Path) -> Option<(u32, u64, u64)> {
    let name = path.file_name()?.to_str()?.strip_suffix(".parquet")?;
    let mut parts = name.strip_prefix('p')?.split('-');
    let p = parts.next()?.parse().ok()?;
    let first = parts.next()?.parse().ok()?;
    let last = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((p, first, last))
}

/// Reads a lake file as batches in the current event schema: columns a
/// file written before they existed come back as nulls, so old files can
/// be rewritten (reprice, compaction) without losing them.
pub fn read_file(path: &Path) -> Result<Vec<RecordBatch>, LakeError> {
    read_file_as(path, &crate::event::arrow_schema())
}

/// [`read_file`] as the table of `schema` (a rollup's, say).
fn read_file_as(path: &Path, schema: &SchemaRef) -> Result<Vec<RecordBatch>, LakeError> {
    let file = File::open(path).map_err(|source| LakeError::Io {
        path: path.to_owned(),
        source,
    })?;
    read_batches(path, file, schema)
}

/// [`read_file`] over any Parquet source (a file, or an object's bytes).
fn read_batches<R: parquet::file::reader::ChunkReader + 'static>(
    path: &Path,
    data: R,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>, LakeError> {
    let read_err = |message: String| LakeError::Write {
        path: path.to_owned(),
        message,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(data)
        .and_then(|b| b.build())
        .map_err(|e| read_err(e.to_string()))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| read_err(e.to_string()))?;
        let columns = schema
            .fields()
            .iter()
            .map(|f| match batch.column_by_name(f.name()) {
                Some(c) if c.data_type() == f.data_type() => c.clone(),
                _ => arrow::array::new_null_array(f.data_type(), batch.num_rows()),
            })
            .collect();
        out.push(
            RecordBatch::try_new(schema.clone(), columns).map_err(|e| read_err(e.to_string()))?,
        );
    }
    Ok(out)
}

/// Rows per row group of a lake file.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Most rows in one data page. A lookup decodes every row of each page
/// the page index selects, for every column; in a bucket, where filters
/// are not pushed into the decoder (see `lake::query`), that was 32,770
/// rows decoded for a 5-row trace with 8,192-row pages. With 1,024-row
/// pages, on the benchmark's 10M lake in `s3s-fs`, trace lookup p50 fell
/// from 107–120 ms to 19.7–21.7 ms (local disk: 19.4–29.1 → 21.3–23.7 ms),
/// for 4.6% more bytes on disk (2026-12-02).
const PAGE_ROWS: usize = 1024;

/// Columns that get page statistics (the page index's min/max per page):
/// what the API's queries filter on in any lake table (events, rollups,
/// audit). Every other column keeps statistics per column chunk only.
///
/// DataFusion's footer cache holds each file's whole page index, parsed.
/// With 1,024-row pages and every column indexed, a compacted 100M-lake
/// day file (830,000 rows) took 4.5 MB there, so the 256 MiB cache held 59
/// of the 120 files and trace lookups kept re-reading and re-parsing the
/// others' footers. Min/max of a token count or a cost line per page
/// prunes nothing the API asks for; each page still has its offset index
/// entry, so a lookup reads only its pages of every column.
const PAGE_INDEX_COLUMNS: &[&str] = &[
    // events
    "event_id",
    "trace_id",
    "session_id",
    "started_at",
    "workspace",
    "team",
    "user",
    "key_id",
    "provider",
    "model_requested",
    "model_served",
    "billed_by",
    "status",
    // rollups
    "hour",
    "model",
    // audit
    "kind",
    "entity_id",
    "actor",
    "at",
];

/// Columns with (nearly) a distinct value per row. A dictionary buys them
/// nothing but a dictionary page of up to 1 MiB per row group, which a
/// reader must decompress before the one page it wants: on a 100M-event
/// lake most of a trace lookup's bytes were these pages. Integers and
/// timestamps are delta-encoded instead (sorted by time, their deltas
/// are small); identifiers are stored plain.
const NO_DICTIONARY: &[(&str, Encoding)] = &[
    ("event_id", Encoding::PLAIN),
    ("request_id", Encoding::PLAIN),
    ("trace_id", Encoding::PLAIN),
    ("started_at", Encoding::DELTA_BINARY_PACKED),
    ("ended_at", Encoding::DELTA_BINARY_PACKED),
    ("bus_offset", Encoding::DELTA_BINARY_PACKED),
    ("latency_ms", Encoding::DELTA_BINARY_PACKED),
    ("ttft_ms", Encoding::DELTA_BINARY_PACKED),
    ("input_tokens", Encoding::DELTA_BINARY_PACKED),
    ("output_tokens", Encoding::DELTA_BINARY_PACKED),
    ("cache_creation_5m_tokens", Encoding::DELTA_BINARY_PACKED),
    ("cache_read_tokens", Encoding::DELTA_BINARY_PACKED),
];

/// Below this many bytes of Arrow data per column, a file is compressed
/// with LZ4 instead of zstd.
///
/// A zstd reader (the parquet crate's codec) builds a compression and a
/// decompression context for every column chunk it opens: ~11% of the CPU
/// of a spend query over hourly rollups (121 files of ~30 small columns).
/// LZ4 needs no context and decodes faster; zstd's better ratio pays only
/// for large chunks, which compacted event files have.
const SMALL_COLUMN_BYTES: usize = 256 * 1024;

/// The codec for a file holding `batch` (see [`SMALL_COLUMN_BYTES`]).
fn compression_for(batch: &RecordBatch) -> Compression {
    let per_column = batch.get_array_memory_size() / batch.num_columns().max(1);
    if per_column < SMALL_COLUMN_BYTES {
        Compression::LZ4_RAW
    } else {
        Compression::ZSTD(ZstdLevel::default())
    }
}

/// Identifiers that keep zstd in a zstd file, with the decimals (see
/// [`column_compression`]).
const ZSTD_IDENTIFIERS: &[&str] = &["event_id", "request_id", "trace_id", "session_id"];

/// The codec of top-level column `field` in a file compressed with
/// `file` (see [`compression_for`]). In a zstd file only the columns
/// whose encoded pages still hold redundancy keep zstd: identifiers
/// stored plain (3–22×) and decimals (1.7–1.9×; 200× when all null).
/// Delta-encoded integers are left uncompressed: zstd found nothing in
/// them (0.99–1.00×, its frame headers made them larger). Dictionary-
/// encoded columns get LZ4: their pages are bit-packed indexes already
/// (0.7–1.0× under zstd), and LZ4 still compresses a dictionary that
/// outgrew its page and fell back to plain values. Every zstd column
/// chunk a reader opens builds a zstd context pair (~10% of a trace
/// lookup's CPU with 65 zstd chunks per row group); in a compacted day
/// of the bench lake the columns that keep zstd held 70% of the bytes.
fn column_compression(field: &arrow::datatypes::Field, file: Compression) -> Compression {
    if !matches!(file, Compression::ZSTD(_)) {
        return file;
    }
    let name = field.name().as_str();
    let delta = NO_DICTIONARY
        .iter()
        .any(|(c, e)| *c == name && *e == Encoding::DELTA_BINARY_PACKED);
    if delta {
        Compression::UNCOMPRESSED
    } else if ZSTD_IDENTIFIERS.contains(&name)
        || matches!(
            field.data_type(),
            arrow::datatypes::DataType::Decimal128(..)
        )
        || field.data_type().is_nested()
    {
        file
    } else {
        Compression::LZ4_RAW
    }
}

/// Parquet settings for lake files: `compression` (per column, see
/// [`column_compression`]), page statistics for
/// the queried columns ([`PAGE_INDEX_COLUMNS`]), no dictionary where
/// values are unique, and bloom filters sized for a row group's rows.
pub fn writer_properties(
    schema: &arrow::datatypes::Schema,
    rows: usize,
    compression: Compression,
) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(compression)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        // Small pages make the page index worth having: a trace lookup in
        // a sorted file reads a few pages, not a whole column chunk.
        .set_data_page_row_count_limit(PAGE_ROWS);
    for c in PAGE_INDEX_COLUMNS {
        b = b.set_column_statistics_enabled((*c).into(), EnabledStatistics::Page);
    }
    for field in schema.fields() {
        let codec = column_compression(field, compression);
        if codec != compression {
            b = b.set_column_compression(field.name().as_str().into(), codec);
        }
    }
    for (c, encoding) in NO_DICTIONARY {
        b = b
            .set_column_dictionary_enabled((*c).into(), false)
            .set_column_encoding((*c).into(), *encoding);
    }
    // A bloom filter is per row group: sized for more rows than a row
    // group holds it is only bigger to read.
    let ndv = rows.clamp(1, ROW_GROUP_ROWS) as u64;
    for c in BLOOM_COLUMNS {
        b = b
            .set_column_bloom_filter_enabled((*c).into(), true)
            .set_column_bloom_filter_max_ndv((*c).into(), ndv)
            .set_column_bloom_filter_fpp((*c).into(), 0.01);
    }
    b.build()
}

/// Writes `batch` to `path` so that readers see the whole file or none:
/// a hidden temp file, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, batch: &RecordBatch) -> Result<(), LakeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| LakeError::Io { path: p, source }
    };
    crate::private_fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp"));
    let file = crate::private_fs::create_file(&tmp).map_err(io(&tmp))?;
    let file = write_parquet(file, path, batch)?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

/// Writes `batch` as a whole Parquet file (lake settings) into `out`
/// and hands `out` back; `path` names the file in errors.
fn write_parquet<W: Write + Send>(
    out: W,
    path: &Path,
    batch: &RecordBatch,
) -> Result<W, LakeError> {
    let write = |e: parquet::errors::ParquetError| LakeError::Write {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let props = writer_properties(&batch.schema(), batch.num_rows(), compression_for(batch));
    let mut writer = ArrowWriter::try_new(out, batch.schema(), Some(props)).map_err(write)?;
    writer.write(batch).map_err(write)?;
    writer.into_inner().map_err(write)
}

/// `(provider, model, region)` of every event in lake files of `since` or
/// later: the model served, else the one requested. For `tollgate pricing
/// check --lake`, which warns about models no price entry matches.
pub fn models_seen_since(
    layout: &LakeLayout,
    since: NaiveDate,
) -> Result<std::collections::BTreeSet<(String, String, Option<String>)>, LakeError> {
    use arrow::array::{Array, StringArray};
    let mut seen = std::collections::BTreeSet::new();
    for (path, ..) in layout.files()? {
        let day = path
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|d| d.to_str())
            .and_then(|d| d.strip_prefix("day="))
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        if day.is_none_or(|d| d < since) {
            continue;
        }
        for batch in read_file(&path)? {
            let col = |name: &str| {
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
            };
            let (Some(provider), Some(served), Some(requested), Some(region)) = (
                col("provider"),
                col("model_served"),
                col("model_requested"),
                col("region"),
            ) else {
                continue;
            };
            let opt = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_owned());
            for i in 0..batch.num_rows() {
                if let Some(model) = opt(&served, i).or_else(|| opt(&requested, i)) {
                    seen.insert((provider.value(i).to_owned(), model, opt(&region, i)));
                }
            }
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lake file of `n` events, each its own trace, 37 ms apart; and the
    /// directory that holds it.
    /// `n` events, each with its own id, trace and start, as one batch.
    fn batch_of_distinct(n: i64) -> RecordBatch {
        let events: Vec<_> = (0..n)
            .map(|i| {
                let mut e = crate::event::tests::sample_event();
                e.event_id = uuid::Uuid::now_v7();
                e.trace_id = format!("trace-{i:05}");
                e.started_at += chrono::Duration::milliseconds(i * 37);
                e
            })
            .collect();
        crate::event::tests::batch_of(&events)
    }

    fn written(n: i64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.parquet");
        write_atomically(&path, &batch_of_distinct(n)).unwrap();
        (dir, path)
    }

    #[test]
    fn only_queried_columns_have_a_column_index_and_every_column_an_offset_index() {
        use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
        use parquet::file::page_index::column_index::ColumnIndexMetaData;
        let (_dir, path) = written(3000);
        let meta = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Required)
            .parse_and_finish(&File::open(&path).unwrap())
            .unwrap();
        let columns = meta.row_group(0).columns();
        let at = |name: &str| {
            columns
                .iter()
                .position(|c| c.column_path().string() == name)
                .unwrap_or_else(|| panic!("column {name}"))
        };
        let column_index = &meta.column_index().expect("a column index")[0];
        let offset_index = &meta.offset_index().expect("an offset index")[0];
        for name in ["trace_id", "started_at", "team"] {
            assert!(
                !matches!(column_index[at(name)], ColumnIndexMetaData::NONE),
                "{name} has page statistics"
            );
        }
        for name in ["cost_usd", "input_tokens", "pricing_family"] {
            assert!(
                matches!(column_index[at(name)], ColumnIndexMetaData::NONE),
                "{name} has no page statistics"
            );
            assert!(
                columns[at(name)].statistics().is_some(),
                "{name} keeps its chunk statistics"
            );
        }
        for (i, pages) in offset_index.iter().enumerate() {
            assert!(
                pages.page_locations().len() >= 3,
                "column {i}: every page located (3,000 rows, 1,024 a page)"
            );
        }
    }

    /// The chunk of column `name` (a dotted leaf path) in `group`.
    fn column_chunk<'a>(
        group: &'a parquet::file::metadata::RowGroupMetaData,
        name: &str,
    ) -> &'a parquet::file::metadata::ColumnChunkMetaData {
        group
            .columns()
            .iter()
            .find(|c| c.column_path().string() == name)
            .unwrap_or_else(|| panic!("column {name}"))
    }

    #[test]
    fn unique_columns_have_no_dictionary_and_time_is_delta_encoded() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let (_dir, path) = written(500);
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let group = reader.metadata().row_group(0);
        let chunk = |name: &str| column_chunk(group, name);
        for name in ["event_id", "trace_id", "started_at", "bus_offset"] {
            assert!(
                chunk(name).dictionary_page_offset().is_none(),
                "{name} has a dictionary"
            );
        }
        let encodings = |name: &str| chunk(name).encodings().collect::<Vec<_>>();
        assert!(encodings("started_at").contains(&Encoding::DELTA_BINARY_PACKED));
        assert!(
            chunk("team").dictionary_page_offset().is_some(),
            "few values: dictionary"
        );
        // Read back whole, in either encoding.
        assert_eq!(read_file(&path).unwrap()[0].num_rows(), 500);
        assert_eq!(
            chunk("event_id").compression(),
            Compression::LZ4_RAW,
            "a small file"
        );
    }

    #[test]
    fn a_zstd_file_keeps_zstd_only_where_the_encoded_pages_still_compress() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let batch = batch_of_distinct(300);
        let zstd = Compression::ZSTD(ZstdLevel::default());
        let props = writer_properties(&batch.schema(), batch.num_rows(), zstd);
        let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props)).unwrap();
        writer.write(&batch).unwrap();
        let bytes = bytes::Bytes::from(writer.into_inner().unwrap());
        let reader = SerializedFileReader::new(bytes).unwrap();
        let group = reader.metadata().row_group(0);
        let codec = |name: &str| column_chunk(group, name).compression();
        for name in ["event_id", "trace_id", "session_id", "cost_usd"] {
            assert_eq!(codec(name), zstd, "{name}");
        }
        for name in ["started_at", "input_tokens", "bus_offset"] {
            assert_eq!(codec(name), Compression::UNCOMPRESSED, "{name}");
        }
        for name in ["team", "model_served", "status"] {
            assert_eq!(codec(name), Compression::LZ4_RAW, "{name}");
        }
        assert_eq!(codec("attempts.list.item.latency_ms"), zstd, "nested");
        // An LZ4 file stays LZ4 throughout.
        let field = batch
            .schema()
            .field_with_name("started_at")
            .unwrap()
            .clone();
        assert_eq!(
            column_compression(&field, Compression::LZ4_RAW),
            Compression::LZ4_RAW
        );
    }

    #[test]
    fn large_columns_are_compressed_with_zstd_small_ones_with_lz4() {
        let batch = |rows: i64| {
            let values = arrow::array::Int64Array::from_iter_values(0..rows);
            RecordBatch::try_from_iter([("v", Arc::new(values) as arrow::array::ArrayRef)]).unwrap()
        };
        assert_eq!(compression_for(&batch(1_000)), Compression::LZ4_RAW);
        assert!(matches!(
            compression_for(&batch(100_000)),
            Compression::ZSTD(_)
        ));
    }

    #[test]
    fn file_names_round_trip_through_the_parser() {
        let layout = LakeLayout::new("/lake");
        let day = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        let path = layout.file_path(day, 3, 10, 99);
        assert!(path.ends_with(
            "events/day=2026-11-22/p00003-00000000000000000010-00000000000000000099.parquet"
        ));
        assert_eq!(parse_file_name(&path), Some((3, 10, 99)));
        assert_eq!(parse_file_name(Path::new(".p00003-1-2.parquet.tmp")), None);
    }
}
