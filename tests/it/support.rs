//! Starting and driving a real `tollgate serve` process in tests.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tollgate::config::hash_key;
use tollgate_mock::{MockHandle, MockOptions};

/// The tollgate key every test config holds.
pub const KEY: &str = "tg-test-key-0123456789";
/// The query API's admin token in test configs.
pub const ADMIN: &str = "admin-test-token";
/// The provider credential tollgate holds for the mock.
pub const PROVIDER_KEY: &str = "sk-ant-provider-test";

/// Starts a recording mock provider that requires `PROVIDER_KEY`.
pub async fn start_mock() -> MockHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    tollgate_mock::spawn(
        listener,
        MockOptions {
            api_key: Some(PROVIDER_KEY.into()),
            record: true,
            ..MockOptions::default()
        },
    )
    .unwrap()
}

/// A `tollgate serve` child process with its own data directory.
pub struct Tollgate {
    pub child: Child,
    pub url: String,
    pub dir: PathBuf,
    pub config: PathBuf,
}

/// The test config: one key for team `eng`, user `alice`; fast flushes.
pub fn write_config(dir: &Path, upstream: &str, extra: &str) -> PathBuf {
    let config = dir.join("tollgate.toml");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace_secs = 10
max_body_bytes = 1048576

[data]
dir = "data"

[sink]
flush_rows = 1000
flush_interval_ms = 200

[api]
admin_tokens = ["{ADMIN}"]

[providers.anthropic]
kind = "anthropic"
base_url = "{upstream}"
api_key = "{PROVIDER_KEY}"

[[keys]]
id = "key_alice"
hash = "{hash}"
workspace = "acme"
team = "eng"
user = "alice"
provider = "anthropic"
{extra}
"#,
        hash = hash_key(KEY)
    );
    std::fs::write(&config, text).unwrap();
    config
}

impl Tollgate {
    /// Writes a config for `upstream` and starts tollgate on it.
    pub fn start(dir: &Path, upstream: &str) -> Tollgate {
        let config = write_config(dir, upstream, "");
        Tollgate::start_with_config(dir, config)
    }

    /// Starts tollgate on an existing config; returns once it listens.
    pub fn start_with_config(dir: &Path, config: PathBuf) -> Tollgate {
        Tollgate::start_role(dir, config, "serve")
    }

    /// Starts one `tollgate <command>` (serve, gateway, accountant, sink,
    /// api) on `config`, logging to `dir/tollgate.log`; returns once it
    /// listens, with `url` the first address it announced.
    pub fn start_role(dir: &Path, config: PathBuf, command: &str) -> Tollgate {
        Tollgate::start_role_env(dir, config, command, &[])
    }

    /// [`Tollgate::start_role`] with extra environment (e.g. `TOLLGATE_LOG`).
    pub fn start_role_env(
        dir: &Path,
        config: PathBuf,
        command: &str,
        env: &[(&str, &str)],
    ) -> Tollgate {
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("tollgate.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args([command, "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(log)
            .envs(env.iter().copied())
            .spawn()
            .expect("tollgate binary starts");
        let stdout = child.stdout.take().unwrap();
        // What it prints is kept too (`tollgate.stdout`), for tests that
        // search everything a process wrote.
        let mut printed = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("tollgate.stdout"))
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(printed, "{line}");
                if let Some((_, url)) = line.split_once(" listening on ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "tollgate {command} did not report its address; log:\n{}",
                    std::fs::read_to_string(dir.join("tollgate.log")).unwrap_or_default()
                )
            });
        Tollgate {
            child,
            url,
            dir: dir.to_owned(),
            config,
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = wait_exit(&mut self.child, Duration::from_secs(30));
        assert!(
            status.success(),
            "tollgate exited with {status}; log:\n{}",
            self.log()
        );
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// What the process logged to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tollgate.log")).unwrap_or_default()
    }

    /// A client request builder with the tollgate key as Bearer.
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        client()
            .post(format!("{}{path}", self.url))
            .bearer_auth(KEY)
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
    }

    /// `GET /v1/logs` with the admin token.
    pub async fn logs(&self, query: &str) -> serde_json::Value {
        let r = client()
            .get(format!("{}/v1/logs?{query}", self.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "logs query {query} failed");
        r.json().await.unwrap()
    }

    /// Every event of a trace, following the cursor across pages.
    pub async fn all_of_trace(&self, trace_id: &str) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = format!("trace_id={trace_id}&limit=1000");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let page = self.logs(&q).await;
            out.extend(page["data"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
                _ => return out,
            }
        }
    }

    /// Waits until the trace has `n` events in the lake and returns them
    /// (more than `n` fails at once: a duplicate never waits out).
    pub async fn wait_for_trace(&self, trace_id: &str, n: usize) -> Vec<serde_json::Value> {
        let what = format!("events of trace {trace_id}");
        let data = poll_until(&what, Duration::from_secs(30), || async {
            let data = self.trace_events(trace_id).await;
            match data.len() >= n {
                true => Ok(data),
                false => Err(WithLog(format!("{} of {n}", data.len()), vec![self])),
            }
        })
        .await;
        assert_eq!(
            data.len(),
            n,
            "events of trace {trace_id}; log:\n{}",
            self.log()
        );
        data
    }

    /// Waits until the trace has at least `n` events and returns them all.
    pub async fn wait_for_trace_at_least(
        &self,
        trace_id: &str,
        n: usize,
    ) -> Vec<serde_json::Value> {
        let what = format!("trace {trace_id}");
        poll_until(&what, Duration::from_secs(30), || async {
            let data = self.trace_events(trace_id).await;
            match data.len() >= n {
                true => Ok(data),
                false => Err(WithLog(
                    format!("has {} events, wanted {n}", data.len()),
                    vec![self],
                )),
            }
        })
        .await
    }

    /// The lake's events of one trace (up to 1,000).
    async fn trace_events(&self, trace_id: &str) -> Vec<serde_json::Value> {
        let page = self.logs(&format!("trace_id={trace_id}&limit=1000")).await;
        page["data"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `metric(name)` is at least `value`, failing after `limit`
    /// with the process's log: how tests wait on a stage's progress.
    pub async fn wait_for_metric(&self, name: &str, value: f64, limit: Duration) -> f64 {
        poll_until(name, limit, || async {
            let now = self.metric(name).await;
            match now >= value {
                true => Ok(now),
                false => Err(WithLog(
                    format!("is {now}, wanted at least {value}"),
                    vec![self],
                )),
            }
        })
        .await
    }

    /// Waits until the process has consumed everything on its topics
    /// (every consumer group's lag is 0) and `delivered` alerts went out:
    /// then nothing more is on its way, and a test can check there were no
    /// duplicates without waiting a fixed time.
    pub async fn wait_until_drained(&self, delivered: usize, limit: Duration) {
        poll_until("not drained", limit, || async {
            let lag = self.metric("tollgate_bus_consumer_lag_records").await;
            let out = self.metric("tollgate_alert_deliveries_total").await;
            match lag == 0.0 && out >= delivered as f64 {
                true => Ok(()),
                false => Err(WithLog(
                    format!("lag {lag}, {out} alerts delivered of {delivered}"),
                    vec![self],
                )),
            }
        })
        .await
    }

    /// Waits until every event the gateway answered is in the lake: the
    /// hand-off queue is empty and the sink wrote as many rows as the
    /// events topic received.
    pub async fn wait_until_landed(&self, limit: Duration) {
        poll_until("not landed", limit, || async {
            let queued = self.metric("tollgate_events_queue_depth").await;
            let appended = self
                .metric(r#"tollgate_bus_appended_total{topic="tollgate.events.v1"}"#)
                .await;
            let rows = self.metric("tollgate_sink_rows_total").await;
            match queued == 0.0 && rows >= appended {
                true => Ok(()),
                false => Err(WithLog(
                    format!("{queued} queued, {rows} rows of {appended} events"),
                    vec![self],
                )),
            }
        })
        .await
    }

    /// A value of a metric line on `/metrics` (sum over label sets).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = client()
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Tollgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// First and longest pause between two polls of [`poll_until`]: short at
/// first, so a fast condition is seen at once, then longer, so a slow one
/// does not load the processes it polls.
const FIRST_POLL: Duration = Duration::from_millis(20);
const LONGEST_POLL: Duration = Duration::from_millis(250);

/// Polls `condition` until it yields `Ok`, returning its value; after
/// `limit`, panics with `what` and the last observation (the `Err`). The
/// one deadline loop of the integration tests.
pub async fn poll_until<T, O, F, Fut>(what: &str, limit: Duration, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, O>>,
    O: std::fmt::Display,
{
    let deadline = Instant::now() + limit;
    let mut pause = FIRST_POLL;
    loop {
        match condition().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: {last} (after {limit:?})")
            }
            Err(_) => tokio::time::sleep(pause).await,
        }
        pause = (pause * 2).min(LONGEST_POLL);
    }
}

/// An observation followed by the logs of the processes involved, read
/// only when shown (so polling does not read the logs each time).
pub struct WithLog<'a>(pub String, pub Vec<&'a Tollgate>);

impl std::fmt::Display for WithLog<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let logs: Vec<String> = self.1.iter().map(|t| t.log()).collect();
        let label = if logs.len() == 1 { "log" } else { "logs" };
        write!(f, "{}; {label}:\n{}", self.0, logs.join("\n---\n"))
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tollgate did not exit within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP client (no pooling surprises between tests).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// One captured Claude Code request from `tests/data/claude-code` (copied from the wire captures).
pub struct Sample {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Loads a sample by file name.
pub fn sample(name: &str) -> Sample {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/claude-code")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read sample {}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let headers = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_owned(),
                h[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let body = match &v["body"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    Sample {
        method: v["method"].as_str().unwrap_or("POST").to_owned(),
        path: v["path"].as_str().unwrap().to_owned(),
        headers,
        body,
    }
}

impl Sample {
    /// Replays the sample at `base` with the captured headers, replacing
    /// credentials with `KEY` and the framing headers reqwest sets itself.
    pub fn replay(&self, base: &str, extra: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(self.method.as_bytes()).unwrap();
        let mut r = client().request(method, format!("{base}{}", self.path));
        for (k, v) in &self.headers {
            let lower = k.to_ascii_lowercase();
            if [
                "host",
                "content-length",
                "connection",
                "authorization",
                "x-api-key",
                "x-tollgate-api-key",
            ]
            .contains(&lower.as_str())
            {
                continue;
            }
            r = r.header(k.as_str(), v.as_str());
        }
        for (k, v) in extra {
            r = r.header(*k, *v);
        }
        r.bearer_auth(KEY).body(self.body.clone())
    }
}

/// A loopback port nobody listens on now, for a server a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (blocking) until something accepts connections at `addr`; after
/// `limit`, panics naming `what` with the server's log at `log`. Servers
/// written in Node or Python take seconds to start on a loaded machine.
pub fn wait_for_listener(what: &str, addr: &str, log: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {addr} within {limit:?}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `tollgate reprice` over today with `config` and one Anthropic
/// price table holding `entry` (a `[[price]]` body), as an operator would
/// after a price change; returns what it printed. Panics if it fails.
pub fn reprice_today(config: &Path, entry: &str) -> String {
    let prices = tempfile::tempdir().unwrap();
    let table = format!("provider = \"anthropic\"\n[[price]]\n{entry}");
    std::fs::write(prices.path().join("anthropic.toml"), table).unwrap();
    let today = chrono::Utc::now().date_naive().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["reprice", "--from", &today, "--to", &today, "--config"])
        .arg(config)
        .arg("--pricing-dir")
        .arg(prices.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tollgate reprice: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
