//! Gateway benchmark: the latency tollgate adds, its throughput, CPU time
//! per request and memory, against the project's mock provider.
//!
//! Run with `cargo bench --bench gateway_latency`. tollgate (`serve`, every
//! role, events recorded to its lake) is pinned to core 0; the mock and this
//! load generator to core 1, as in ../shared/PERFORMANCE.md. "Added" is the
//! same percentile through tollgate minus straight to the mock, same run.
//! The mock (the `tollgate-mock` crate) runs in a process of its own: this
//! benchmark binary started again with `mock-provider` as its argument.
//! Prints figures; asserts nothing about speed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "tg-bench-key";
const PROVIDER_KEY: &str = "sk-bench";
const SMALL_BODY: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;

/// The argument that makes this binary serve the mock instead.
const MOCK_ROLE: &str = "mock-provider";

fn main() {
    if std::env::args().nth(1).as_deref() == Some(MOCK_ROLE) {
        serve_mock();
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

/// The mock provider, in this (re-executed) process, until it is killed;
/// prints its address as the `tollgate-mock` binary does.
fn serve_mock() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let options = tollgate_mock::MockOptions {
            api_key: Some(PROVIDER_KEY.to_owned()),
            ..tollgate_mock::MockOptions::default()
        };
        let mock = tollgate_mock::spawn(listener, options).expect("mock");
        println!("mock provider listening on {}", mock.url());
        std::future::pending::<()>().await;
    });
}

struct Proc {
    child: Child,
    url: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Starts `PROGRAM ARGS` pinned to `core`, returning the URL it prints.
fn start(core: &str, program: &Path, args: &[&str], prefix: &str, dir: &Path) -> Proc {
    let mut cmd = if has_taskset() {
        let mut c = Command::new("taskset");
        c.args(["-c", core]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let mut child = cmd
        .args(args)
        .current_dir(dir)
        .env("TOLLGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("process printed its address")
            .expect("line");
        if let Some(url) = line.strip_prefix(prefix) {
            break url.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Proc { child, url }
}

fn has_taskset() -> bool {
    Command::new("taskset").arg("-V").output().is_ok()
}

fn pin_self(core: &str) {
    if has_taskset() {
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", core, &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sends one request and returns (time to first byte, total time).
async fn one(
    client: &reqwest::Client,
    url: &str,
    auth: &str,
    body: &'static str,
    scenario: Option<&str>,
) -> Result<(Duration, Duration), String> {
    let started = Instant::now();
    let mut req = client
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", auth)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body);
    if let Some(s) = scenario {
        req = req.header("x-mock-scenario", s);
    }
    let mut r = req.send().await.map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("status {}", r.status()));
    }
    let mut first = None;
    while let Some(chunk) = r.chunk().await.map_err(|e| e.to_string())? {
        if first.is_none() && !chunk.is_empty() {
            first = Some(started.elapsed());
        }
    }
    let total = started.elapsed();
    Ok((first.unwrap_or(total), total))
}

struct Sample {
    ttfb: Vec<Duration>,
    total: Vec<Duration>,
    errors: usize,
}

async fn sequential(
    client: &reqwest::Client,
    url: &str,
    auth: &str,
    body: &'static str,
    n: usize,
) -> Sample {
    let mut s = Sample {
        ttfb: Vec::with_capacity(n),
        total: Vec::with_capacity(n),
        errors: 0,
    };
    for _ in 0..n {
        match one(client, url, auth, body, None).await {
            Ok((f, t)) => {
                s.ttfb.push(f);
                s.total.push(t);
            }
            Err(_) => s.errors += 1,
        }
    }
    s.ttfb.sort();
    s.total.sort();
    s
}

/// Offers `rate` requests/s for `secs` seconds regardless of answers
/// (open loop), so queueing inside the gateway shows in the latencies.
async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    auth: &str,
    body: &'static str,
    rate: u64,
    secs: u64,
    scenario: Option<&'static str>,
) -> Sample {
    let n = rate * secs;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut handles = Vec::with_capacity(n as usize);
    for i in 0..n {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (client, url, auth) = (client.clone(), url.to_owned(), auth.to_owned());
        handles.push(tokio::spawn(async move {
            one(&client, &url, &auth, body, scenario).await
        }));
    }
    let mut s = Sample {
        ttfb: Vec::new(),
        total: Vec::new(),
        errors: 0,
    };
    for h in handles {
        match h.await {
            Ok(Ok((f, t))) => {
                s.ttfb.push(f);
                s.total.push(t);
            }
            _ => s.errors += 1,
        }
    }
    s.ttfb.sort();
    s.total.sort();
    s
}

async fn throughput(
    client: &reqwest::Client,
    url: &str,
    auth: &str,
    concurrency: usize,
    secs: u64,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, auth, done) = (
                client.clone(),
                url.to_owned(),
                auth.to_owned(),
                done.clone(),
            );
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    if one(&client, &url, &auth, SMALL_BODY, None).await.is_ok() {
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    for w in workers {
        let _ = w.await;
    }
    done.load(std::sync::atomic::Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// (user+system CPU seconds, RSS MiB, peak RSS MiB) of a process.
fn proc_stats(pid: u32) -> (f64, f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (cpu, kb("VmRSS:"), kb("VmHWM:"))
}

fn row(label: &str, direct: &[Duration], via: &[Duration]) {
    let (d50, d99) = (percentile(direct, 0.5), percentile(direct, 0.99));
    let (v50, v99) = (percentile(via, 0.5), percentile(via, 0.99));
    println!(
        "{label:<46} direct p50 {:>7.3} p99 {:>7.3} | via tollgate p50 {:>7.3} p99 {:>7.3} | added p50 {:>+7.3} p99 {:>+7.3} ms",
        ms(d50),
        ms(d99),
        ms(v50),
        ms(v99),
        ms(v50) - ms(d50),
        ms(v99) - ms(d99)
    );
}

fn claude_code_body() -> &'static str {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/claude-code/anthropic_first_request_authtoken.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("sample")).expect("json");
    Box::leak(v["body"].to_string().into_boxed_str())
}

async fn run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let this = std::env::current_exe().expect("this benchmark's path");
    let mock = start(
        "1",
        &this,
        &[MOCK_ROLE],
        "mock provider listening on ",
        dir.path(),
    );
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[data]\ndir = \"data\"\n[api]\nadmin_tokens = [\"bench\"]\n[providers.anthropic]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"{PROVIDER_KEY}\"\n[[keys]]\nid = \"bench\"\nhash = \"{}\"\nteam = \"bench\"\nuser = \"bench\"\nprovider = \"anthropic\"\n",
        mock.url,
        tollgate::config::hash_key(KEY)
    );
    std::fs::write(dir.path().join("tollgate.toml"), config).expect("config");
    let tg = start(
        "0",
        Path::new(env!("CARGO_BIN_EXE_tollgate")),
        &["serve", "--config", "tollgate.toml"],
        "tollgate gateway listening on ",
        dir.path(),
    );
    pin_self("1");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let pid = tg.child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, idle_rss, _) = proc_stats(pid);

    println!(
        "tollgate gateway benchmark (tollgate on core 0; mock + load on core 1; taskset: {})",
        has_taskset()
    );
    // Warm up connections and caches on both paths.
    sequential(&client, &mock.url, PROVIDER_KEY, SMALL_BODY, 200).await;
    sequential(&client, &tg.url, KEY, SMALL_BODY, 200).await;

    let n = 3000;
    let direct = sequential(&client, &mock.url, PROVIDER_KEY, SMALL_BODY, n).await;
    let via = sequential(&client, &tg.url, KEY, SMALL_BODY, n).await;
    row(
        "concurrency 1, small JSON, total",
        &direct.total,
        &via.total,
    );

    let cc = claude_code_body();
    let stream_body: &'static str = Box::leak(cc.to_owned().into_boxed_str());
    let direct = sequential(&client, &mock.url, PROVIDER_KEY, stream_body, 1000).await;
    let via = sequential(&client, &tg.url, KEY, stream_body, 1000).await;
    println!("(Claude Code body: {} KB, streaming)", cc.len() / 1024);
    row(
        "concurrency 1, Claude Code body, first byte",
        &direct.ttfb,
        &via.ttfb,
    );
    row(
        "concurrency 1, Claude Code body, total",
        &direct.total,
        &via.total,
    );

    let (cpu0, _, _) = proc_stats(pid);
    let direct = open_loop(&client, &mock.url, PROVIDER_KEY, SMALL_BODY, 500, 10, None).await;
    let (cpu_mid, _, _) = proc_stats(pid);
    let via = open_loop(&client, &tg.url, KEY, SMALL_BODY, 500, 10, None).await;
    let (cpu1, _, _) = proc_stats(pid);
    row(
        "500 req/s open loop, small JSON, total",
        &direct.total,
        &via.total,
    );
    println!("  errors: direct {} via {}", direct.errors, via.errors);
    let idle_cpu = cpu_mid - cpu0;
    println!(
        "  tollgate CPU per request at 500 req/s: {:.3} ms (whole process: gateway + bus + sink; idle during direct run {:.3} s)",
        (cpu1 - cpu_mid) * 1000.0 / 5000.0,
        idle_cpu
    );

    let direct = open_loop(
        &client,
        &mock.url,
        PROVIDER_KEY,
        SMALL_BODY,
        1000,
        5,
        Some("delay:20"),
    )
    .await;
    let via = open_loop(&client, &tg.url, KEY, SMALL_BODY, 1000, 5, Some("delay:20")).await;
    row(
        "1000 req/s offered, mock takes 20 ms",
        &direct.total,
        &via.total,
    );
    println!("  errors: direct {} via {}", direct.errors, via.errors);

    let rps = throughput(&client, &tg.url, KEY, 64, 5).await;
    let direct_rps = throughput(&client, &mock.url, PROVIDER_KEY, 64, 5).await;
    println!(
        "most requests/s, 64 concurrent, small JSON: via tollgate {rps:.0}/s (mock alone {direct_rps:.0}/s)"
    );
    let (_, rss, peak) = proc_stats(pid);
    println!("tollgate RSS: idle {idle_rss:.1} MiB, now {rss:.1} MiB, peak {peak:.1} MiB");
}
