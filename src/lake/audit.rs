//! The `audit` lake table: every control event (see `control`) as one
//! row, so `POST /v1/sql` can query who changed what beside the events.
//!
//! The audit writer runs with the sink. It reads the control topic in its
//! own consumer group, buffers rows for the sink's flush interval, and
//! writes them as Parquet under `audit/day=YYYY-MM-DD/` (the day of the
//! change), named by offset range like the events table's files. It
//! commits on the bus only after a file is in place, and skips records at
//! or below the highest offset already in the table, so a writer killed
//! between the two writes nothing twice. The control topic never holds a
//! secret (keys are hashes, webhooks fingerprints; webhook credentials
//! are on their own topic, which this never reads), so neither does the
//! table.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, RecordBatch, StringBuilder, TimestampMillisecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::NaiveDate;
use tokio_util::sync::CancellationToken;

use super::LakeError;
use super::files::{LakeLayout, WriteMode, file_name};
use crate::bus::{BusRecord, CONTROL_TOPIC, Log, Subscription};
use crate::control::ControlEvent;

/// The audit writer's consumer group on the control topic.
pub const AUDIT_GROUP: &str = "tollgate-audit-sink";
/// Most rows buffered before a file is written, whatever the interval.
const MAX_ROWS: usize = 10_000;

/// The `audit` table's columns.
pub fn audit_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
        Arc::new(Schema::new(vec![
            text("event_id", false),
            text("kind", false),
            text("entity_id", false),
            text("actor", false),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            text("before", true),
            text("after", true),
            Field::new("bus_partition", DataType::UInt32, false),
            Field::new("bus_offset", DataType::UInt64, false),
        ]))
    });
    SCHEMA.clone()
}

/// The `audit` table's directory under the lake root.
pub fn audit_dir(layout: &LakeLayout) -> PathBuf {
    layout.root().join("audit")
}

/// One control event with where it sits on the bus.
struct Row {
    partition: u32,
    offset: u64,
    event: ControlEvent,
}

/// The running audit writer.
pub struct AuditWriter {
    subscription: Box<dyn Subscription>,
    layout: LakeLayout,
    flush_interval: Duration,
    /// Highest offset already in the table, per partition.
    in_lake: BTreeMap<u32, u64>,
    buffer: Vec<Row>,
    since: Instant,
}

impl AuditWriter {
    /// Joins the audit group and reads how far the table already got.
    pub async fn new(
        log: &dyn Log,
        layout: LakeLayout,
        flush_interval: Duration,
    ) -> Result<AuditWriter, LakeError> {
        let subscription = log.subscribe(AUDIT_GROUP, CONTROL_TOPIC).await?;
        let in_lake = in_table(&layout).await?;
        Ok(AuditWriter {
            subscription,
            layout,
            flush_interval,
            in_lake,
            buffer: Vec::new(),
            since: Instant::now(),
        })
    }

    /// Runs until `stop`, then writes what it holds.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), LakeError> {
        loop {
            let stopping = stop.is_cancelled();
            let records = if stopping {
                self.subscription.poll(1_000, Duration::ZERO).await?
            } else {
                tokio::select! {
                    r = self.subscription.poll(1_000, Duration::from_millis(250)) => r?,
                    _ = stop.cancelled() => Vec::new(),
                }
            };
            self.take(records);
            if stopping {
                return self.flush().await;
            }
            let due = self.since.elapsed() >= self.flush_interval || self.buffer.len() >= MAX_ROWS;
            if due {
                self.flush().await?;
            }
        }
    }

    /// Buffers the records not yet in the table (unreadable ones are
    /// logged and skipped, as the control follower skips them).
    fn take(&mut self, records: Vec<BusRecord>) {
        if self.buffer.is_empty() {
            self.since = Instant::now();
        }
        for r in records {
            if self
                .in_lake
                .get(&r.partition)
                .is_some_and(|last| r.offset <= *last)
            {
                continue;
            }
            match serde_json::from_slice::<ControlEvent>(&r.payload) {
                Ok(event) => self.buffer.push(Row {
                    partition: r.partition,
                    offset: r.offset,
                    event,
                }),
                Err(e) => {
                    tracing::error!(offset = r.offset, error = %e, "control record unreadable; not in the audit table")
                }
            }
        }
    }

    /// Writes the buffer (one file per partition and day), then commits.
    async fn flush(&mut self) -> Result<(), LakeError> {
        self.since = Instant::now();
        if self.buffer.is_empty() {
            return Ok(());
        }
        // Read again: on Kafka the partition may have been another
        // writer's since this one started (changes come at human rate, so
        // one listing per flush is cheap).
        self.in_lake = in_table(&self.layout).await?;
        let in_lake = &self.in_lake;
        let mut consumed: BTreeMap<u32, u64> = BTreeMap::new();
        for r in &self.buffer {
            let m = consumed.entry(r.partition).or_insert(r.offset);
            *m = (*m).max(r.offset);
        }
        let rows: Vec<Row> = std::mem::take(&mut self.buffer)
            .into_iter()
            .filter(|r| {
                in_lake
                    .get(&r.partition)
                    .is_none_or(|last| r.offset > *last)
            })
            .collect();
        let layout = self.layout.clone();
        let written = tokio::task::spawn_blocking(move || write_rows(&layout, rows))
            .await
            .map_err(|e| LakeError::Worker(e.to_string()))??;
        for (partition, last) in written {
            self.in_lake.insert(partition, last);
        }
        // Past everything taken: what was skipped is in the table already.
        for (partition, last) in consumed {
            self.subscription.commit(partition, last + 1).await?;
        }
        Ok(())
    }
}

/// The highest offset per partition already in the `audit` table.
async fn in_table(layout: &LakeLayout) -> Result<BTreeMap<u32, u64>, LakeError> {
    let layout = layout.clone();
    let files = tokio::task::spawn_blocking(move || layout.listing_of(&audit_dir(&layout)))
        .await
        .map_err(|e| LakeError::Worker(e.to_string()))??;
    let mut in_lake = BTreeMap::new();
    for f in files {
        let m = in_lake.entry(f.partition).or_insert(f.last);
        *m = (*m).max(f.last);
    }
    Ok(in_lake)
}

/// Writes `rows` as one file per partition and day; the last offset
/// written per partition.
fn write_rows(layout: &LakeLayout, rows: Vec<Row>) -> Result<BTreeMap<u32, u64>, LakeError> {
    let mut groups: BTreeMap<(u32, NaiveDate), Vec<Row>> = BTreeMap::new();
    for row in rows {
        let day = row.event.at.date_naive();
        groups.entry((row.partition, day)).or_default().push(row);
    }
    let mut written = BTreeMap::new();
    for ((partition, day), group) in groups {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            continue;
        };
        let (first, last) = (first.offset, last.offset);
        let path = audit_dir(layout)
            .join(format!("day={day}"))
            .join(file_name(partition, first, last));
        let batch = to_batch(&group).map_err(|e| LakeError::Write {
            path: path.clone(),
            message: e.to_string(),
        })?;
        layout.write(&path, &batch, WriteMode::New)?;
        let m = written.entry(partition).or_insert(last);
        *m = (*m).max(last);
    }
    Ok(written)
}

/// The rows as one batch of [`audit_schema`].
fn to_batch(rows: &[Row]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = rows.len();
    let text = || StringBuilder::with_capacity(n, n * 32);
    let (mut id, mut kind, mut entity, mut actor) = (text(), text(), text(), text());
    let (mut before, mut after) = (text(), text());
    let mut at = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut partition = UInt32Builder::with_capacity(n);
    let mut offset = UInt64Builder::with_capacity(n);
    for r in rows {
        let e = &r.event;
        id.append_value(e.event_id.to_string());
        kind.append_value(e.kind.as_str());
        entity.append_value(&e.id);
        actor.append_value(&e.actor);
        at.append_value(e.at.timestamp_millis());
        before.append_option(e.before.as_ref().map(|v| v.to_string()));
        after.append_option(e.after.as_ref().map(|v| v.to_string()));
        partition.append_value(r.partition);
        offset.append_value(r.offset);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(kind.finish()),
        Arc::new(entity.finish()),
        Arc::new(actor.finish()),
        Arc::new(at.finish()),
        Arc::new(before.finish()),
        Arc::new(after.finish()),
        Arc::new(partition.finish()),
        Arc::new(offset.finish()),
    ];
    RecordBatch::try_new(audit_schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::local::LocalBus;
    use crate::control::Kind;
    use bytes::Bytes;

    async fn append(bus: &LocalBus, event: &ControlEvent) {
        let payload = Bytes::from(serde_json::to_vec(event).unwrap());
        bus.append(CONTROL_TOPIC, vec![(Bytes::from(event.bus_key()), payload)])
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn control_events_land_once_in_day_partitioned_files_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let bus = LocalBus::open(&dir.path().join("bus")).unwrap();
        let layout = LakeLayout::new(dir.path().join("lake"));
        let after = serde_json::json!({"budget": {"name": "b"}});
        let first = ControlEvent::new(Kind::BudgetSet, "b", "alice", None, Some(after));
        append(&bus, &first).await;
        let run = |layout: LakeLayout| {
            let bus = bus.clone();
            async move {
                let writer = AuditWriter::new(bus.as_ref(), layout, Duration::ZERO)
                    .await
                    .unwrap();
                let stop = CancellationToken::new();
                stop.cancel();
                writer.run(stop).await.unwrap();
            }
        };
        // The writer stops at once but writes what one poll gave it first:
        // poll until the file is there.
        let files = || layout.listing_of(&audit_dir(&layout)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while files().is_empty() {
            assert!(Instant::now() < deadline, "no audit file written");
            run(layout.clone()).await;
        }
        let second = ControlEvent::new(Kind::BudgetRemoved, "b", "bob", None, None);
        append(&bus, &second).await;
        while files().len() < 2 {
            assert!(
                Instant::now() < deadline,
                "the second event was not written"
            );
            run(layout.clone()).await;
        }
        let listed = files();
        assert_eq!(listed.len(), 2, "each event once: {listed:?}");
        let path = &listed.iter().find(|f| f.first == 0).unwrap().path;
        assert!(
            path.to_string_lossy()
                .contains(&format!("audit/day={}", first.at.date_naive()))
        );
        let file = std::fs::File::open(path).unwrap();
        let mut reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap();
        let batch = reader.next().unwrap().unwrap();
        assert_eq!(batch.schema(), audit_schema());
        let kinds = batch.column_by_name("kind").unwrap();
        let kinds = kinds
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        assert_eq!(kinds.value(0), "budget.set");
    }
}
