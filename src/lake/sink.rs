//! The sink role: events from the bus into Parquet files.
//!
//! It buffers per bus partition, one day per buffer, and writes a file when
//! a buffer reaches `flush_rows`, grows older than `flush_interval`, or the
//! day changes. Only after a file is renamed into place is its offset range
//! committed on the bus. Records at or below the highest offset already in
//! the lake are skipped, so a sink killed between rename and commit writes
//! nothing twice when it comes back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use tokio_util::sync::CancellationToken;

use super::LakeError;
use super::files::{LakeLayout, write_atomically};
use crate::bus::{BusRecord, Subscription};
use crate::event::{BusPosition, LlmEvent, to_record_batch};
use crate::metrics::METRICS;

/// When to write a file.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    pub flush_rows: usize,
    pub flush_interval: Duration,
}

/// Events of one partition and day waiting to be written.
struct Buffer {
    day: NaiveDate,
    since: Instant,
    rows: Vec<(BusPosition, LlmEvent)>,
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

/// The running sink.
pub struct Sink {
    subscription: Box<dyn Subscription>,
    layout: LakeLayout,
    options: SinkOptions,
    partitions: HashMap<u32, Partition>,
}

impl Sink {
    /// A sink over a subscription; reads what the lake already holds.
    pub async fn new(
        subscription: Box<dyn Subscription>,
        layout: LakeLayout,
        options: SinkOptions,
    ) -> Result<Sink, LakeError> {
        let scan = layout.clone();
        let max = tokio::task::spawn_blocking(move || scan.max_offsets())
            .await
            .map_err(|e| LakeError::Worker(e.to_string()))??;
        let partitions = max
            .into_iter()
            .map(|(p, last)| {
                let part = Partition {
                    in_lake: Some(last),
                    ..Partition::default()
                };
                (p, part)
            })
            .collect();
        Ok(Sink {
            subscription,
            layout,
            options,
            partitions,
        })
    }

    /// Runs until `stop` is cancelled, then takes everything the bus
    /// still holds, writes it, and returns.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), LakeError> {
        let max_wait = self.options.flush_interval.min(Duration::from_millis(250));
        while !stop.is_cancelled() {
            let records = self
                .subscription
                .poll(self.options.flush_rows, max_wait)
                .await?;
            for record in records {
                self.take(record).await?;
            }
            self.flush_due(false).await?;
        }
        loop {
            let records = self
                .subscription
                .poll(self.options.flush_rows, Duration::ZERO)
                .await?;
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

    /// Buffers one record (or skips it), writing a file when one is due.
    async fn take(&mut self, record: BusRecord) -> Result<(), LakeError> {
        let p = record.partition;
        let part = self.partitions.entry(p).or_default();
        // `consumed` only moves past a record once it is buffered or
        // skipped, so a flush never commits a record it did not write.
        let consumed = record.offset + 1;
        if part.in_lake.is_some_and(|last| record.offset <= last) {
            METRICS.sink_skipped_duplicates.inc();
            part.consumed = part.consumed.max(consumed);
            return Ok(());
        }
        let event: LlmEvent = match serde_json::from_slice(&record.payload) {
            Ok(e) => e,
            Err(e) => {
                METRICS.sink_undecodable.inc();
                tracing::error!(partition = p, offset = record.offset, error = %e,
                    "bus record is not an LlmEvent; skipped");
                part.consumed = part.consumed.max(consumed);
                return Ok(());
            }
        };
        let day = event.started_at.date_naive();
        if part.buffer.as_ref().is_some_and(|b| b.day != day) {
            self.flush(p).await?;
        }
        let part = self.partitions.entry(p).or_default();
        let buffer = part.buffer.get_or_insert_with(|| Buffer {
            day,
            since: Instant::now(),
            rows: Vec::new(),
        });
        let pos = BusPosition {
            partition: p,
            offset: record.offset,
        };
        buffer.rows.push((pos, event));
        part.consumed = part.consumed.max(consumed);
        if buffer.rows.len() >= self.options.flush_rows {
            self.flush(p).await?;
        }
        Ok(())
    }

    /// Writes every buffer that is old enough (all of them when `all`),
    /// and commits progress over skipped records.
    async fn flush_due(&mut self, all: bool) -> Result<(), LakeError> {
        let interval = self.options.flush_interval;
        let due: Vec<u32> = self
            .partitions
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
            .partitions
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
        let Some(part) = self.partitions.get_mut(&p) else {
            return Ok(());
        };
        let Some(buffer) = part.buffer.take() else {
            return Ok(());
        };
        let (Some(first), Some(last)) = (buffer.rows.first(), buffer.rows.last()) else {
            return Ok(());
        };
        let (first, last) = (first.0.offset, last.0.offset);
        let path = self.layout.file_path(buffer.day, p, first, last);
        let started = Instant::now();
        let rows = buffer.rows.len();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<(BusPosition, &LlmEvent)> =
                buffer.rows.iter().map(|(pos, e)| (*pos, e)).collect();
            let batch = to_record_batch(&refs).map_err(|e| LakeError::Write {
                path: path.clone(),
                message: e.to_string(),
            })?;
            write_atomically(&path, &batch)
        })
        .await
        .map_err(|e| LakeError::Worker(e.to_string()))??;
        METRICS.sink_files.inc();
        METRICS.sink_rows.inc_by(rows as u64);
        METRICS.sink_flush_seconds.observe(started.elapsed().as_secs_f64());
        let part = self.partitions.entry(p).or_default();
        part.in_lake = Some(last);
        let next = part.consumed.max(last + 1);
        self.commit(p, next).await
    }

    async fn commit(&mut self, p: u32, next: u64) -> Result<(), LakeError> {
        self.subscription.commit(p, next).await?;
        self.partitions.entry(p).or_default().committed = next;
        Ok(())
    }
}
