//! Pipeline ceiling benchmark: events injected at the gateway's hand-off
//! and timed until the lake holds them, apart from the HTTP path.
//!
//! Run with `cargo bench --bench pipeline`. The whole process (the
//! injector, the publisher, the embedded log, the accountant and the sink,
//! and any blocking threads they start) is pinned to one core; the path is
//! the one `tollgate serve` runs: hand-off → publisher → embedded log
//! (`tollgate.events.v1`, fsync per append) → accountant (pricing, costed
//! topic) → sink (Arrow batches, Parquet files). Prints events/s end to end,
//! CPU time per event and the process's peak resident memory. Asserts
//! nothing about speed.
//!
//! `TOLLGATE_BENCH_BUS=kafka` runs the Kafka path instead, as the roles on
//! Kafka run it: hand-off → publisher → journal → forwarder → Kafka
//! (`tollgate.events.v1`, 4 partitions) → accountant → Kafka
//! (`tollgate.costed.v1`) → sink, on a tansu broker (memory storage,
//! installed by `scripts/install-test-deps.sh`) pinned to the other core.
//! Producer: `acks=all`, idempotence, lz4, `linger.ms` 5 (tollgate's
//! defaults); consumers: manual commits, `session.timeout.ms` 6000. A
//! warm-up of 2,000 events lands first, so consumer-group joins are not
//! timed.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tollgate::accounting::accountant::Accountant;
use tollgate::bus::kafka::KafkaBus;
use tollgate::bus::local::LocalBus;
use tollgate::bus::{COSTED_TOPIC, EVENTS_TOPIC, Log};
use tollgate::config::KafkaConfig;
use tollgate::handoff::{self, Handed};
use tollgate::lake::files::LakeLayout;
use tollgate::lake::sink::{Sink, SinkOptions};
use tollgate::metrics::METRICS;
use tollgate::pricing::{PriceBook, SharedBook};

#[path = "support/event.rs"]
mod event;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/tansu.rs"]
mod tansu;

use procfs::ProcStats;

/// The allocator the `tollgate` binary runs with (src/main.rs), so the
/// pipeline is measured as it runs there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Events per run (`TOLLGATE_BENCH_EVENTS` sets another number, e.g. a
/// smaller one under callgrind).
static EVENTS: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
    std::env::var("TOLLGATE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000)
});
/// The hand-off's room, as `bus.queue_capacity` in the default config.
const QUEUE: usize = 65_536;

/// Events landed before a Kafka run is timed.
const WARM_UP: u64 = 2_000;

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = match std::env::var("TOLLGATE_BENCH_BUS").as_deref() {
        Ok("kafka") => {
            let broker = tansu::start(dir.path())
                .expect("tansu not found: run scripts/install-test-deps.sh");
            pin("1", broker.pid());
            Some(broker)
        }
        _ => None,
    };
    pin_self("0");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(dir.path(), broker.as_ref().map(|b| b.addr.as_str())));
}

/// Pins process `pid` and its threads to `core`; whether that worked.
fn pin(core: &str, pid: u32) -> bool {
    Command::new("taskset")
        .args(["-a", "-p", "-c", core, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Pins this process (and, by inheritance, every thread it starts) to `core`.
fn pin_self(core: &str) {
    let pinned = pin(core, std::process::id());
    println!("pipeline benchmark (pinned to core {core}: {pinned})");
}

/// Hands `n` events over as fast as the queue takes them; an event that
/// had to wait for room makes the injector pause, so none is lost.
async fn inject(handoff: &handoff::EventHandoff, n: u64) {
    let base = event::template();
    for i in 0..n {
        let mut e = base.clone();
        e.event_id = uuid::Uuid::now_v7();
        e.team = ["bench", "platform", "research", "infra"][(i % 4) as usize].to_owned();
        match handoff.send(e) {
            Handed::Queued => {}
            Handed::Waiting => tokio::time::sleep(Duration::from_millis(2)).await,
            Handed::Lost => panic!("event {i} lost: the injector outran the overflow room"),
        }
        if i % 1024 == 0 {
            tokio::task::yield_now().await;
        }
    }
}

/// The running pipeline: where events go in, and the tasks to stop.
struct Pipeline {
    handoff: handoff::EventHandoff,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The embedded log, to time when the events are in it.
    embedded: Option<Arc<LocalBus>>,
    label: &'static str,
}

/// Starts publisher, accountant and sink on the embedded log in `dir`, or
/// on Kafka at `brokers` (with the journal and forwarder in front).
async fn start(dir: &std::path::Path, brokers: Option<&str>) -> Pipeline {
    let stop = CancellationToken::new();
    let (handoff, queue) = handoff::channel(QUEUE);
    let mut tasks = Vec::new();
    let (log, embedded, label): (Arc<dyn Log>, _, _) = match brokers {
        None => {
            let bus = LocalBus::open(&dir.join("log")).expect("embedded log");
            let log: Arc<dyn Log> = bus.clone();
            let publish = log.clone();
            tasks.push(tokio::spawn(async move {
                let never = CancellationToken::new();
                tollgate::bus::publisher::run(queue, publish, EVENTS_TOPIC, never).await
            }));
            (log, Some(bus), "embedded log, one core")
        }
        Some(brokers) => {
            let cfg = KafkaConfig {
                brokers: brokers.to_owned(),
                partitions: 4,
                session_timeout_ms: 6000,
                ..KafkaConfig::default()
            };
            let kafka = KafkaBus::new(&cfg).expect("kafka");
            kafka.ensure_topics().await.expect("topics");
            let journal = LocalBus::open_journal_recovered(&dir.join("journal"))
                .await
                .expect("journal");
            let to_journal: Arc<dyn Log> = journal.clone();
            tasks.push(tokio::spawn(async move {
                let never = CancellationToken::new();
                tollgate::bus::publisher::run(queue, to_journal, EVENTS_TOPIC, never).await
            }));
            let (forwarding, stop) = (kafka.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let grace = Duration::from_secs(30);
                let _ = tollgate::bus::forwarder::run(journal, forwarding, stop, grace).await;
            }));
            (
                kafka as Arc<dyn Log>,
                None,
                "Kafka (tansu on the other core), tollgate on one core",
            )
        }
    };
    let accountant = Accountant::new(
        SharedBook::new(PriceBook::embedded()),
        Vec::new(),
        log.clone(),
    )
    .await
    .expect("accountant");
    let accountant_stop = stop.clone();
    tasks.push(tokio::spawn(async move {
        let _ = accountant.run(accountant_stop).await;
    }));
    // As `tollgate serve` subscribes it: taking the priced events the
    // accountant hands over in this process (on Kafka: decoding them).
    let sink = Sink::new(
        log.subscribe_decoded("tollgate-sink", COSTED_TOPIC)
            .await
            .expect("subscribe"),
        LakeLayout::new(dir.join("lake")),
        SinkOptions {
            flush_rows: 50_000,
            flush_interval: Duration::from_millis(500),
        },
    )
    .await
    .expect("sink");
    let sink_stop = stop.clone();
    tasks.push(tokio::spawn(async move {
        let _ = sink.run(sink_stop).await;
    }));
    Pipeline {
        handoff,
        stop,
        tasks,
        embedded,
        label,
    }
}

/// Waits until the lake holds `rows` rows more than `before`; returns
/// when the embedded log (if any) first held `in_log` events.
async fn landed(
    p: &Pipeline,
    before: u64,
    rows: u64,
    in_log: u64,
    started: Instant,
) -> Option<Duration> {
    let mut appended = None;
    while METRICS.sink_rows.get() < before + rows {
        if let (None, Some(bus)) = (appended, &p.embedded)
            && bus.end_offset(EVENTS_TOPIC).unwrap_or(0) >= in_log
        {
            appended = Some(started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "pipeline stalled"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    appended
}

async fn run(dir: &std::path::Path, brokers: Option<&str>) {
    let pipeline = start(dir, brokers).await;
    let mut sent = 0;
    if brokers.is_some() {
        let before = METRICS.sink_rows.get();
        inject(&pipeline.handoff, WARM_UP).await;
        landed(&pipeline, before, WARM_UP, WARM_UP, Instant::now()).await;
        sent = WARM_UP;
    }
    let rows0 = METRICS.sink_rows.get();
    let (cpu0, started) = (ProcStats::of("self").cpu, Instant::now());
    let events = *EVENTS;
    inject(&pipeline.handoff, events).await;
    let injected = started.elapsed();
    let appended = landed(&pipeline, rows0, events, sent + events, started).await;
    let landed = started.elapsed();
    let cpu = ProcStats::of("self").cpu - cpu0;
    match appended {
        Some(appended) => println!(
            "  {events} events: handed over in {:.2} s, in the log after {:.2} s ({:.0}/s), in the lake (Parquet) after {:.2} s",
            injected.as_secs_f64(),
            appended.as_secs_f64(),
            events as f64 / appended.as_secs_f64(),
            landed.as_secs_f64()
        ),
        None => println!(
            "  {events} events: handed over in {:.2} s, in the lake (Parquet) after {:.2} s",
            injected.as_secs_f64(),
            landed.as_secs_f64()
        ),
    }
    println!(
        "  pipeline ceiling, {}: {:.0} events/s end to end; CPU {:.2} µs per event (this process)",
        pipeline.label,
        events as f64 / landed.as_secs_f64(),
        cpu * 1e6 / events as f64
    );
    println!(
        "  peak resident memory (VmHWM): {:.1} MiB",
        ProcStats::of("self").peak
    );
    let handed = |topic| METRICS.bus_handed.with_label_values(&[topic]).get();
    println!(
        "  handed over in memory, not decoded: {} of the accountant's records, {} of the sink's",
        handed(EVENTS_TOPIC),
        handed(COSTED_TOPIC)
    );
    pipeline.stop.cancel();
    drop(pipeline.handoff);
    for task in pipeline.tasks {
        let _ = task.await;
    }
}
