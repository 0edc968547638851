//! Gateway benchmark: the latency tollgate adds, its throughput, CPU time
//! per request, memory and start-up, against the project's mock provider.
//!
//! Run with `cargo bench --bench gateway_latency`. tollgate (`serve`, every
//! role, events recorded to its lake) is pinned to core 0; the mock and this
//! load generator to core 1, as in ../shared/PERFORMANCE.md. "Added" is the
//! same percentile through tollgate minus straight to the mock, same run.
//! Every row of issue 19's table is printed for small JSON bodies and for
//! Claude Code's 78 KB first request (tests/data/claude-code/).
//!
//! The start-up rows time `tollgate gateway` on a tansu broker (installed by
//! `scripts/install-test-deps.sh`; the rows are skipped without it) from
//! spawn to its first answered request: a gateway on Kafka serves once it
//! has read the control topic. With `TOLLGATE_GATEWAY_BIN` naming a binary
//! built with `--no-default-features --features gateway`, the same is
//! measured for that gateway-only build, with its idle RSS and
//! one-at-a-time latency. `TOLLGATE_SERVE_BIN` names another build's
//! binary to measure as `tollgate serve` (comparing two commits in one
//! sitting). Memory is printed as the resident set and its
//! anonymous (the process's own) and file-backed (code pages) parts.
//!
//! `TOLLGATE_BENCH_CALLGRIND=N` runs `tollgate serve` under valgrind's
//! callgrind instead and prints the instructions it executes per request
//! (pipeline included) over N requests one at a time (default 1,000), for
//! each body, with the functions that take the most inclusively: counts
//! that do not move with the machine's load, for comparing two commits.
//! `TOLLGATE_BENCH_BODIES=small` (or `claude-code`) runs one body's table.
//!
//! The mock (the `tollgate-mock` crate) runs in a process of its own: this
//! benchmark binary started again with `mock-provider` as its argument.
//! Prints figures; asserts nothing about speed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "tg-bench-key";
const PROVIDER_KEY: &str = "sk-bench";
const SMALL_BODY: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
const SMALL_STREAM_BODY: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

/// The argument that makes this binary serve the mock instead.
const MOCK_ROLE: &str = "mock-provider";

#[path = "support/callgrind.rs"]
mod callgrind;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/tansu.rs"]
mod tansu;

use procfs::ProcStats;

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

/// A started process, killed (SIGTERM) and reaped when dropped.
struct Proc {
    child: Child,
    url: String,
    /// From spawn to the line announcing its address.
    announced: Duration,
    spawned: Instant,
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
    let spawned = Instant::now();
    let mut child = cmd
        .args(args)
        .current_dir(dir)
        // `TOLLGATE_BENCH_CHILD_LOG` (a `TOLLGATE_LOG` filter) shows more,
        // e.g. `tollgate::roles=debug` for the start-up phases.
        .env(
            "TOLLGATE_LOG",
            std::env::var("TOLLGATE_BENCH_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    // Read on a thread of its own so that a process that never announces
    // itself fails the bench instead of hanging it.
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    let prefix = prefix.to_owned();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            // Later lines are read (so the process never blocks on a full
            // pipe) and dropped; a second send fails harmlessly.
            if let Some(url) = line.strip_prefix(&prefix) {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    // Under valgrind a start reads the binary's debug info: minutes.
    let deadline = if callgrind_requests().is_some() {
        900
    } else {
        60
    };
    let url = rx
        .recv_timeout(Duration::from_secs(deadline))
        .unwrap_or_else(|_| {
            panic!(
                "{} did not print its address within {deadline} s",
                program.display()
            )
        });
    let announced = spawned.elapsed();
    Proc {
        child,
        url,
        announced,
        spawned,
    }
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

/// Where requests go: the mock directly, or tollgate.
#[derive(Clone)]
struct Target {
    url: String,
    auth: &'static str,
}

/// Sends one request and returns (time to first byte, total time).
async fn one(
    client: &reqwest::Client,
    to: &Target,
    body: &'static str,
    scenario: Option<&str>,
) -> Result<(Duration, Duration), String> {
    let started = Instant::now();
    let mut req = client
        .post(format!("{}/v1/messages", to.url))
        .header("x-api-key", to.auth)
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

/// Latencies of one run, sorted, and how many requests failed.
#[derive(Default)]
struct Sample {
    ttfb: Vec<Duration>,
    total: Vec<Duration>,
    errors: usize,
}

impl Sample {
    fn add(&mut self, r: Result<(Duration, Duration), String>) {
        match r {
            Ok((f, t)) => {
                self.ttfb.push(f);
                self.total.push(t);
            }
            Err(_) => self.errors += 1,
        }
    }

    fn sorted(mut self) -> Sample {
        self.ttfb.sort();
        self.total.sort();
        self
    }
}

/// `n` requests one at a time.
async fn sequential(client: &reqwest::Client, to: &Target, body: &'static str, n: usize) -> Sample {
    let mut s = Sample::default();
    for _ in 0..n {
        s.add(one(client, to, body, None).await);
    }
    s.sorted()
}

/// Offers `rate` requests/s for `secs` seconds regardless of answers
/// (open loop), so queueing inside the gateway shows in the latencies.
async fn open_loop(
    client: &reqwest::Client,
    to: &Target,
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
        let (client, to) = (client.clone(), to.clone());
        handles.push(tokio::spawn(async move {
            one(&client, &to, body, scenario).await
        }));
    }
    let mut s = Sample::default();
    for h in handles {
        s.add(h.await.unwrap_or_else(|e| Err(e.to_string())));
    }
    s.sorted()
}

/// `concurrency` clients sending back to back for `secs` seconds: answers
/// per second, and the latencies seen.
async fn closed_loop(
    client: &reqwest::Client,
    to: &Target,
    body: &'static str,
    concurrency: usize,
    secs: u64,
) -> (f64, Sample) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, to) = (client.clone(), to.clone());
            tokio::spawn(async move {
                let mut s = Sample::default();
                while Instant::now() < deadline {
                    s.add(one(&client, &to, body, None).await);
                }
                s
            })
        })
        .collect();
    let started = Instant::now();
    let mut all = Sample::default();
    for w in workers {
        let s = w.await.unwrap_or_default();
        all.ttfb.extend(s.ttfb);
        all.total.extend(s.total);
        all.errors += s.errors;
    }
    let rps = all.total.len() as f64 / started.elapsed().as_secs_f64();
    (rps, all.sorted())
}

/// Requests per second offered, and for how long, where CPU time per
/// request is measured.
const CPU_RATE: u64 = 500;
const CPU_SECS: u64 = 10;

/// [`CPU_RATE`] requests/s offered to one process for [`CPU_SECS`], and the
/// CPU time it spent meanwhile, whole and per thread name.
struct CpuRun {
    sample: Sample,
    /// CPU seconds of the whole process.
    cpu: f64,
    /// CPU seconds per thread name, largest first.
    threads: Vec<(String, f64)>,
}

impl CpuRun {
    async fn measure(
        client: &reqwest::Client,
        to: &Target,
        body: &'static str,
        pid: u32,
    ) -> CpuRun {
        let threads_before = procfs::cpu_by_thread(pid);
        let cpu0 = ProcStats::of(pid).cpu;
        let sample = open_loop(client, to, body, CPU_RATE, CPU_SECS, None).await;
        let cpu = ProcStats::of(pid).cpu - cpu0;
        let threads = procfs::cpu_spent(&threads_before, &procfs::cpu_by_thread(pid));
        CpuRun {
            sample,
            cpu,
            threads,
        }
    }

    fn requests() -> f64 {
        (CPU_RATE * CPU_SECS) as f64
    }

    /// Milliseconds of CPU per request offered.
    fn per_request_ms(&self) -> f64 {
        self.cpu * 1000.0 / Self::requests()
    }

    /// The per-thread split as "name 0.123" items, ms per request.
    fn per_thread(&self) -> String {
        let items: Vec<String> = self
            .threads
            .iter()
            .map(|(name, t)| format!("{name} {:.3}", t * 1000.0 / Self::requests()))
            .collect();
        items.join(", ")
    }
}

/// One latency row: direct, via tollgate, and the difference.
fn row(label: &str, direct: &[Duration], via: &[Duration]) {
    let (d50, d99) = (percentile(direct, 0.5), percentile(direct, 0.99));
    let (v50, v99) = (percentile(via, 0.5), percentile(via, 0.99));
    println!(
        "  {label:<44} direct p50 {:>7.3} p99 {:>7.3} | via tollgate p50 {:>7.3} p99 {:>7.3} | added p50 {:>+7.3} p99 {:>+7.3} ms",
        ms(d50),
        ms(d99),
        ms(v50),
        ms(v99),
        ms(v50) - ms(d50),
        ms(v99) - ms(d99)
    );
}

/// Claude Code's captured first request body, 78 KB: as sent (streaming)
/// and the same request without `"stream":true`.
fn claude_code_bodies() -> (&'static str, &'static str) {
    let streamed = claude_code_body();
    let plain = streamed.replace(r#","stream":true"#, "");
    (Box::leak(plain.into_boxed_str()), streamed)
}

/// Claude Code's captured first request body (streaming), 78 KB.
fn claude_code_body() -> &'static str {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/claude-code/anthropic_first_request_authtoken.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("sample")).expect("json");
    Box::leak(v["body"].to_string().into_boxed_str())
}

/// The config `tollgate serve` runs with in this benchmark.
fn serve_config(mock_url: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[data]\ndir = \"data\"\n[api]\nadmin_tokens = [\"bench\"]\n[providers.anthropic]\nkind = \"anthropic\"\nbase_url = \"{mock_url}\"\napi_key = \"{PROVIDER_KEY}\"\n[[keys]]\nid = \"bench\"\nhash = \"{}\"\nteam = \"bench\"\nuser = \"bench\"\nprovider = \"anthropic\"\n",
        tollgate::config::hash_key(KEY)
    )
}

/// The config of a lone `tollgate gateway` on the Kafka bus at `brokers`.
fn gateway_config(mock_url: &str, brokers: &str) -> String {
    serve_config(mock_url).replace(
        "[data]\n",
        &format!("[bus]\nkind = \"kafka\"\n[bus.kafka]\nbrokers = \"{brokers}\"\n[data]\n"),
    )
}

/// Everything measured for one request body against one running tollgate.
struct Bench<'a> {
    client: &'a reqwest::Client,
    direct: Target,
    via: Target,
    pid: u32,
}

impl Bench<'_> {
    /// Prints every row of the issue's table for `body` (`stream_body`
    /// is the same request asking for a stream).
    async fn table(&self, label: &str, body: &'static str, stream_body: &'static str) {
        println!("{label}:");
        let (client, d, v) = (self.client, &self.direct, &self.via);
        sequential(client, d, body, 200).await;
        sequential(client, v, body, 200).await;
        // TOLLGATE_BENCH_CPU_ONLY=1: only the CPU row and its per-thread
        // split; TOLLGATE_BENCH_LOAD_ONLY=1: only the load rows (seconds
        // instead of minutes, for profiling).
        let cpu_only = std::env::var_os("TOLLGATE_BENCH_CPU_ONLY").is_some();
        let load_only = std::env::var_os("TOLLGATE_BENCH_LOAD_ONLY").is_some();
        if !cpu_only && !load_only {
            self.latency_rows(body, stream_body).await;
        }
        if !load_only {
            self.cpu_row(body).await;
        }
        if !cpu_only {
            self.load_rows(body).await;
        }
    }

    /// The one-at-a-time and streaming latency rows.
    async fn latency_rows(&self, body: &'static str, stream_body: &'static str) {
        let (client, d, v) = (self.client, &self.direct, &self.via);
        let n = 2000;
        let (direct, via) = (
            sequential(client, d, body, n).await,
            sequential(client, v, body, n).await,
        );
        row("one at a time, total", &direct.total, &via.total);

        let (direct, via) = (
            sequential(client, d, stream_body, n).await,
            sequential(client, v, stream_body, n).await,
        );
        row(
            "streaming, one at a time, first byte",
            &direct.ttfb,
            &via.ttfb,
        );
        let (_, direct) = closed_loop(client, d, stream_body, 64, 5).await;
        let (_, via) = closed_loop(client, v, stream_body, 64, 5).await;
        row(
            "streaming, 64 concurrent, first byte",
            &direct.ttfb,
            &via.ttfb,
        );
    }

    /// CPU time per request at 500 requests/s, and which threads spent it.
    async fn cpu_row(&self, body: &'static str) {
        let (client, d, v) = (self.client, &self.direct, &self.via);
        let cpu0 = ProcStats::of(self.pid).cpu;
        let direct = open_loop(client, d, body, CPU_RATE, CPU_SECS, None).await;
        let idle = ProcStats::of(self.pid).cpu - cpu0;
        let via = CpuRun::measure(client, v, body, self.pid).await;
        row("500 req/s offered, total", &direct.total, &via.sample.total);
        println!(
            "    tollgate CPU per request at 500 req/s: {:.3} ms (whole process; {idle:.3} s while idle beside the direct run); errors direct {} via {}",
            via.per_request_ms(),
            direct.errors,
            via.sample.errors
        );
        println!(
            "    of which, per thread (ms per request): {}",
            via.per_thread()
        );
    }

    /// Offered load with a slow upstream, the most requests/s, and memory.
    async fn load_rows(&self, body: &'static str) {
        let (client, d, v) = (self.client, &self.direct, &self.via);
        let slow = Some("delay:20");
        let direct = open_loop(client, d, body, 1000, 5, slow).await;
        let via = open_loop(client, v, body, 1000, 5, slow).await;
        row(
            "1000 req/s offered, mock takes 20 ms",
            &direct.total,
            &via.total,
        );
        println!("    errors: direct {} via {}", direct.errors, via.errors);

        let (cpu0, started) = (ProcStats::of(self.pid).cpu, Instant::now());
        let (rps, via) = closed_loop(client, v, body, 64, 5).await;
        // Below 100%, the load generator and mock's core was the limit,
        // not tollgate's: the figure is then a floor of its ceiling.
        let busy = (ProcStats::of(self.pid).cpu - cpu0) / started.elapsed().as_secs_f64();
        let (direct_rps, _) = closed_loop(client, d, body, 64, 5).await;
        println!(
            "  most requests/s, 64 concurrent: via tollgate {rps:.0}/s ({} errors; mock alone {direct_rps:.0}/s); tollgate busy {:.0}% of its core meanwhile, {:.1} µs CPU per request",
            via.errors,
            busy * 100.0,
            busy / rps * 1e6
        );
        let now = ProcStats::of(self.pid);
        println!(
            "  tollgate RSS now {}, peak so far {:.1} MiB",
            now.resident(),
            now.peak
        );
    }
}

/// Spawns `program gateway` on the Kafka bus at `brokers` and times it
/// until its first request is answered; prints that, its idle RSS and
/// (optionally) its latency.
async fn gateway_startup(
    client: &reqwest::Client,
    label: &str,
    program: &Path,
    brokers: &str,
    mock_url: &str,
    direct: &Target,
    latency: bool,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("tollgate.toml"),
        gateway_config(mock_url, brokers),
    )
    .expect("config");
    let args = ["gateway", "--config", "tollgate.toml"];
    let prefix = "tollgate gateway listening on ";
    let tg = start("0", program, &args, prefix, dir.path());
    let via = Target {
        url: tg.url.clone(),
        auth: KEY,
    };
    while let Err(e) = one(client, &via, SMALL_BODY, None).await {
        if tg.spawned.elapsed() > Duration::from_secs(30) {
            println!("{label}: `tollgate gateway` did not answer within 30 s: {e}");
            return;
        }
    }
    let first = tg.spawned.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = ProcStats::of(tg.child.id());
    println!(
        "{label}: `tollgate gateway` listening {:.1} ms after spawn, first request answered after {:.1} ms; idle RSS {}",
        ms(tg.announced),
        ms(first),
        idle.resident()
    );
    if latency {
        sequential(client, &via, SMALL_BODY, 200).await;
        let d = sequential(client, direct, SMALL_BODY, 2000).await;
        let v = sequential(client, &via, SMALL_BODY, 2000).await;
        row("small JSON, one at a time, total", &d.total, &v.total);
        // The request path alone: this process has no accountant, sink or
        // embedded log; its events go to the broker.
        let run = CpuRun::measure(client, &via, SMALL_BODY, tg.child.id()).await;
        println!(
            "  CPU per request at 500 req/s, small JSON: {:.3} ms ({} errors); per thread (ms per request): {}",
            run.per_request_ms(),
            run.sample.errors,
            run.per_thread()
        );
        let peak = ProcStats::of(tg.child.id()).peak;
        println!("  peak RSS {peak:.1} MiB");
    }
}

/// The start-up rows: `tollgate gateway` on a tansu broker, first on a
/// fresh broker (it creates the topics and publishes the config's control
/// state), then again as a fleet scales out (topics and state exist), then
/// the gateway-only build when `TOLLGATE_GATEWAY_BIN` names one.
async fn startup_rows(client: &reqwest::Client, tollgate: &Path, mock_url: &str, direct: &Target) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(broker) = tansu::start(dir.path()) else {
        println!(
            "start-up: skipped, tansu is not installed (scripts/install-test-deps.sh); a gateway on Kafka serves once it has read the control topic"
        );
        return;
    };
    let brokers = broker.addr.as_str();
    for label in ["default build, fresh broker", "default build, scale-out"] {
        gateway_startup(client, label, tollgate, brokers, mock_url, direct, false).await;
    }
    match std::env::var_os("TOLLGATE_GATEWAY_BIN") {
        Some(bin) => {
            let bin = PathBuf::from(bin);
            let label = "gateway-only build, scale-out";
            gateway_startup(client, label, &bin, brokers, mock_url, direct, true).await;
        }
        None => println!(
            "gateway-only build: set TOLLGATE_GATEWAY_BIN to a tollgate built with --no-default-features --features gateway"
        ),
    }
}

async fn run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let this = std::env::current_exe().expect("this benchmark's path");
    let prefix = "mock provider listening on ";
    let mock = start("1", &this, &[MOCK_ROLE], prefix, dir.path());
    let config = serve_config(&mock.url);
    std::fs::write(dir.path().join("tollgate.toml"), config).expect("config");
    // Another build's binary (`TOLLGATE_SERVE_BIN`): the A/B comparison
    // of two commits on one machine in one sitting.
    let tollgate = std::env::var_os("TOLLGATE_SERVE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_tollgate")),
        PathBuf::from,
    );
    if let Some(n) = callgrind_requests() {
        callgrind_rows(dir.path(), &tollgate, n).await;
        return;
    }
    let args = ["serve", "--config", "tollgate.toml"];
    let tg = start(
        "0",
        &tollgate,
        &args,
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
    let idle = ProcStats::of(pid);
    println!(
        "tollgate gateway benchmark (tollgate on core 0; mock + load on core 1; taskset: {}); `tollgate serve` idle RSS {}",
        has_taskset(),
        idle.resident()
    );
    let bench = Bench {
        client: &client,
        direct: Target {
            url: mock.url.clone(),
            auth: PROVIDER_KEY,
        },
        via: Target {
            url: tg.url.clone(),
            auth: KEY,
        },
        pid,
    };
    // TOLLGATE_BENCH_STARTUP_ONLY=1 skips the load tables (minutes) for
    // the start-up rows.
    // TOLLGATE_BENCH_BODIES=small or =claude-code runs one table (a heap
    // profile's peak then belongs to that body).
    let bodies = std::env::var("TOLLGATE_BENCH_BODIES").unwrap_or_default();
    let wants = |name: &str| bodies.is_empty() || bodies == name;
    if std::env::var_os("TOLLGATE_BENCH_STARTUP_ONLY").is_none() {
        if wants("small") {
            bench
                .table("small JSON bodies", SMALL_BODY, SMALL_STREAM_BODY)
                .await;
        }
        if wants("claude-code") {
            let (cc_plain, cc) = claude_code_bodies();
            bench
                .table(
                    &format!("Claude Code bodies ({} KB)", cc.len() / 1024),
                    cc_plain,
                    cc,
                )
                .await;
        }
    }
    let end = ProcStats::of(pid);
    println!(
        "`tollgate serve` RSS: idle {}, now {}, peak {:.1} MiB",
        idle.resident(),
        end.resident(),
        end.peak
    );
    drop(tg);
    let direct = bench.direct.clone();
    startup_rows(&client, &tollgate, &mock.url, &direct).await;
}

/// `TOLLGATE_BENCH_CALLGRIND`: how many requests to count under callgrind
/// (none: the timed tables run instead).
fn callgrind_requests() -> Option<usize> {
    let v = std::env::var("TOLLGATE_BENCH_CALLGRIND").ok()?;
    Some(v.parse().unwrap_or(1000))
}

/// `tollgate serve` under callgrind: instructions per request, one at a
/// time, for each body, after a warm-up, the pipeline's work included
/// (the counts are taken after it has drained: the sink writes a file
/// every 2 s by default).
async fn callgrind_rows(dir: &Path, tollgate: &Path, n: usize) {
    if !callgrind::Callgrind::available() {
        println!("valgrind not found: no instruction counts");
        return;
    }
    let cg = callgrind::Callgrind::new(dir);
    let mut args = cg.prefix_args();
    args.push(tollgate.display().to_string());
    args.extend(["serve", "--config", "tollgate.toml"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let prefix = "tollgate gateway listening on ";
    let tg = start("0", Path::new("valgrind"), &args, prefix, dir);
    pin_self("1");
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let via = Target {
        url: tg.url.clone(),
        auth: KEY,
    };
    let pid = tg.child.id();
    let (cc_plain, cc) = claude_code_bodies();
    println!("`tollgate serve` under callgrind, {n} requests one at a time per body:");
    let bodies = [
        ("small JSON", SMALL_BODY),
        ("Claude Code body", cc_plain),
        ("Claude Code body, streamed", cc),
    ];
    for (label, body) in bodies {
        let drain = Duration::from_secs(3);
        sequential(&client, &via, body, 100).await;
        tokio::time::sleep(drain).await;
        cg.zero(pid);
        let sample = sequential(&client, &via, body, n).await;
        tokio::time::sleep(drain).await;
        let Some(dump) = cg.dump(pid) else {
            println!("  {label}: no callgrind dump found");
            continue;
        };
        let total = callgrind::total_instructions(&dump).unwrap_or(0);
        println!(
            "  {label}: {} instructions per request ({} errors); dump {}",
            total / n as u64,
            sample.errors,
            dump.display()
        );
        println!("{}", callgrind::top_inclusive(&dump, 40));
    }
}
