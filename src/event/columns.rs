//! The lake's `events` columns, written once.
//!
//! [`EVENT_COLUMNS`] lists every column in schema order: its name, whether
//! it may be null and the accessor that reads its cell from a row (an
//! event and its bus position). The Arrow schema ([`arrow_schema`]), the
//! builders and [`to_record_batch`] all come from that one table, so a new
//! scalar field of `LlmEvent` reaches the lake with one line here. The cost
//! columns are a group of the same table ([`COST_COLUMNS`]), which
//! `tollgate reprice` also writes alone ([`CostColumns`]).
//!
//! Accessors are plain `fn` pointers and each column's builder is a typed
//! enum variant, so a row costs one match and one call per column, with no
//! allocation beyond the cells that must be rendered (iterations as JSON,
//! pricing notes).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Decimal128Builder, Int64Builder, ListBuilder, MapBuilder,
    RecordBatch, StringBuilder, StructBuilder, TimestampMillisecondBuilder, UInt16Builder,
    UInt32Builder,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::{Attempt, BusPosition, Cost, CostLines, LlmEvent};

/// Dollar amounts: exact decimals with 12 places (a Haiku 3 cache-read
/// token costs $0.00000003), up to $99,999,999.
pub const USD_PRECISION: u8 = 20;
/// Decimal places of dollar columns.
pub const USD_SCALE: i8 = 12;

/// An accessor of a cell borrowed from the row's source.
type Text<S> = for<'a> fn(&'a S, BusPosition) -> Option<&'a str>;
/// An accessor of an owned cell (a count, a flag, a time, an amount).
type Value<S, T> = fn(&S, BusPosition) -> Option<T>;

/// How one column's cell is read from a row of `S`, and so its Arrow type.
enum Cell<S: 'static> {
    /// Utf8: a UUID, written as hyphenated text without allocating.
    Uuid(fn(&S, BusPosition) -> Uuid),
    /// Utf8 borrowed from the row.
    Text(Text<S>),
    /// Utf8 the row has to render (JSON, a joined list).
    Rendered(Value<S, String>),
    /// UInt16 (the schema version, an HTTP status).
    UInt16(Value<S, u16>),
    /// UInt32 (the bus partition).
    UInt32(Value<S, u32>),
    /// Int64: a count, clamped into Arrow's signed type.
    Count(Value<S, u64>),
    /// Boolean.
    Boolean(Value<S, bool>),
    /// Timestamp in milliseconds, UTC.
    Time(Value<S, DateTime<Utc>>),
    /// `Decimal128(USD_PRECISION, USD_SCALE)`.
    Usd(Value<S, Decimal>),
    /// Map of text to text (the event's metadata).
    Map(for<'a> fn(&'a S) -> &'a BTreeMap<String, String>),
    /// List of attempt structs.
    Attempts(for<'a> fn(&'a S) -> &'a [Attempt]),
    /// List of text.
    List(for<'a> fn(&'a S) -> &'a [String]),
    /// A group of columns read from the row's cost (absent: all null).
    Cost(
        for<'a> fn(&'a S) -> &'a Option<Cost>,
        &'static [Column<Option<Cost>>],
    ),
}

/// One lake column (or column group): its name, nullability and cell.
struct Column<S: 'static> {
    /// The Arrow field's name (a group's is only a label).
    name: &'static str,
    /// Whether the Arrow field is nullable.
    nullable: bool,
    /// How a row fills it.
    cell: Cell<S>,
}

/// A column that is never null.
const fn req<S>(name: &'static str, cell: Cell<S>) -> Column<S> {
    Column {
        name,
        nullable: false,
        cell,
    }
}

/// A column that may be null (and is, in lake files written before it).
const fn opt<S>(name: &'static str, cell: Cell<S>) -> Column<S> {
    Column {
        name,
        nullable: true,
        cell,
    }
}

/// Every column of the lake's `events` table, in schema order.
#[rustfmt::skip]
static EVENT_COLUMNS: &[Column<LlmEvent>] = &[
    req("event_id", Cell::Uuid(|e, _| e.event_id)),
    req("schema_version", Cell::UInt16(|e, _| Some(e.schema_version))),
    req("trace_id", Cell::Text(|e, _| Some(&e.trace_id))),
    opt("session_id", Cell::Text(|e, _| e.session_id.as_deref())),
    opt("agent_id", Cell::Text(|e, _| e.agent_id.as_deref())),
    opt("parent_agent_id", Cell::Text(|e, _| e.parent_agent_id.as_deref())),
    opt("request_id", Cell::Text(|e, _| e.request_id.as_deref())),
    req("started_at", Cell::Time(|e, _| Some(e.started_at))),
    req("ended_at", Cell::Time(|e, _| Some(e.ended_at))),
    opt("ttft_ms", Cell::Count(|e, _| e.ttft_ms)),
    req("latency_ms", Cell::Count(|e, _| Some(e.latency_ms))),
    req("workspace", Cell::Text(|e, _| Some(&e.workspace))),
    req("team", Cell::Text(|e, _| Some(&e.team))),
    req("user", Cell::Text(|e, _| Some(&e.user))),
    req("key_id", Cell::Text(|e, _| Some(&e.key_id))),
    req("metadata", Cell::Map(|e| &e.metadata)),
    req("endpoint", Cell::Text(|e, _| Some(&e.endpoint))),
    req("provider", Cell::Text(|e, _| Some(&e.provider))),
    req("target", Cell::Text(|e, _| Some(&e.target))),
    opt("region", Cell::Text(|e, _| e.region.as_deref())),
    opt("model_requested", Cell::Text(|e, _| e.model_requested.as_deref())),
    opt("model_served", Cell::Text(|e, _| e.model_served.as_deref())),
    req("stream", Cell::Boolean(|e, _| Some(e.stream))),
    req("status", Cell::UInt16(|e, _| Some(e.status))),
    opt("error_type", Cell::Text(|e, _| e.error_type.as_deref())),
    opt("stop_reason", Cell::Text(|e, _| e.stop_reason.as_deref())),
    req("attempts", Cell::Attempts(|e| &e.attempts)),
    req("input_tokens", Cell::Count(|e, _| Some(e.usage.input_tokens))),
    req("output_tokens", Cell::Count(|e, _| Some(e.usage.output_tokens))),
    req("cache_creation_5m_tokens", Cell::Count(|e, _| Some(e.usage.cache_creation_5m_tokens))),
    req("cache_creation_1h_tokens", Cell::Count(|e, _| Some(e.usage.cache_creation_1h_tokens))),
    req("cache_read_tokens", Cell::Count(|e, _| Some(e.usage.cache_read_tokens))),
    req("web_search_requests", Cell::Count(|e, _| Some(e.usage.web_search_requests))),
    req("web_fetch_requests", Cell::Count(|e, _| Some(e.usage.web_fetch_requests))),
    req("downgrades", Cell::List(|e| &e.downgrades)),
    opt("client", Cell::Text(|e, _| e.client.as_deref())),
    opt("billed_by", Cell::Text(|e, _| Some(e.billed_by.as_str()))),
    opt("credential_fingerprint", Cell::Text(|e, _| e.credential_fingerprint.as_deref())),
    opt("usage_estimated", Cell::Boolean(|e, _| Some(e.usage_estimated))),
    // Billing facts beyond token counts: nullable, so lake files written
    // before them read back with nulls.
    opt("speed", Cell::Text(|e, _| e.usage.speed.as_deref())),
    opt("inference_geo", Cell::Text(|e, _| e.usage.inference_geo.as_deref())),
    opt("service_tier", Cell::Text(|e, _| e.usage.service_tier.as_deref())),
    opt("usage_iterations", Cell::Rendered(|e, _| iterations_json(e))),
    opt("fallback_credit_redeemed", Cell::Boolean(|e, _| e.usage.fallback_credit_redeemed.then_some(true))),
    opt("cost", Cell::Cost(|e| &e.cost, COST_COLUMNS)),
    req("bus_partition", Cell::UInt32(|_, at| Some(at.partition))),
    req("bus_offset", Cell::Count(|_, at| Some(at.offset))),
];

/// The cost columns, in schema order; `tollgate reprice` replaces exactly
/// these. Null until the accountant priced the event.
#[rustfmt::skip]
static COST_COLUMNS: &[Column<Option<Cost>>] = &[
    opt("cost_usd", Cell::Usd(|c, _| usd(c, |l| l.total_usd))),
    opt("cost_input_usd", Cell::Usd(|c, _| usd(c, |l| l.input_usd))),
    opt("cost_output_usd", Cell::Usd(|c, _| usd(c, |l| l.output_usd))),
    opt("cost_cache_write_5m_usd", Cell::Usd(|c, _| usd(c, |l| l.cache_write_5m_usd))),
    opt("cost_cache_write_1h_usd", Cell::Usd(|c, _| usd(c, |l| l.cache_write_1h_usd))),
    opt("cost_cache_read_usd", Cell::Usd(|c, _| usd(c, |l| l.cache_read_usd))),
    opt("cost_web_search_usd", Cell::Usd(|c, _| usd(c, |l| l.web_search_usd))),
    opt("cost_cache_savings_usd", Cell::Usd(|c, _| usd(c, |l| l.cache_savings_usd))),
    opt("priced", Cell::Boolean(|c, _| Some(c.as_ref()?.lines.is_some()))),
    opt("price_table_version", Cell::Text(|c, _| Some(&c.as_ref()?.price_table_version))),
    opt("pricing_family", Cell::Text(|c, _| c.as_ref()?.family.as_deref())),
    opt("pricing_tier", Cell::Text(|c, _| c.as_ref()?.tier.as_deref())),
    opt("pricing_basis", Cell::Text(|c, _| c.as_ref()?.basis.as_deref())),
    opt("pricing_notes", Cell::Rendered(|c, _| pricing_notes(c))),
];

/// One line of a cost's breakdown (absent when unpriced or not costed).
fn usd(cost: &Option<Cost>, line: fn(&CostLines) -> Decimal) -> Option<Decimal> {
    cost.as_ref()?.lines.as_ref().map(line)
}

/// The usage's iterations as JSON (absent when there are none).
fn iterations_json(e: &LlmEvent) -> Option<String> {
    let iterations = &e.usage.iterations;
    (!iterations.is_empty())
        .then(|| serde_json::to_string(iterations).ok())
        .flatten()
}

/// The calculator's notes joined by `; ` (absent when there are none).
fn pricing_notes(cost: &Option<Cost>) -> Option<String> {
    cost.as_ref()
        .filter(|c| !c.notes.is_empty())
        .map(|c| c.notes.join("; "))
}

/// Arrow schema of the lake's `events` table, from the `EVENT_COLUMNS` table.
pub fn arrow_schema() -> SchemaRef {
    let mut fields = Vec::with_capacity(64);
    push_fields(EVENT_COLUMNS, &mut fields);
    Arc::new(Schema::new(fields))
}

/// The Arrow fields of `columns`, groups flattened in place.
fn push_fields<S>(columns: &[Column<S>], out: &mut Vec<Field>) {
    for c in columns {
        match &c.cell {
            Cell::Cost(_, group) => push_fields(group, out),
            cell => out.push(Field::new(c.name, cell.data_type(), c.nullable)),
        }
    }
}

/// Event times: milliseconds, UTC.
fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// Dollar columns: `Decimal128(USD_PRECISION, USD_SCALE)`.
fn usd_type() -> DataType {
    DataType::Decimal128(USD_PRECISION, USD_SCALE)
}

/// A dollar amount as the unscaled integer of a `Decimal128(20, 12)`.
pub fn usd_to_i128(v: Decimal) -> i128 {
    let mut d = v.round_dp_with_strategy(
        USD_SCALE as u32,
        rust_decimal::RoundingStrategy::MidpointAwayFromZero,
    );
    d.rescale(USD_SCALE as u32);
    d.mantissa()
}

/// The fields of one attempt in the `attempts` list.
fn attempt_fields() -> Fields {
    Fields::from(vec![
        Field::new("provider", DataType::Utf8, false),
        Field::new("target", DataType::Utf8, false),
        Field::new("status", DataType::UInt16, true),
        Field::new("latency_ms", DataType::Int64, false),
        Field::new("error_type", DataType::Utf8, true),
    ])
}

/// The entries field of the `metadata` map, as `MapBuilder` names it.
fn metadata_entries() -> Field {
    Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", DataType::Utf8, true),
        ])),
        false,
    )
}

/// A list's item field (nullable, as `ListBuilder` makes it).
fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

impl<S> Cell<S> {
    /// The Arrow type of the cell (a group has none of its own).
    fn data_type(&self) -> DataType {
        match self {
            Cell::Uuid(_) | Cell::Text(_) | Cell::Rendered(_) => DataType::Utf8,
            Cell::UInt16(_) => DataType::UInt16,
            Cell::UInt32(_) => DataType::UInt32,
            Cell::Count(_) => DataType::Int64,
            Cell::Boolean(_) => DataType::Boolean,
            Cell::Time(_) => ts_type(),
            Cell::Usd(_) => usd_type(),
            Cell::Map(_) => DataType::Map(Arc::new(metadata_entries()), false),
            Cell::Attempts(_) => list_of(DataType::Struct(attempt_fields())),
            Cell::List(_) => list_of(DataType::Utf8),
            Cell::Cost(..) => DataType::Null,
        }
    }

    /// An empty builder for `n` rows of this cell, holding its accessor.
    fn slot(&self, n: usize) -> Slot<S> {
        let text = || StringBuilder::with_capacity(n, n * 16);
        match *self {
            Cell::Uuid(f) => Slot::Uuid(text(), f),
            Cell::Text(f) => Slot::Text(text(), f),
            Cell::Rendered(f) => Slot::Rendered(text(), f),
            Cell::UInt16(f) => Slot::UInt16(UInt16Builder::with_capacity(n), f),
            Cell::UInt32(f) => Slot::UInt32(UInt32Builder::with_capacity(n), f),
            Cell::Count(f) => Slot::Count(Int64Builder::with_capacity(n), f),
            Cell::Boolean(f) => Slot::Boolean(BooleanBuilder::with_capacity(n), f),
            Cell::Time(f) => Slot::Time(
                TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC"),
                f,
            ),
            Cell::Usd(f) => Slot::Usd(usd_builder(n), f),
            Cell::Map(f) => Slot::Map(map_builder(), f),
            Cell::Attempts(f) => Slot::Attempts(
                ListBuilder::new(StructBuilder::from_fields(attempt_fields(), 1)),
                f,
            ),
            Cell::List(f) => Slot::List(ListBuilder::new(StringBuilder::new()), f),
            Cell::Cost(f, group) => Slot::Cost(f, slots(group, n)),
        }
    }
}

/// A dollar column's builder for `n` rows.
fn usd_builder(n: usize) -> Decimal128Builder {
    Decimal128Builder::with_capacity(n)
        .with_precision_and_scale(USD_PRECISION, USD_SCALE)
        .expect("valid decimal type")
}

/// The metadata map's builder, with the entry names of [`metadata_entries`].
fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    let names = arrow::array::builder::MapFieldNames {
        entry: "entries".into(),
        key: "keys".into(),
        value: "values".into(),
    };
    MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new())
}

/// Builders for `n` rows of `columns`, one slot per column or group.
fn slots<S>(columns: &[Column<S>], n: usize) -> Vec<Slot<S>> {
    columns.iter().map(|c| c.cell.slot(n)).collect()
}

/// A column's builder with the accessor that fills it: each variant is
/// the [`Cell`] of the same name plus its Arrow builder (a cost group: its
/// members' slots).
enum Slot<S: 'static> {
    Uuid(StringBuilder, fn(&S, BusPosition) -> Uuid),
    Text(StringBuilder, Text<S>),
    Rendered(StringBuilder, Value<S, String>),
    UInt16(UInt16Builder, Value<S, u16>),
    UInt32(UInt32Builder, Value<S, u32>),
    Count(Int64Builder, Value<S, u64>),
    Boolean(BooleanBuilder, Value<S, bool>),
    Time(TimestampMillisecondBuilder, Value<S, DateTime<Utc>>),
    Usd(Decimal128Builder, Value<S, Decimal>),
    Map(
        MapBuilder<StringBuilder, StringBuilder>,
        for<'a> fn(&'a S) -> &'a BTreeMap<String, String>,
    ),
    Attempts(
        ListBuilder<StructBuilder>,
        for<'a> fn(&'a S) -> &'a [Attempt],
    ),
    List(
        ListBuilder<StringBuilder>,
        for<'a> fn(&'a S) -> &'a [String],
    ),
    Cost(
        for<'a> fn(&'a S) -> &'a Option<Cost>,
        Vec<Slot<Option<Cost>>>,
    ),
}

/// Clamps a count into Arrow's signed column type; counts never reach it.
fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl<S> Slot<S> {
    /// Appends the cell of one row.
    fn push(&mut self, row: &S, at: BusPosition) {
        match self {
            Slot::Uuid(b, f) => {
                let mut buf = Uuid::encode_buffer();
                b.append_value(f(row, at).hyphenated().encode_lower(&mut buf));
            }
            Slot::Text(b, f) => b.append_option(f(row, at)),
            Slot::Rendered(b, f) => b.append_option(f(row, at)),
            Slot::UInt16(b, f) => b.append_option(f(row, at)),
            Slot::UInt32(b, f) => b.append_option(f(row, at)),
            Slot::Count(b, f) => b.append_option(f(row, at).map(i64_of)),
            Slot::Boolean(b, f) => b.append_option(f(row, at)),
            Slot::Time(b, f) => b.append_option(f(row, at).map(|t| t.timestamp_millis())),
            Slot::Usd(b, f) => b.append_option(f(row, at).map(usd_to_i128)),
            Slot::Map(b, f) => push_map(b, f(row)),
            Slot::Attempts(b, f) => push_attempts(b, f(row)),
            Slot::List(b, f) => {
                for item in f(row) {
                    b.values().append_value(item);
                }
                b.append(true);
            }
            Slot::Cost(f, group) => {
                let cost = f(row);
                for slot in group {
                    slot.push(cost, at);
                }
            }
        }
    }

    /// The finished arrays, groups flattened in place.
    fn finish_into(&mut self, out: &mut Vec<ArrayRef>) {
        let array: ArrayRef = match self {
            Slot::Uuid(b, _) | Slot::Text(b, _) | Slot::Rendered(b, _) => Arc::new(b.finish()),
            Slot::UInt16(b, _) => Arc::new(b.finish()),
            Slot::UInt32(b, _) => Arc::new(b.finish()),
            Slot::Count(b, _) => Arc::new(b.finish()),
            Slot::Boolean(b, _) => Arc::new(b.finish()),
            Slot::Time(b, _) => Arc::new(b.finish()),
            Slot::Usd(b, _) => Arc::new(b.finish()),
            Slot::Map(b, _) => Arc::new(b.finish()),
            Slot::Attempts(b, _) => Arc::new(b.finish()),
            Slot::List(b, _) => Arc::new(b.finish()),
            Slot::Cost(_, group) => {
                group.iter_mut().for_each(|s| s.finish_into(out));
                return;
            }
        };
        out.push(array);
    }
}

/// Appends one metadata map.
fn push_map(b: &mut MapBuilder<StringBuilder, StringBuilder>, map: &BTreeMap<String, String>) {
    for (k, v) in map {
        b.keys().append_value(k);
        b.values().append_value(v);
    }
    // Appending a map entry only fails on a key/value length mismatch,
    // which the loop above rules out.
    let _ = b.append(true);
}

/// Appends one row's list of attempts.
fn push_attempts(b: &mut ListBuilder<StructBuilder>, attempts: &[Attempt]) {
    let items = b.values();
    for a in attempts {
        field::<StringBuilder>(items, 0).append_value(&a.provider);
        field::<StringBuilder>(items, 1).append_value(&a.target);
        field::<UInt16Builder>(items, 2).append_option(a.status);
        field::<Int64Builder>(items, 3).append_value(i64_of(a.latency_ms));
        field::<StringBuilder>(items, 4).append_option(a.error_type.as_deref());
        items.append(true);
    }
    b.append(true);
}

/// The typed child builder `i` of a struct builder; the layout is fixed by
/// [`attempt_fields`], so a miss is a programming error caught by tests.
fn field<T: arrow::array::ArrayBuilder>(b: &mut StructBuilder, i: usize) -> &mut T {
    b.field_builder::<T>(i)
        .expect("attempt struct layout matches attempt_fields()")
}

/// Builds one Arrow batch from events (each with its bus position), in the
/// column order of [`arrow_schema`].
pub fn to_record_batch(events: &[(BusPosition, &LlmEvent)]) -> Result<RecordBatch, ArrowError> {
    let mut columns = EventColumns::with_capacity(events.len());
    for (at, e) in events {
        columns.push(*at, e);
    }
    columns.finish()
}

/// Lake columns being built one event at a time, so a caller that
/// gathers events (the sink) keeps them as Arrow columns, not as
/// structs: an `LlmEvent` holds ~30 separately allocated strings, several
/// times the bytes its columns take, and under a burst the sink's
/// buffered structs were among the largest parts of a serving process's
/// peak memory.
pub struct EventColumns {
    slots: Vec<Slot<LlmEvent>>,
    rows: usize,
}

impl EventColumns {
    /// Builders with room for `n` rows; they grow past it.
    pub fn with_capacity(n: usize) -> EventColumns {
        EventColumns {
            slots: slots(EVENT_COLUMNS, n),
            rows: 0,
        }
    }

    /// Appends `e`, read from the bus at `at`, as one row.
    pub fn push(&mut self, at: BusPosition, e: &LlmEvent) {
        for slot in &mut self.slots {
            slot.push(e, at);
        }
        self.rows += 1;
    }

    /// Rows appended so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was appended.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The rows as one record batch of the lake's schema.
    pub fn finish(mut self) -> Result<RecordBatch, ArrowError> {
        let mut columns = Vec::with_capacity(64);
        for slot in &mut self.slots {
            slot.finish_into(&mut columns);
        }
        RecordBatch::try_new(arrow_schema(), columns)
    }
}

/// Builders of the cost columns alone (the `COST_COLUMNS` group), for
/// rewriting a lake file's costs.
pub struct CostColumns(Vec<Slot<Option<Cost>>>);

impl CostColumns {
    /// Builders for `n` rows.
    pub fn with_capacity(n: usize) -> CostColumns {
        CostColumns(slots(COST_COLUMNS, n))
    }

    /// Adds one row's cost (`None`: not costed yet).
    pub fn push(&mut self, cost: &Option<Cost>) {
        let nowhere = BusPosition {
            partition: 0,
            offset: 0,
        };
        for slot in &mut self.0 {
            slot.push(cost, nowhere);
        }
    }

    /// The finished columns with their names, in schema order.
    pub fn finish(mut self) -> Vec<(&'static str, ArrayRef)> {
        let mut arrays = Vec::with_capacity(COST_COLUMNS.len());
        for slot in &mut self.0 {
            slot.finish_into(&mut arrays);
        }
        COST_COLUMNS.iter().map(|c| c.name).zip(arrays).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::sample_event;
    use crate::event::{BilledBy, Iteration, Usage};

    /// An event with every optional field set, fixed ids and times.
    fn full_event() -> LlmEvent {
        let at = |ms| DateTime::<Utc>::from_timestamp_millis(ms).unwrap();
        let lines = CostLines {
            input_usd: Decimal::new(1, 2),
            output_usd: Decimal::new(2, 2),
            cache_write_5m_usd: Decimal::new(3, 2),
            cache_write_1h_usd: Decimal::new(4, 2),
            cache_read_usd: Decimal::new(5, 2),
            web_search_usd: Decimal::new(6, 2),
            total_usd: Decimal::new(21, 2),
            cache_savings_usd: Decimal::new(7, 2),
        };
        LlmEvent {
            event_id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
            region: Some("eu-west-1".into()),
            error_type: Some("overloaded_error".into()),
            started_at: at(1_767_225_600_000),
            ended_at: at(1_767_225_600_040),
            metadata: BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]),
            attempts: vec![
                Attempt {
                    provider: "bedrock".into(),
                    target: "bedrock-eu".into(),
                    status: Some(529),
                    latency_ms: 9,
                    error_type: Some("overloaded_error".into()),
                },
                Attempt {
                    provider: "anthropic".into(),
                    target: "anthropic".into(),
                    status: None,
                    latency_ms: 30,
                    error_type: None,
                },
            ],
            usage: Usage {
                input_tokens: 1,
                output_tokens: 2,
                cache_creation_5m_tokens: 3,
                cache_creation_1h_tokens: 4,
                cache_read_tokens: 5,
                web_search_requests: 6,
                web_fetch_requests: 7,
                speed: Some("fast".into()),
                inference_geo: Some("us".into()),
                service_tier: Some("priority".into()),
                iterations: vec![Iteration {
                    kind: "compaction".into(),
                    model: None,
                    usage: Usage::default(),
                }],
                fallback_credit_redeemed: true,
            },
            downgrades: vec!["x".into(), "y".into()],
            billed_by: BilledBy::Subscription,
            credential_fingerprint: Some("fp".into()),
            usage_estimated: true,
            cost: Some(Cost {
                price_table_version: "v9".into(),
                lines: Some(lines),
                family: Some("sonnet".into()),
                tier: Some("standard".into()),
                basis: Some("table".into()),
                notes: vec!["fast".into(), "us".into()],
                source: None,
            }),
            ..sample_event()
        }
    }

    /// An event with every optional field absent and every list empty.
    fn minimal_event() -> LlmEvent {
        LlmEvent {
            session_id: None,
            agent_id: None,
            parent_agent_id: None,
            request_id: None,
            ttft_ms: None,
            metadata: BTreeMap::new(),
            model_requested: None,
            model_served: None,
            stop_reason: None,
            attempts: Vec::new(),
            usage: Usage::default(),
            downgrades: Vec::new(),
            client: None,
            stream: false,
            ..full_event()
        }
        .without_cost()
    }

    impl LlmEvent {
        /// The event with no optional field set (test helper).
        fn without_cost(self) -> LlmEvent {
            LlmEvent {
                region: None,
                error_type: None,
                billed_by: BilledBy::Api,
                credential_fingerprint: None,
                usage_estimated: false,
                cost: None,
                ..self
            }
        }
    }

    /// Each column of row `row` as text (`∅` for null), by column name.
    fn cells(batch: &RecordBatch, row: usize) -> Vec<(String, String)> {
        let options = arrow::util::display::FormatOptions::default().with_null("∅");
        let schema = batch.schema();
        schema
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(f, c)| {
                let fmt = arrow::util::display::ArrayFormatter::try_new(c, &options).unwrap();
                (f.name().clone(), fmt.value(row).to_string())
            })
            .collect()
    }

    /// The lake schema as it was written field by field before the column
    /// table: the table must reproduce it exactly.
    fn expected_schema() -> Schema {
        let s = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
        let i = |name: &str, nullable| Field::new(name, DataType::Int64, nullable);
        let ts = |name: &str| Field::new(name, ts_type(), false);
        let usd = |name: &str| Field::new(name, usd_type(), true);
        let attempt = Fields::from(vec![
            Field::new("provider", DataType::Utf8, false),
            Field::new("target", DataType::Utf8, false),
            Field::new("status", DataType::UInt16, true),
            Field::new("latency_ms", DataType::Int64, false),
            Field::new("error_type", DataType::Utf8, true),
        ]);
        let entries = Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", DataType::Utf8, true),
            ])),
            false,
        );
        let list = |t| DataType::List(Arc::new(Field::new("item", t, true)));
        Schema::new(vec![
            s("event_id", false),
            Field::new("schema_version", DataType::UInt16, false),
            s("trace_id", false),
            s("session_id", true),
            s("agent_id", true),
            s("parent_agent_id", true),
            s("request_id", true),
            ts("started_at"),
            ts("ended_at"),
            i("ttft_ms", true),
            i("latency_ms", false),
            s("workspace", false),
            s("team", false),
            s("user", false),
            s("key_id", false),
            Field::new("metadata", DataType::Map(Arc::new(entries), false), false),
            s("endpoint", false),
            s("provider", false),
            s("target", false),
            s("region", true),
            s("model_requested", true),
            s("model_served", true),
            Field::new("stream", DataType::Boolean, false),
            Field::new("status", DataType::UInt16, false),
            s("error_type", true),
            s("stop_reason", true),
            Field::new("attempts", list(DataType::Struct(attempt)), false),
            i("input_tokens", false),
            i("output_tokens", false),
            i("cache_creation_5m_tokens", false),
            i("cache_creation_1h_tokens", false),
            i("cache_read_tokens", false),
            i("web_search_requests", false),
            i("web_fetch_requests", false),
            Field::new("downgrades", list(DataType::Utf8), false),
            s("client", true),
            s("billed_by", true),
            s("credential_fingerprint", true),
            Field::new("usage_estimated", DataType::Boolean, true),
            s("speed", true),
            s("inference_geo", true),
            s("service_tier", true),
            s("usage_iterations", true),
            Field::new("fallback_credit_redeemed", DataType::Boolean, true),
            usd("cost_usd"),
            usd("cost_input_usd"),
            usd("cost_output_usd"),
            usd("cost_cache_write_5m_usd"),
            usd("cost_cache_write_1h_usd"),
            usd("cost_cache_read_usd"),
            usd("cost_web_search_usd"),
            usd("cost_cache_savings_usd"),
            Field::new("priced", DataType::Boolean, true),
            s("price_table_version", true),
            s("pricing_family", true),
            s("pricing_tier", true),
            s("pricing_basis", true),
            s("pricing_notes", true),
            Field::new("bus_partition", DataType::UInt32, false),
            i("bus_offset", false),
        ])
    }

    /// Expected cells of [`full_event`] at partition 3, offset 42.
    const FULL_ROW: &[(&str, &str)] = &[
        ("event_id", "01900000-0000-7000-8000-000000000001"),
        ("schema_version", "1"),
        ("trace_id", "t-1"),
        ("session_id", "s-1"),
        ("agent_id", "agent-1"),
        ("parent_agent_id", "agent-0"),
        ("request_id", "req_1"),
        ("started_at", "2026-01-01T00:00:00Z"),
        ("ended_at", "2026-01-01T00:00:00.040Z"),
        ("ttft_ms", "12"),
        ("latency_ms", "40"),
        ("workspace", "default"),
        ("team", "eng"),
        ("user", "alice"),
        ("key_id", "k1"),
        ("metadata", "{a: 1, b: 2}"),
        ("endpoint", "messages"),
        ("provider", "anthropic"),
        ("target", "anthropic"),
        ("region", "eu-west-1"),
        ("model_requested", "claude-sonnet-4-5"),
        ("model_served", "claude-sonnet-4-5-20250929"),
        ("stream", "true"),
        ("status", "200"),
        ("error_type", "overloaded_error"),
        ("stop_reason", "end_turn"),
        (
            "attempts",
            "[{provider: bedrock, target: bedrock-eu, status: 529, latency_ms: 9, \
             error_type: overloaded_error}, {provider: anthropic, target: anthropic, \
             status: ∅, latency_ms: 30, error_type: ∅}]",
        ),
        ("input_tokens", "1"),
        ("output_tokens", "2"),
        ("cache_creation_5m_tokens", "3"),
        ("cache_creation_1h_tokens", "4"),
        ("cache_read_tokens", "5"),
        ("web_search_requests", "6"),
        ("web_fetch_requests", "7"),
        ("downgrades", "[x, y]"),
        ("client", "claude-cli/2.1.197"),
        ("billed_by", "subscription"),
        ("credential_fingerprint", "fp"),
        ("usage_estimated", "true"),
        ("speed", "fast"),
        ("inference_geo", "us"),
        ("service_tier", "priority"),
        (
            "usage_iterations",
            r#"[{"kind":"compaction","usage":{"input_tokens":0,"output_tokens":0,"cache_creation_5m_tokens":0,"cache_creation_1h_tokens":0,"cache_read_tokens":0,"web_search_requests":0,"web_fetch_requests":0}}]"#,
        ),
        ("fallback_credit_redeemed", "true"),
        ("cost_usd", "0.210000000000"),
        ("cost_input_usd", "0.010000000000"),
        ("cost_output_usd", "0.020000000000"),
        ("cost_cache_write_5m_usd", "0.030000000000"),
        ("cost_cache_write_1h_usd", "0.040000000000"),
        ("cost_cache_read_usd", "0.050000000000"),
        ("cost_web_search_usd", "0.060000000000"),
        ("cost_cache_savings_usd", "0.070000000000"),
        ("priced", "true"),
        ("price_table_version", "v9"),
        ("pricing_family", "sonnet"),
        ("pricing_tier", "standard"),
        ("pricing_basis", "table"),
        ("pricing_notes", "fast; us"),
        ("bus_partition", "3"),
        ("bus_offset", "42"),
    ];

    /// Expected cells of [`minimal_event`] at partition 0, offset 0.
    const MINIMAL_ROW: &[(&str, &str)] = &[
        ("event_id", "01900000-0000-7000-8000-000000000001"),
        ("schema_version", "1"),
        ("trace_id", "t-1"),
        ("session_id", "∅"),
        ("agent_id", "∅"),
        ("parent_agent_id", "∅"),
        ("request_id", "∅"),
        ("started_at", "2026-01-01T00:00:00Z"),
        ("ended_at", "2026-01-01T00:00:00.040Z"),
        ("ttft_ms", "∅"),
        ("latency_ms", "40"),
        ("workspace", "default"),
        ("team", "eng"),
        ("user", "alice"),
        ("key_id", "k1"),
        ("metadata", "{}"),
        ("endpoint", "messages"),
        ("provider", "anthropic"),
        ("target", "anthropic"),
        ("region", "∅"),
        ("model_requested", "∅"),
        ("model_served", "∅"),
        ("stream", "false"),
        ("status", "200"),
        ("error_type", "∅"),
        ("stop_reason", "∅"),
        ("attempts", "[]"),
        ("input_tokens", "0"),
        ("output_tokens", "0"),
        ("cache_creation_5m_tokens", "0"),
        ("cache_creation_1h_tokens", "0"),
        ("cache_read_tokens", "0"),
        ("web_search_requests", "0"),
        ("web_fetch_requests", "0"),
        ("downgrades", "[]"),
        ("client", "∅"),
        ("billed_by", "api"),
        ("credential_fingerprint", "∅"),
        ("usage_estimated", "false"),
        ("speed", "∅"),
        ("inference_geo", "∅"),
        ("service_tier", "∅"),
        ("usage_iterations", "∅"),
        ("fallback_credit_redeemed", "∅"),
        ("cost_usd", "∅"),
        ("cost_input_usd", "∅"),
        ("cost_output_usd", "∅"),
        ("cost_cache_write_5m_usd", "∅"),
        ("cost_cache_write_1h_usd", "∅"),
        ("cost_cache_read_usd", "∅"),
        ("cost_web_search_usd", "∅"),
        ("cost_cache_savings_usd", "∅"),
        ("priced", "∅"),
        ("price_table_version", "∅"),
        ("pricing_family", "∅"),
        ("pricing_tier", "∅"),
        ("pricing_basis", "∅"),
        ("pricing_notes", "∅"),
        ("bus_partition", "0"),
        ("bus_offset", "0"),
    ];

    /// Compares one row's cells with the expected ones, column by column.
    fn assert_row(batch: &RecordBatch, row: usize, expected: &[(&str, &str)]) {
        let got = cells(batch, row);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        let want: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, want, "column names and order");
        for ((name, value), (_, want)) in got.iter().zip(expected) {
            assert_eq!(value, want, "column {name} of row {row}");
        }
    }

    #[test]
    fn every_lake_column_of_a_full_and_a_minimal_event() {
        let (full, minimal) = (full_event(), minimal_event());
        let at = |partition, offset| BusPosition { partition, offset };
        let batch = to_record_batch(&[(at(3, 42), &full), (at(0, 0), &minimal)]).unwrap();
        assert_eq!(batch.schema().as_ref(), &expected_schema());
        assert_row(&batch, 0, FULL_ROW);
        assert_row(&batch, 1, MINIMAL_ROW);
    }

    #[test]
    fn cost_columns_alone_match_the_event_columns() {
        let e = full_event();
        let batch = to_record_batch(&[(
            BusPosition {
                partition: 0,
                offset: 0,
            },
            &e,
        )])
        .unwrap();
        let mut costs = CostColumns::with_capacity(2);
        costs.push(&e.cost);
        costs.push(&None);
        let finished = costs.finish();
        assert_eq!(finished.len(), 14, "every cost column");
        for (name, col) in finished {
            let whole = batch.column_by_name(name).unwrap();
            assert_eq!(&col.slice(0, 1), &whole.slice(0, 1), "column {name}");
            assert!(col.is_null(1), "column {name} is null without a cost");
        }
    }
}
