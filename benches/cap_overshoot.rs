//! Cap overshoot: 50 concurrent requests against a 1-cent user budget,
//! final spend ÷ cap — the experiment issue 17 ran against Anthropic's
//! "Claude apps gateway" (2.3–5.8×: it checks before and meters after,
//! reserving nothing), run here against tollgate.
//!
//! Run with `cargo bench --bench cap_overshoot`. Each round starts a fresh
//! `tollgate serve` (embedded bus, every role) on the project's mock
//! provider (`tollgate-mock`, in this process), fires 50 requests at once
//! with one key, waits until the budget state holds every request, and
//! prints spend ÷ cap. A request costs $0.000752 (claude-haiku-4-5, the
//! mock's usage), so 50 admitted would be 3.76× the cap. Prints figures;
//! asserts nothing.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;

const KEY: &str = "tg-bench-key";
const ADMIN: &str = "bench-admin";
const PROVIDER_KEY: &str = "sk-bench";
const CAP: &str = "0.01";
const CONCURRENT: usize = 50;
const ROUNDS: usize = 5;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

/// A `tollgate serve` child, stopped on drop.
struct Serve {
    child: Child,
    url: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Starts tollgate in `dir` with a 1-cent daily budget on user `bench`.
fn start_tollgate(dir: &Path, upstream: &str) -> Serve {
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[data]\ndir = \"data\"\n[api]\nadmin_tokens = [\"{ADMIN}\"]\n\
         [providers.anthropic]\nkind = \"anthropic\"\nbase_url = \"{upstream}\"\napi_key = \"{PROVIDER_KEY}\"\n\
         [[keys]]\nid = \"bench\"\nhash = \"{}\"\nteam = \"bench\"\nuser = \"bench\"\nprovider = \"anthropic\"\n\
         [[budgets]]\nname = \"cap\"\nscope = \"user\"\nsubject = \"bench\"\nperiod = \"daily\"\nlimit_usd = \"{CAP}\"\n",
        tollgate::config::hash_key(KEY)
    );
    std::fs::write(dir.join("tollgate.toml"), config).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config", "tollgate.toml"])
        .current_dir(dir)
        .env("TOLLGATE_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tollgate starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(url) = line.strip_prefix("tollgate gateway listening on ") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("tollgate printed its address");
    Serve { child, url }
}

/// A Messages body whose byte count (1,400) bounds the mock's 1,342 input
/// tokens, as a real body's bounds its tokens.
fn body(max_tokens: u64) -> String {
    let words = "the quick brown fox jumps over the lazy dog ".repeat(40);
    serde_json::json!({
        "model": "claude-haiku-4-5",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": &words[..1400]}],
    })
    .to_string()
}

/// One request; its status (503 while the gateway reads budget state is
/// retried, so every request meets a gateway that knows the state).
async fn one(client: &reqwest::Client, url: &str, body: String) -> u16 {
    loop {
        let status = client
            .post(format!("{url}/v1/messages"))
            .bearer_auth(KEY)
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if status != 503 {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The budget's spend once nothing is reserved any more.
async fn settled_spend(client: &reqwest::Client, url: &str) -> Decimal {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: serde_json::Value = client
            .get(format!("{url}/v1/budgets"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("budgets")
            .json()
            .await
            .expect("json");
        let row = v["data"].as_array().and_then(|d| d.first()).cloned();
        if let Some(row) = row {
            let dec = |k: &str| Decimal::from_str(row[k].as_str().unwrap_or("0")).unwrap();
            if dec("reserved_usd").is_zero() {
                return dec("spent_usd");
            }
        }
        assert!(Instant::now() < deadline, "budget state never settled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One round: a fresh tollgate, 50 requests at once; (admitted, spend).
async fn round(client: &reqwest::Client, upstream: &str) -> (usize, Decimal) {
    let dir = tempfile::tempdir().expect("tempdir");
    let tg = start_tollgate(dir.path(), upstream);
    // Wait until the gateway has read budget state: a request reserving
    // far more than the cap is refused (429) from then on, spending nothing.
    one(client, &tg.url, body(1_000_000)).await;
    let body = body(64);
    let sends = (0..CONCURRENT).map(|_| one(client, &tg.url, body.clone()));
    let statuses = futures::future::join_all(sends).await;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let spend = settled_spend(client, &tg.url).await;
    drop(tg);
    (admitted, spend)
}

async fn run() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let options = tollgate_mock::MockOptions {
        api_key: Some(PROVIDER_KEY.to_owned()),
        ..tollgate_mock::MockOptions::default()
    };
    let mock = tollgate_mock::spawn(listener, options).expect("mock");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENT)
        .build()
        .expect("client");
    let cap = Decimal::from_str(CAP).expect("cap");
    println!(
        "cap overshoot: {CONCURRENT} concurrent requests, ${CAP} user budget, claude-haiku-4-5 ($0.000752 a request), {ROUNDS} rounds"
    );
    let mut ratios = Vec::new();
    for i in 1..=ROUNDS {
        let (admitted, spend) = round(&client, &mock.url()).await;
        let ratio = spend / cap;
        println!(
            "  round {i}: {admitted}/{CONCURRENT} admitted, spend ${spend}, spend ÷ cap = {:.3}",
            ratio.round_dp(3)
        );
        ratios.push(ratio);
    }
    let max = ratios.iter().max().copied().unwrap_or_default();
    let min = ratios.iter().min().copied().unwrap_or_default();
    println!(
        "tollgate: final spend ÷ cap {:.3}–{:.3} (Claude apps gateway, issue 17: 2.3–5.8)",
        min.round_dp(3),
        max.round_dp(3)
    );
}
