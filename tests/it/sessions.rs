//! Claude Code sessions through a real `tollgate serve`: session budgets
//! with both output estimates (`max_tokens` refuses a $5 Opus session
//! early; `observed` admits more and overshoots by no more than the README
//! states), and runaway guards (a loop of identical requests: one alert,
//! then the block, lifted by `POST /v1/sessions/{id}/resume`), and real
//! interactive Claude Code in tmux showing the usage warning and the
//! refusal.

use std::str::FromStr;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use tollgate::config::hash_key;

use crate::support::{ADMIN, KEY, Tollgate, client, start_mock, write_config};

/// The second key of these tests (`key_bob`).
const BOB: &str = "tg-test-key-bob-0123456789";

/// What one mock answer with `output` tokens costs on claude-opus-4-5
/// ($5 in, $25 out, $6.25 5m writes, $10 1h writes, $0.50 reads; mock
/// usage 42 input, 100 5m, 200 1h, 1000 reads), by hand:
/// 42·5 + 100·6.25 + 200·10 + 1000·0.5 = 3335 per million, plus output.
fn opus_cost(output: u64) -> Decimal {
    Decimal::new(3335, 6) + Decimal::from(output) * Decimal::new(25, 6)
}

/// An Opus request as Claude Code sends it: `max_tokens` 64,000, and a
/// body of 2,000 bytes (so its byte count bounds the mock's 1,342 input
/// tokens, as a real body's bounds its real tokens).
fn opus_body() -> String {
    let words = "the quick brown fox jumps over the lazy dog ".repeat(50);
    serde_json::json!({
        "model": "claude-opus-4-5",
        "max_tokens": 64000,
        "messages": [{"role": "user", "content": &words[..2000]}],
    })
    .to_string()
}

/// Config: `key_bob` beside `key_alice`, and `extra`.
fn config_with_bob(dir: &std::path::Path, upstream: &str, extra: &str) -> std::path::PathBuf {
    let bob = format!(
        "\n[[keys]]\nid = \"key_bob\"\nhash = \"{}\"\nworkspace = \"acme\"\nteam = \"eng\"\nuser = \"bob\"\nprovider = \"anthropic\"\n{extra}",
        hash_key(BOB)
    );
    write_config(dir, upstream, &bob)
}

/// One request in `session` with `key`, the mock answering with `output`
/// tokens; retried while the gateway has not read budget state (503).
async fn send(tg: &Tollgate, key: &str, session: &str, output: u64) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client()
            .post(format!("{}/v1/messages", tg.url))
            .bearer_auth(key)
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
            .header("x-claude-code-session-id", session)
            .header("x-mock-scenario", format!("output:{output}"))
            .body(opus_body())
            .send()
            .await
            .unwrap();
        if r.status() != 503 || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `(spent, reserved)` of a ledger per `GET /v1/budgets`, once listed.
async fn ledger(tg: &Tollgate, budget: &str, subject: &str) -> Option<(Decimal, Decimal)> {
    let r = client()
        .get(format!("{}/v1/budgets", tg.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let all: serde_json::Value = r.json().await.unwrap();
    let row = all["data"]
        .as_array()?
        .iter()
        .find(|b| b["budget"] == budget && b["subject"] == subject)?
        .clone();
    let dec = |v: &serde_json::Value| Decimal::from_str(v.as_str().unwrap()).unwrap();
    Some((dec(&row["spent_usd"]), dec(&row["reserved_usd"])))
}

/// Waits until `subject`'s ledger holds every request sent and nothing is
/// reserved on it; returns its spend.
async fn settled(tg: &Tollgate, budget: &str, subject: &str) -> Decimal {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((spent, reserved)) = ledger(tg, budget, subject).await
            && reserved.is_zero()
        {
            return spent;
        }
        assert!(
            Instant::now() < deadline,
            "{budget} {subject} did not settle\n{}",
            tg.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends requests with `output` tokens in `session` until one is refused
/// (at most `most`); returns how many were admitted and the refusal.
async fn until_refused(
    tg: &Tollgate,
    key: &str,
    (budget, subject): (&str, &str),
    session: &str,
    outputs: impl Fn(usize) -> u64,
) -> (usize, serde_json::Value) {
    for i in 0..30 {
        let r = send(tg, key, session, outputs(i)).await;
        if r.status() != 200 {
            assert_eq!(r.status(), 429, "{}", tg.log());
            assert_eq!(r.headers()["x-should-retry"], "false");
            return (i, r.json().await.unwrap());
        }
        settled(tg, budget, subject).await;
    }
    panic!(
        "{session} was never refused: {:?}",
        ledger(tg, budget, subject).await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_five_dollar_opus_session_max_tokens_refuses_early_observed_admits_more_within_its_bound()
{
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let budgets = r#"
[[budgets]]
name = "alice-session"
scope = "session"
subject = "key_alice"
period = "total"
limit_usd = "5"
output_estimate = "max_tokens"

[[budgets]]
name = "bob-session"
scope = "session"
subject = "key_bob"
period = "total"
limit_usd = "5"
output_estimate = "observed"
"#;
    let tg = Tollgate::start_with_config(
        dir.path(),
        config_with_bob(dir.path(), &mock.url(), budgets),
    );
    let limit = Decimal::from(5);
    let per_request = opus_cost(20_000); // $0.503335

    // max_tokens: each request reserves 64,000 output tokens ($1.60):
    // refused once spend passes $3.40, with $1.48 of the cap unspent.
    let (admitted, refusal) =
        until_refused(&tg, KEY, ("alice-session", "key_alice/a-1"), "a-1", |_| {
            20_000
        })
        .await;
    assert_eq!(admitted, 7, "7 × $0.50 + $1.62 reserved ≤ $5 < 8 × …");
    assert_eq!(refusal["error"]["type"], "billing_error");
    let message = refusal["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("alice-session") && message.contains("key_alice/a-1"),
        "{message}"
    );
    let alice_spent = settled(&tg, "alice-session", "key_alice/a-1").await;
    assert_eq!(alice_spent, per_request * Decimal::from(7));
    assert!(limit - alice_spent > Decimal::new(14, 1), "refused early");

    // observed: bob's key produced 20,000-token answers before (20
    // samples, in other sessions), so a request reserves ~$0.50.
    for i in 0..20 {
        let session = format!("warm-{i}");
        assert_eq!(send(&tg, BOB, &session, 20_000).await.status(), 200);
        settled(&tg, "bob-session", &format!("key_bob/{session}")).await;
    }
    // Eight ordinary answers, then one of 60,000 tokens ($1.50) when the
    // estimate says 20,000: the overshoot the README bounds.
    let (admitted, refusal) = until_refused(&tg, BOB, ("bob-session", "key_bob/b-1"), "b-1", |i| {
        if i == 8 { 60_000 } else { 20_000 }
    })
    .await;
    assert_eq!(admitted, 9, "observed admits more: {refusal}");
    assert_eq!(refusal["error"]["type"], "billing_error");
    let bob_spent = settled(&tg, "bob-session", "key_bob/b-1").await;
    assert_eq!(
        bob_spent,
        per_request * Decimal::from(8) + opus_cost(60_000)
    );
    // README: observed overshoots by at most (max_tokens − estimate) ×
    // output price per request in flight at the cap (one here).
    let bound = Decimal::from(64_000 - 20_000) * Decimal::new(25, 6);
    let overshoot = bob_spent - limit;
    assert!(
        overshoot > Decimal::ZERO && overshoot <= bound,
        "overshoot {overshoot} within {bound}"
    );
    assert!(
        alice_spent < bob_spent,
        "observed spends more of the cap before refusing"
    );
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_a_session_are_not_held_by_a_session_budget() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let budgets = "\n[[budgets]]\nname = \"tiny-session\"\nscope = \"session\"\nperiod = \"total\"\nlimit_usd = \"0.0001\"\n";
    let tg =
        Tollgate::start_with_config(dir.path(), write_config(dir.path(), &mock.url(), budgets));
    let r = send(&tg, KEY, "s-1", 10).await;
    assert_eq!(r.status(), 429, "a session is held by its cap");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = tg
            .post("/v1/messages")
            .header("x-mock-scenario", "output:10")
            .body(opus_body())
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", r.text().await.unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tg.stop();
}

/// The alerts a webhook receiver got so far, as JSON.
fn alerts(got: &std::sync::Mutex<Vec<(http::HeaderMap, bytes::Bytes)>>) -> Vec<serde_json::Value> {
    got.lock()
        .unwrap()
        .iter()
        .map(|(_, body)| serde_json::from_slice(body).unwrap())
        .collect()
}

/// Waits until the receiver holds an alert about `session`.
async fn alert_for(
    tg: &Tollgate,
    got: &std::sync::Mutex<Vec<(http::HeaderMap, bytes::Bytes)>>,
    session: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !alerts(got).iter().any(|a| a["guard"]["session"] == session) {
        assert!(
            Instant::now() < deadline,
            "no alert for {session}\n{}",
            tg.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `POST /v1/sessions/{session}/resume` with `token`.
async fn resume(tg: &Tollgate, session: &str, token: &str) -> reqwest::Response {
    client()
        .post(format!("{}/v1/sessions/{session}/resume", tg.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loop_of_identical_requests_alerts_once_is_blocked_and_an_admin_resumes_it() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    crate::budgets::start_receiver(port, got.clone()).await;
    let extra = format!(
        "\n[[webhooks]]\nurl = \"http://127.0.0.1:{port}/hook\"\n\n[[guards]]\nname = \"loop\"\nkind = \"repeat\"\nsame_body = 3\nblock = true\n"
    );
    let tg = Tollgate::start_with_config(dir.path(), write_config(dir.path(), &mock.url(), &extra));

    // The loop: identical bodies until the gateway refuses the session.
    let mut admitted = 0;
    let refusal = loop {
        let r = send(&tg, KEY, "loop-1", 10).await;
        if r.status() != 200 {
            break r;
        }
        admitted += 1;
        assert!(admitted < 200, "never blocked\n{}", tg.log());
    };
    assert!(admitted >= 3, "the third identical body trips it");
    assert_eq!(refusal.status(), 429);
    assert_eq!(refusal.headers()["x-should-retry"], "false");
    let body: serde_json::Value = refusal.json().await.unwrap();
    assert_eq!(body["error"]["type"], "billing_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("runaway guard loop") && message.contains("/v1/sessions/loop-1/resume"),
        "{message}"
    );
    alert_for(&tg, &got, "loop-1").await;
    let upstream_before = mock.received().len();
    assert_eq!(send(&tg, KEY, "loop-1", 10).await.status(), 429);
    assert_eq!(mock.received().len(), upstream_before, "refused: not sent");
    assert_eq!(
        send(&tg, KEY, "other", 10).await.status(),
        200,
        "only that session"
    );

    // Only an admin resumes; a session that is not blocked is a 404.
    assert_eq!(resume(&tg, "loop-1", "not-a-token").await.status(), 401);
    assert_eq!(resume(&tg, "never-blocked", ADMIN).await.status(), 404);
    let r = resume(&tg, "loop-1", ADMIN).await;
    assert_eq!(r.status(), 200);
    let lifted: serde_json::Value = r.json().await.unwrap();
    assert_eq!(lifted["resumed"][0]["guard"], "loop");
    let deadline = Instant::now() + Duration::from_secs(30);
    while send(&tg, KEY, "loop-1", 10).await.status() != 200 {
        assert!(Instant::now() < deadline, "resume not seen\n{}", tg.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same run goes on after the resume: a person allowed it.
    for _ in 0..3 {
        assert_eq!(send(&tg, KEY, "loop-1", 10).await.status(), 200);
    }

    // Another session's loop: its alert comes after any further one of
    // loop-1 would have (alerts are delivered in order).
    for _ in 0..3 {
        assert_eq!(send(&tg, KEY, "loop-2", 10).await.status(), 200);
    }
    alert_for(&tg, &got, "loop-2").await;
    let all = alerts(&got);
    let about_1: Vec<&serde_json::Value> = all
        .iter()
        .filter(|a| a["guard"]["session"] == "loop-1")
        .collect();
    assert_eq!(about_1.len(), 1, "one alert for the loop: {all:?}");
    assert_eq!(about_1[0]["type"], "guard_alert");
    assert_eq!(about_1[0]["budget"], "loop");
    assert_eq!(about_1[0]["guard"]["blocked"], true);
    tg.stop();
}

/// Real interactive Claude Code in a tmux pane of its own tmux server
/// (killed on drop), read with `capture-pane`.
struct Pane {
    socket: String,
    home: tempfile::TempDir,
}

impl Pane {
    /// Starts `claude` (the newest pinned version) in gateway mode against
    /// `base_url`, model `model`, with onboarding and the folder trust
    /// dialog already answered in a fresh HOME.
    fn start(base_url: &str, model: &str) -> Pane {
        let home = tempfile::tempdir().unwrap();
        let work = home.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let state = serde_json::json!({
            "hasCompletedOnboarding": true,
            "theme": "dark",
            "projects": { work.to_str().unwrap(): { "hasTrustDialogAccepted": true } },
        });
        std::fs::write(home.path().join(".claude.json"), state.to_string()).unwrap();
        let socket = format!("tollgate-test-{}", uuid::Uuid::new_v4().simple());
        let env = [
            format!("PATH={}", std::env::var("PATH").unwrap_or_default()),
            format!("HOME={}", home.path().display()),
            "TERM=xterm-256color".into(),
            format!("ANTHROPIC_BASE_URL={base_url}"),
            format!("ANTHROPIC_AUTH_TOKEN={KEY}"),
            "CLAUDE_CODE_USE_GATEWAY=1".into(),
            format!("ANTHROPIC_MODEL={model}"),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1".into(),
            "DISABLE_TELEMETRY=1".into(),
        ];
        let status = std::process::Command::new("tmux")
            .args([
                "-L",
                &socket,
                "new-session",
                "-d",
                "-s",
                "cc",
                "-x",
                "160",
                "-y",
                "50",
            ])
            .arg("-c")
            .arg(&work)
            .arg("env")
            .arg("-i")
            .args(&env)
            .arg(crate::claude_code::claude_bin())
            .status()
            .expect("tmux runs");
        assert!(status.success(), "tmux new-session failed");
        Pane { socket, home }
    }

    /// What the pane shows now.
    fn screen(&self) -> String {
        let out = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-J", "-t", "cc"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the pane shows `text`; returns the screen.
    async fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the pane never showed {text:?}:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Closes the dialog whose screen shows `marker` with Escape, pressing
    /// it again while the dialog stays up: a key that arrives while the
    /// dialog is still drawing can be lost, and text typed next would go
    /// into the dialog instead of the prompt.
    async fn dismiss(&self, marker: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.key("Escape");
            let pressed = Instant::now();
            while pressed.elapsed() < Duration::from_secs(2) {
                if !self.screen().contains(marker) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(
                Instant::now() < deadline,
                "the dialog never closed:\n{}",
                self.screen()
            );
        }
    }

    /// Types `text` and Enter.
    fn send(&self, text: &str) {
        for keys in [text, "Enter"] {
            self.key(keys);
        }
    }

    /// Presses one key (or types one string) in the pane.
    fn key(&self, keys: &str) {
        let status = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "cc", keys])
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
        let _ = &self.home;
    }
}

/// Spends `output` Sonnet output tokens on alice's key (the mock answers
/// with that many; `max_tokens` 64 keeps the reservation small).
async fn spend_sonnet_output(tg: &Tollgate, output: u64) {
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = tg
            .post("/v1/messages")
            .header("x-mock-scenario", format!("output:{output}"))
            .body(body)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            return;
        }
        assert!(
            r.status() == 503 && Instant::now() < deadline,
            "{}: {}",
            r.status(),
            tg.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn interactive_claude_code_shows_the_usage_warning_past_75_percent_then_the_refusal() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let budget = "\n[[budgets]]\nname = \"alice-daily\"\nscope = \"user\"\nsubject = \"alice\"\nperiod = \"daily\"\nlimit_usd = \"20\"\n";
    let tg = Tollgate::start_with_config(dir.path(), write_config(dir.path(), &mock.url(), budget));
    // $16.20 of $20 spent (81 %): 1,080,000 output tokens at $15/MTok.
    spend_sonnet_output(&tg, 1_080_000).await;
    let spent = settled(&tg, "alice-daily", "alice").await;
    assert!(
        spent > Decimal::new(1620, 2) && spent < Decimal::new(1625, 2),
        "{spent}"
    );

    let pane = Pane::start(&tg.url, "claude-sonnet-4-5");
    pane.wait_for("Claude Code v").await;
    pane.send("Say hello.");
    let screen = pane.wait_for("Hello from the mock provider").await;
    let warning = pane.wait_for("of your usage credits").await;
    assert!(warning.contains("81%"), "{warning}\n(before: {screen})");
    // `/usage` draws the budget as its spend limit (GET /api/oauth/usage).
    pane.send("/usage");
    let usage = pane.wait_for("Spend limit").await;
    assert!(usage.contains("Resets"), "{usage}");
    pane.dismiss("Esc to close").await;

    // Spent past what the next request's reservation leaves room for: it
    // is refused, and the pane shows the budget, its spend and the reset.
    settled(&tg, "alice-daily", "alice").await;
    spend_sonnet_output(&tg, 230_000).await;
    settled(&tg, "alice-daily", "alice").await;
    pane.send("Say hello again.");
    let refused = pane.wait_for("would be exceeded").await;
    assert!(
        refused.contains("tollgate: budget alice-daily (alice)")
            && refused.contains("spent of $20")
            && refused.contains("resets "),
        "{refused}"
    );
    drop(pane);
    tg.stop();
}
