//! The sink role: events from the bus into Parquet files.
//!
//! It buffers per bus partition, one day per buffer, and writes a file when
//! a buffer reaches `flush_rows`, grows older than `flush_interval`, or the
//! day changes. Only after a file is renamed into place is its offset range
//! committed on the bus. Records at or below the highest offset already in
//! the lake are skipped, so a sink killed between rename and commit writes
//! nothing twice when it comes back. Each file's hourly rollup is written
//! right after it (see [`super::rollup`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use tokio_util::sync::CancellationToken;

use super::LakeError;
use super::files::{LakeLayout, WriteMode};
use crate::bus::{BusRecord, RevokeHook, Subscription, poll_lingering};
use crate::event::{BusPosition, EventColumns};
use crate::metrics::METRICS;

/// When to write a file.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    pub flush_rows: usize,
    pub flush_interval: Duration,
}

/// Most bytes (of the events as they came off the bus) a partition's
/// buffer holds before it is written, whatever `flush_rows` says: under a
/// burst, `flush_rows` events of Claude Code size held as structs were the
/// largest part of a serving process's peak memory (they are held as
/// columns now, about the records' own size). A flush holds the columns
/// and the Parquet writer's pages at once; 8 MiB is still thousands of
/// typical events per file, large enough for compaction to merge.
const MAX_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// Most records taken from the bus per poll: a poll of `flush_rows`
/// (50,000 by default) held that many records at once beside the buffer.
const POLL_RECORDS: usize = 4096;

/// How long a poll that brought fewer than [`POLL_RECORDS`] waits for
/// more before the sink takes them (at most a quarter of the flush
/// interval). A file is written at most once per flush interval anyway, so
/// waking for every costed append (every few milliseconds at moderate
/// load) only cost thread wake-ups: at 500 requests/s those were a large
/// part of `tollgate serve`'s CPU time per request.
const SINK_LINGER: Duration = Duration::from_millis(100);

/// Rows a buffer's column builders first make room for; they grow (by
/// doubling) past it, so an idle or trickling partition holds little.
const BUFFER_START_ROWS: usize = 1024;

/// Events of one partition and day waiting to be written, already as the
/// file's columns: each event is parsed, appended and dropped, so the
/// buffer holds column bytes, not ~30 allocations per event.
struct Buffer {
    day: NaiveDate,
    since: Instant,
    columns: EventColumns,
    /// Offsets of the first and last buffered records (they arrive in
    /// order): the file's name.
    first: u64,
    last: u64,
    /// Bytes of the buffered events' bus records.
    bytes: usize,
}

impl Buffer {
    /// An empty buffer for `day`, its first record at `offset`.
    fn new(day: NaiveDate, offset: u64) -> Buffer {
        Buffer {
            day,
            since: Instant::now(),
            columns: EventColumns::with_capacity(BUFFER_START_ROWS),
            first: offset,
            last: offset,
            bytes: 0,
        }
    }
}

/// Per-partition progress.
#[derive(Default)]
struct Partition {
    /// Highest offset already durable in the lake.
    in_lake: Option<u64>,
    /// Offset after the last record taken from the bus.
    consumed: u64,
    /// Offset last committed on the bus.
    committed: u64,
    buffer: Option<Buffer>,
}

/// What the sink task and the bus's revoke hook share. Locked only for
/// plain bookkeeping, never across an await.
struct Shared {
    layout: LakeLayout,
    partitions: Mutex<HashMap<u32, Partition>>,
}

impl Shared {
    fn partitions(&self) -> MutexGuard<'_, HashMap<u32, Partition>> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Which bus partitions a sink holds now: those it has taken records of
/// and not given up. Compaction asks it, so that of many sinks sharing a
/// lake only a partition's owner merges its files.
#[derive(Clone)]
pub struct Ownership(Arc<Shared>);

impl Ownership {
    /// Whether the sink holds partition `p`.
    pub fn owns(&self, p: u32) -> bool {
        self.0.partitions().contains_key(&p)
    }
}

/// The running sink.
pub struct Sink {
    subscription: Box<dyn Subscription>,
    shared: Arc<Shared>,
    options: SinkOptions,
}

impl Sink {
    /// A sink over a subscription. What the lake already holds is read per
    /// partition when the sink first sees it (start-up or a new assignment).
    pub async fn new(
        mut subscription: Box<dyn Subscription>,
        layout: LakeLayout,
        options: SinkOptions,
    ) -> Result<Sink, LakeError> {
        let shared = Arc::new(Shared {
            layout,
            partitions: Mutex::new(HashMap::new()),
        });
        subscription.on_revoke(revoke_hook(shared.clone()));
        Ok(Sink {
            subscription,
            shared,
            options,
        })
    }

    /// Which partitions this sink holds, for its compactor.
    pub fn ownership(&self) -> Ownership {
        Ownership(self.shared.clone())
    }

    /// Runs until `stop` is cancelled, then takes everything the bus
    /// still holds, writes it, and returns.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), LakeError> {
        while !stop.is_cancelled() {
            let records = self.poll_batch(&stop).await?;
            self.forget_revoked();
            for record in records {
                self.take(record).await?;
            }
            self.flush_due(false).await?;
        }
        loop {
            let records = self
                .subscription
                .poll(self.options.flush_rows.min(POLL_RECORDS), Duration::ZERO)
                .await?;
            self.forget_revoked();
            if records.is_empty() {
                break;
            }
            for record in records {
                self.take(record).await?;
            }
        }
        self.flush_due(true).await?;
        tracing::info!("sink flushed its buffers and stopped");
        Ok(())
    }

    /// Waits for records; when fewer than a poll's worth came, lingers
    /// (see [`SINK_LINGER`]) and takes what arrived meanwhile too.
    async fn poll_batch(&mut self, stop: &CancellationToken) -> Result<Vec<BusRecord>, LakeError> {
        let max = self.options.flush_rows.min(POLL_RECORDS);
        let wait = self.options.flush_interval.min(Duration::from_millis(250));
        let linger = SINK_LINGER.min(self.options.flush_interval / 4);
        Ok(poll_lingering(&mut *self.subscription, max, wait, linger, stop).await?)
    }

    /// Buffers one record (or skips it), writing a file when one is due.
    async fn take(&mut self, mut record: BusRecord) -> Result<(), LakeError> {
        let p = record.partition;
        self.learn(p).await?;
        // `consumed` only moves past a record once it is buffered or
        // skipped, so a flush never commits a record it did not write.
        let consumed = record.offset + 1;
        let day = {
            let mut parts = self.shared.partitions();
            let part = parts.entry(p).or_default();
            if part.in_lake.is_some_and(|last| record.offset <= last) {
                METRICS.sink_skipped_duplicates.inc();
                part.consumed = part.consumed.max(consumed);
                return Ok(());
            }
            match record.event() {
                Ok(event) => {
                    let day = event.started_at.date_naive();
                    let other_day = part.buffer.as_ref().is_some_and(|b| b.day != day);
                    Some((day, event, other_day))
                }
                Err(e) => {
                    METRICS.sink_undecodable.inc();
                    tracing::error!(partition = p, offset = record.offset, error = %e,
                        "bus record is not an LlmEvent; skipped");
                    part.consumed = part.consumed.max(consumed);
                    None
                }
            }
        };
        let Some((day, event, other_day)) = day else {
            return Ok(());
        };
        if other_day {
            self.flush(p).await?;
        }
        let full = {
            let mut parts = self.shared.partitions();
            let part = parts.entry(p).or_default();
            let buffer = part
                .buffer
                .get_or_insert_with(|| Buffer::new(day, record.offset));
            buffer.bytes += record.payload.len();
            let at = BusPosition {
                partition: p,
                offset: record.offset,
            };
            buffer.columns.push(at, &event);
            buffer.last = record.offset;
            part.consumed = part.consumed.max(consumed);
            buffer.columns.len() >= self.options.flush_rows || buffer.bytes >= MAX_BUFFER_BYTES
        };
        if full {
            self.flush(p).await?;
        }
        Ok(())
    }

    /// On first sight of a partition, reads how far the lake already got
    /// (another sink may have owned it before).
    async fn learn(&mut self, p: u32) -> Result<(), LakeError> {
        if self.shared.partitions().contains_key(&p) {
            return Ok(());
        }
        let layout = self.shared.layout.clone();
        let max = tokio::task::spawn_blocking(move || layout.max_offsets())
            .await
            .map_err(|e| LakeError::Worker(e.to_string()))??;
        let in_lake = max.get(&p).copied();
        self.shared.partitions().insert(
            p,
            Partition {
                in_lake,
                ..Partition::default()
            },
        );
        Ok(())
    }

    /// Forgets partitions the bus took away (their buffers were written by
    /// the revoke hook); a later assignment starts from the lake again.
    fn forget_revoked(&mut self) {
        let revoked = self.subscription.take_revoked();
        if !revoked.is_empty() {
            let mut parts = self.shared.partitions();
            for p in revoked {
                parts.remove(&p);
            }
        }
    }

    /// Writes every buffer that is old enough (all of them when `all`),
    /// and commits progress over skipped records.
    async fn flush_due(&mut self, all: bool) -> Result<(), LakeError> {
        let interval = self.options.flush_interval;
        let due: Vec<u32> = self
            .shared
            .partitions()
            .iter()
            .filter(|(_, part)| {
                part.buffer
                    .as_ref()
                    .is_some_and(|b| all || b.since.elapsed() >= interval)
            })
            .map(|(p, _)| *p)
            .collect();
        for p in due {
            self.flush(p).await?;
        }
        let idle: Vec<(u32, u64)> = self
            .shared
            .partitions()
            .iter()
            .filter(|(_, part)| part.buffer.is_none() && part.consumed > part.committed)
            .map(|(p, part)| (*p, part.consumed))
            .collect();
        for (p, next) in idle {
            self.commit(p, next).await?;
        }
        Ok(())
    }

    /// Writes partition `p`'s buffer as one file, then commits.
    async fn flush(&mut self, p: u32) -> Result<(), LakeError> {
        let Some(buffer) = self
            .shared
            .partitions()
            .get_mut(&p)
            .and_then(|part| part.buffer.take())
        else {
            return Ok(());
        };
        let layout = self.shared.layout.clone();
        let written = tokio::task::spawn_blocking(move || write_buffer(&layout, p, buffer))
            .await
            .map_err(|e| LakeError::Worker(e.to_string()))??;
        let Some(last) = written else { return Ok(()) };
        let next = {
            let mut parts = self.shared.partitions();
            let part = parts.entry(p).or_default();
            part.in_lake = Some(last);
            part.consumed.max(last + 1)
        };
        self.commit(p, next).await
    }

    async fn commit(&mut self, p: u32, next: u64) -> Result<(), LakeError> {
        self.subscription.commit(p, next).await?;
        if let Some(part) = self.shared.partitions().get_mut(&p) {
            part.committed = next;
        }
        Ok(())
    }
}

/// Writes one buffer as one lake file (renamed into place, or uploaded
/// whole to a bucket); returns the
/// last offset it holds, or `None` for an empty buffer.
fn write_buffer(layout: &LakeLayout, p: u32, buffer: Buffer) -> Result<Option<u64>, LakeError> {
    if buffer.columns.is_empty() {
        return Ok(None);
    }
    let (first, last) = (buffer.first, buffer.last);
    let path = layout.file_path(buffer.day, p, first, last);
    let started = Instant::now();
    let rows = buffer.columns.len() as u64;
    let batch = buffer.columns.finish().map_err(|e| LakeError::Write {
        path: path.clone(),
        message: e.to_string(),
    })?;
    layout.write(&path, &batch, WriteMode::New)?;
    // The rollup after the file: a crash between the two leaves a file
    // without rollup, which the next compaction run writes (not the sink:
    // backfilling a lake written before rollups must not hold up events).
    super::rollup::write_for(layout, &path, std::slice::from_ref(&batch), WriteMode::New)?;
    METRICS.sink_files.inc();
    METRICS.sink_rows.inc_by(rows);
    METRICS
        .sink_flush_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(Some(last))
}

/// Before partitions are taken away, write what is buffered for them and
/// say what to commit, so the next owner starts exactly after it. Runs on
/// the sink's own task (inside its poll), so it never races a flush; it
/// writes and fsyncs synchronously, so the bus runs it off the runtime
/// (Kafka: `block_in_place`) and commits before the partitions go.
fn revoke_hook(shared: Arc<Shared>) -> RevokeHook {
    Arc::new(move |revoked: &[u32]| {
        let mut commits = Vec::new();
        let mut parts = shared.partitions();
        for p in revoked {
            let Some(mut part) = parts.remove(p) else {
                continue;
            };
            let mut next = part.consumed;
            if let Some(buffer) = part.buffer.take() {
                match write_buffer(&shared.layout, *p, buffer) {
                    Ok(Some(last)) => next = next.max(last + 1),
                    Ok(None) => {}
                    Err(e) => {
                        // Not committed: the next owner re-reads these.
                        tracing::error!(partition = p, error = %e, "could not write buffered events before giving up the partition");
                        continue;
                    }
                }
            }
            if next > part.committed {
                commits.push((*p, next));
            }
        }
        commits
    })
}
