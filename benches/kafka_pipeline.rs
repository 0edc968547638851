//! Kafka pipeline benchmark: events through gateway → journal → Kafka →
//! accountant → Kafka → sink → Parquet, on a real Kafka-protocol broker
//! (tansu, memory storage) on loopback.
//!
//! Run with `cargo bench --bench kafka_pipeline` after
//! `scripts/install-test-deps.sh` (which installs tansu). Prints:
//! - end-to-end events/s: N requests sent as fast as 64 clients can, timed
//!   from the first request until the lake holds all N;
//! - response → queryable (p50/p99): requests at a steady 20/s, each timed
//!   from its answer until `GET /v1/logs/{event_id}` finds it;
//! - for scale, a bare rdkafka producer with the gateway's settings (acks=all,
//!   idempotence, lz4, linger 5 ms) pushing the same payloads raw into the
//!   same broker in the same run.
//!
//! Asserts nothing about speed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[path = "support/tansu.rs"]
mod tansu;

const KEY: &str = "tg-bench-key";
const ADMIN: &str = "bench-admin";
const BODY: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
const TOTAL: usize = 20_000;
const CONCURRENCY: usize = 64;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

fn start_tollgate(dir: &Path, config: &Path) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(config)
        .env("TOLLGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("tollgate.log")).expect("log"))
        .spawn()
        .expect("tollgate starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("tollgate printed its address")
            .expect("line");
        if let Some(url) = line.strip_prefix("tollgate gateway listening on ") {
            break url.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), url)
}

async fn sink_rows(client: &reqwest::Client, url: &str) -> u64 {
    let Ok(r) = client.get(format!("{url}/metrics")).send().await else {
        return 0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("tollgate_sink_rows_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

async fn send(client: &reqwest::Client, url: &str) -> Option<String> {
    let r = client
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .header("x-tollgate-trace-id", "bench")
        .body(BODY)
        .send()
        .await
        .ok()?;
    let id = r
        .headers()
        .get("x-tollgate-event-id")?
        .to_str()
        .ok()?
        .to_owned();
    r.bytes().await.ok()?;
    Some(id)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tansu =
        tansu::start(dir.path()).expect("tansu not found: run scripts/install-test-deps.sh");
    let brokers = tansu.addr.clone();
    let mock = tollgate_mock::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
        tollgate_mock::MockOptions::default(),
    )
    .expect("mock");
    let config = dir.path().join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
[data]
dir = "data"
[bus]
kind = "kafka"
[bus.kafka]
brokers = "{brokers}"
partitions = 4
session_timeout_ms = 6000
[sink]
flush_rows = 50000
flush_interval_ms = 500
[api]
admin_tokens = ["{ADMIN}"]
[providers.anthropic]
kind = "anthropic"
base_url = "{}"
api_key = "sk-bench"
[[keys]]
id = "bench"
hash = "{}"
team = "bench"
user = "bench"
provider = "anthropic"
"#,
            mock.url(),
            tollgate::config::hash_key(KEY)
        ),
    )
    .expect("config");
    let (_tollgate, url) = start_tollgate(dir.path(), &config);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .expect("client");
    // Warm up: topics exist, consumer groups joined, one event in the lake.
    let warm = Instant::now();
    send(&client, &url).await.expect("warm-up request");
    while sink_rows(&client, &url).await < 1 {
        assert!(
            warm.elapsed() < Duration::from_secs(60),
            "pipeline did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let base = sink_rows(&client, &url).await;

    // End-to-end throughput.
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, url, next) = (client.clone(), url.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < TOTAL as u64 {
                    send(&client, &url).await.expect("request answered");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    let answered = started.elapsed();
    while sink_rows(&client, &url).await < base + TOTAL as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let landed = started.elapsed();

    // Response → queryable, at a steady rate.
    let mut lags = Vec::new();
    let mut probes = Vec::new();
    for _ in 0..100 {
        let (client, url) = (client.clone(), url.clone());
        probes.push(tokio::spawn(async move {
            let id = send(&client, &url).await.expect("probe answered");
            let answered = Instant::now();
            loop {
                let r = client
                    .get(format!("{url}/v1/logs/{id}"))
                    .bearer_auth(ADMIN)
                    .send()
                    .await
                    .expect("api");
                if r.status() == 200 {
                    return answered.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for p in probes {
        lags.push(p.await.expect("probe"));
    }
    lags.sort();

    // A bare producer with the same settings, same broker, same payloads.
    // Payloads the size of a real event (as the API returns one).
    let id = send(&client, &url).await.expect("request answered");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let one = client
        .get(format!("{url}/v1/logs/{id}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("api")
        .bytes()
        .await
        .expect("body");
    let payload = vec![b'x'; one.len().max(200)];
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let raw_started = Instant::now();
    let mut deliveries = Vec::with_capacity(TOTAL * 5);
    for i in 0..TOTAL * 5 {
        let key = format!("team-{}", i % 8);
        loop {
            match producer.send_result(FutureRecord::to("bench.raw").key(&key).payload(&payload)) {
                Ok(d) => {
                    deliveries.push(d);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
    for d in deliveries {
        let _ = d.await;
    }
    let raw = raw_started.elapsed();

    println!(
        "kafka pipeline on tansu 0.6.0 (memory), {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "  end to end: {TOTAL} requests answered in {:.2} s ({:.0} req/s), all in the lake after {:.2} s: {:.0} events/s",
        answered.as_secs_f64(),
        TOTAL as f64 / answered.as_secs_f64(),
        landed.as_secs_f64(),
        TOTAL as f64 / landed.as_secs_f64()
    );
    println!(
        "  response -> queryable (sink flush_interval 500 ms, 100 probes at 20/s): p50 {:.0} ms, p99 {:.0} ms",
        percentile(&lags, 0.5).as_secs_f64() * 1000.0,
        percentile(&lags, 0.99).as_secs_f64() * 1000.0
    );
    println!(
        "  bare rdkafka producer, same settings, {}-byte payloads: {:.0} msg/s",
        payload.len(),
        (TOTAL * 5) as f64 / raw.as_secs_f64()
    );
}
