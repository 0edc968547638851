//! Budgets, rate limits and alerts through a real `tollgate serve`: the
//! overshoot bound under 200 concurrent requests, 429 with retry-after,
//! alerts delivered once across a notifier restart and a receiver outage,
//! `tollgate replay` rebuilding the live ledgers, real Claude Code
//! seeing a refusal once instead of retrying, and Claude Code's
//! `claude-opus-4-8` priced and held by a USD budget.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;

use crate::claude_code::run_claude_output;
use crate::support::{ADMIN, KEY, Tollgate, client, start_mock, write_config};

/// What one mock answer costs on claude-sonnet-4-5 (mock usage: 42 input,
/// 17 output, 100 5m writes, 200 1h writes, 1000 reads), by hand:
/// 42·3 + 17·15 + 100·3.75 + 200·6 + 1000·0.30 = 2256 per million → $0.002256.
const COST_PER_REQUEST: &str = "0.002256";

pub fn budget(name: &str, limit: &str) -> String {
    format!(
        "\n[[budgets]]\nname = \"{name}\"\nscope = \"team\"\nsubject = \"eng\"\nperiod = \"daily\"\nlimit_usd = \"{limit}\"\n"
    )
}

/// A Messages body of about `bytes` bytes of prose.
pub fn body_of(bytes: usize) -> String {
    let words = "the quick brown fox jumps over the lazy dog ".repeat(bytes / 44 + 1);
    serde_json::json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": &words[..bytes]}],
    })
    .to_string()
}

async fn budgets(tg: &Tollgate) -> Vec<serde_json::Value> {
    let r = client()
        .get(format!("{}/v1/budgets", tg.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<serde_json::Value>().await.unwrap()["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn dec(v: &serde_json::Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap()).unwrap()
}

/// Posts `body`; while the gateway has not read budget state yet (503,
/// fail closed just after start) it waits and posts again.
pub async fn post_once_admitting(tg: &Tollgate, body: &str) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = tg
            .post("/v1/messages")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status != 503 || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until nothing is reserved any more and returns the spend of
/// `budget` (the state has caught up with every request).
pub async fn settled_spend(tg: &Tollgate, budget: &str) -> Decimal {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = budgets(tg).await;
        let row = all.iter().find(|b| b["budget"] == budget);
        if let Some(row) = row
            && dec(&row["reserved_usd"]).is_zero()
        {
            return dec(&row["spent_usd"]);
        }
        assert!(
            Instant::now() < deadline,
            "budget state did not settle: {all:?}\n{}",
            tg.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_requests_overshoot_a_budget_by_at_most_one_reservation() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let limit = Decimal::from_str("0.05").unwrap();
    let config = write_config(dir.path(), &mock.url(), &budget("eng-daily", "0.05"));
    let tg = Tollgate::start_with_config(dir.path(), config);
    let body = body_of(2000);
    // The largest reservation a request can hold: every body byte as a
    // token at the 1-hour cache-write rate ($6/M) + 64 output at $15/M.
    let one_reservation = Decimal::from(body.len() as u64) * Decimal::from_str("0.000006").unwrap()
        + Decimal::from_str("0.00096").unwrap();

    let sends = (0..200).map(|_| {
        let r = tg.post("/v1/messages").body(body.clone());
        async move { r.send().await.unwrap() }
    });
    let answers = futures::future::join_all(sends).await;
    let mut admitted = 0;
    let mut refused = 0;
    for a in answers {
        match a.status().as_u16() {
            200 => admitted += 1,
            429 => {
                refused += 1;
                assert_eq!(a.headers()["x-should-retry"], "false");
                let e: serde_json::Value = a.json().await.unwrap();
                assert_eq!(e["type"], "error");
                let msg = e["error"]["message"].as_str().unwrap();
                assert!(
                    msg.contains("eng-daily") && msg.contains("of $0.05") && msg.contains("resets"),
                    "{msg}"
                );
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        admitted > 0 && refused > 0,
        "admitted {admitted}, refused {refused}"
    );
    // Then one at a time until the budget refuses: it fills up.
    for _ in 0..100 {
        let r = tg
            .post("/v1/messages")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            break;
        }
        assert_eq!(r.status(), 200);
        settled_spend(&tg, "eng-daily").await;
    }
    let spent = settled_spend(&tg, "eng-daily").await;
    assert!(
        spent <= limit + one_reservation,
        "spent {spent} overshoots {limit} by more than one reservation ({one_reservation})"
    );
    let per = Decimal::from_str(COST_PER_REQUEST).unwrap();
    assert!(
        spent >= limit - one_reservation - per,
        "the budget was used up, not refused early: spent {spent}"
    );
    assert_eq!(
        spent % per,
        Decimal::ZERO,
        "spend is a whole number of requests: {spent}"
    );
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_requests_get_429_rate_limit_error_with_retry_after() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "\n[[rate_limits]]\nscope = \"key\"\nrequests_per_minute = 2\n";
    let tg = Tollgate::start_with_config(dir.path(), write_config(dir.path(), &mock.url(), extra));
    let body = body_of(100);
    for _ in 0..2 {
        assert_eq!(
            tg.post("/v1/messages")
                .body(body.clone())
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let r = tg
        .post("/v1/messages")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=60).contains(&retry_after),
        "retry-after {retry_after} s"
    );
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "rate_limit_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 requests per minute"),
        "{e}"
    );
    assert_eq!(
        mock.received().len(),
        2,
        "the refused request never went upstream"
    );
    tg.stop();
}

/// A webhook receiver on a fixed port that can be started late.
struct Receiver {
    got: Arc<Mutex<Vec<(http::HeaderMap, bytes::Bytes)>>>,
}

pub async fn start_receiver(port: u16, got: Arc<Mutex<Vec<(http::HeaderMap, bytes::Bytes)>>>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: http::HeaderMap, body: bytes::Bytes| {
            let got = got.clone();
            async move {
                got.lock().unwrap().push((headers, body));
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

#[tokio::test(flavor = "multi_thread")]
async fn threshold_alerts_reach_the_webhook_once_across_a_notifier_restart_and_a_receiver_outage() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let extra = format!(
        "{}\n[[webhooks]]\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret = \"s3cret\"\n",
        budget("eng-alerts", "0.01")
    );
    let config = write_config(dir.path(), &mock.url(), &extra);
    let tg = Tollgate::start_with_config(dir.path(), config.clone());
    let body = body_of(100);
    // 3 × $0.002256 = 67.7% of $0.01: the 50% threshold.
    for _ in 0..3 {
        assert_eq!(post_once_admitting(&tg, &body).await, 200);
        settled_spend(&tg, "eng-alerts").await;
    }
    // The receiver is down: the notifier retries; then it restarts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !tg.log().contains("alert delivery failed") {
        assert!(Instant::now() < deadline, "{}", tg.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tg.stop();
    let tg = Tollgate::start_with_config(dir.path(), config);
    let receiver = Receiver {
        got: Arc::new(Mutex::new(Vec::new())),
    };
    start_receiver(port, receiver.got.clone()).await;

    // 4 × $0.002256 = 90.2%: the 80% threshold.
    assert_eq!(post_once_admitting(&tg, &body).await, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.got.lock().unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "alerts not delivered: {}",
            tg.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Everything consumed and delivered: a duplicate would be here by now.
    tg.wait_until_drained(2, Duration::from_secs(30)).await;
    let got = receiver.got.lock().unwrap().clone();
    let mut thresholds = Vec::new();
    for (headers, body) in &got {
        let timestamp = headers["x-tollgate-timestamp"].to_str().unwrap();
        let expected =
            tollgate::accounting::notify::signature("s3cret", timestamp.parse().unwrap(), body);
        assert_eq!(
            headers["x-tollgate-signature"],
            expected.as_str(),
            "HMAC-SHA256 of timestamp.body"
        );
        let alert: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(alert["type"], "budget_alert");
        assert_eq!(alert["budget"], "eng-alerts");
        assert_eq!(
            headers["x-tollgate-alert-id"],
            alert["alert_id"].as_str().unwrap()
        );
        assert!(
            alert["message"].as_str().unwrap().contains("eng-alerts"),
            "{alert}"
        );
        thresholds.push(alert["threshold"].as_u64().unwrap());
    }
    thresholds.sort_unstable();
    assert_eq!(thresholds, vec![50, 80], "each threshold exactly once");
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_rebuilds_the_ledgers_the_accountant_published() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}\n[[budgets]]\nname = \"per-user-tokens\"\nscope = \"user\"\nperiod = \"monthly\"\ntimezone = \"America/New_York\"\nlimit_tokens = 100000000\n",
        budget("eng-big", "1000")
    );
    let config = write_config(dir.path(), &mock.url(), &extra);
    let tg = Tollgate::start_with_config(dir.path(), config.clone());
    for i in 0..25 {
        let body = body_of(100 + i * 10);
        assert_eq!(
            tg.post("/v1/messages")
                .body(body)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    settled_spend(&tg, "eng-big").await;
    let live = budgets(&tg).await;
    tg.stop();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["replay", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let key = |v: &serde_json::Value| {
        (
            v["budget"].as_str().unwrap().to_owned(),
            v["subject"].as_str().unwrap().to_owned(),
        )
    };
    let mut a: Vec<_> = live
        .iter()
        .map(|v| {
            (
                key(v),
                dec(&v["spent_usd"]),
                v["spent_tokens"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut b: Vec<_> = replayed
        .iter()
        .map(|v| {
            (
                key(v),
                dec(&v["spent_usd"]),
                v["spent_tokens"].as_u64().unwrap(),
            )
        })
        .collect();
    a.sort();
    b.sort();
    assert_eq!(a.len(), 2, "{live:?}");
    assert_eq!(a, b, "replay gives the same numbers");
    assert_eq!(
        a[0].1,
        Decimal::from_str(COST_PER_REQUEST).unwrap() * Decimal::from(25)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_shows_a_budget_refusal_once_instead_of_retrying() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start_with_config(
        dir.path(),
        write_config(dir.path(), &mock.url(), &budget("eng-spent", "0.000001")),
    );
    let headers = "x-tollgate-trace-id: trace-budget-refusal";
    // A pinned model keeps the per-request cost known. Claude Code's own
    // retry default (10) stays.
    let out = run_claude_output(
        &tg.url,
        ("ANTHROPIC_AUTH_TOKEN", KEY),
        headers,
        &[("ANTHROPIC_MODEL", "claude-sonnet-4-5")],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("eng-spent") && stdout.contains("spent of") && stdout.contains("resets"),
        "Claude Code shows the budget, its spend and its reset: {stdout}"
    );
    tg.wait_for_trace_at_least("trace-budget-refusal", 1).await;
    // Claude Code has exited, so any retry it made was answered: wait until
    // every answered request's event is in the lake.
    tg.wait_until_landed(Duration::from_secs(30)).await;
    let events = tg.all_of_trace("trace-budget-refusal").await;
    let refusals: Vec<_> = events
        .iter()
        .filter(|e| e["error_type"] == "budget_exceeded")
        .collect();
    assert_eq!(refusals.len(), events.len(), "{events:?}");
    assert_eq!(refusals.len(), 1, "one request, no retries: {events:?}");
    assert!(mock.received().is_empty(), "nothing went upstream");
    tg.stop();
}

/// What one mock answer costs on claude-opus-4-8 (same mock usage), by
/// hand: 42·5 + 17·25 + 100·6.25 + 200·10 + 1000·0.50 = 3760 per million.
const OPUS_4_8_COST: &str = "0.00376";

/// A request body shaped like Claude Code's: system blocks with cache
/// control, a tool, metadata, streaming, on `claude-opus-4-8`.
fn claude_code_opus_body() -> String {
    serde_json::json!({
        "model": "claude-opus-4-8",
        "max_tokens": 1000,
        "stream": true,
        "metadata": {"user_id": "user_abc_account__session_1"},
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
            {"type": "text", "text": "Use the tools to help the user with software engineering tasks.",
             "cache_control": {"type": "ephemeral", "ttl": "1h"}}
        ],
        "tools": [{"name": "Read", "description": "Reads a file", "input_schema":
            {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "fix the failing test",
            "cache_control": {"type": "ephemeral"}}]}],
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_default_opus_4_8_is_priced_counted_and_refused_when_spent() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let body = claude_code_opus_body();
    // The worst case admission reserves: every body byte at the 1-hour
    // write rate ($10/M) plus max_tokens at $25/M; room for it plus about
    // 2.5 requests, so the budget runs out after a few.
    let worst = Decimal::from(body.len()) * Decimal::from(10) / Decimal::from(1_000_000)
        + Decimal::from(1000 * 25) / Decimal::from(1_000_000);
    let per = Decimal::from_str(OPUS_4_8_COST).unwrap();
    let limit = worst + per * Decimal::from_str("2.5").unwrap();
    let tg = Tollgate::start_with_config(
        dir.path(),
        write_config(
            dir.path(),
            &mock.url(),
            &budget("eng-opus", &limit.to_string()),
        ),
    );
    assert_eq!(post_once_admitting(&tg, &body).await, 200);
    let mut admitted = 1u32;
    let mut refusal = None;
    for _ in 0..50 {
        settled_spend(&tg, "eng-opus").await;
        let r = tg
            .post("/v1/messages")
            .header("x-tollgate-trace-id", "trace-opus-4-8")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            refusal = Some((r.status().as_u16(), r.text().await.unwrap()));
            break;
        }
        r.bytes().await.unwrap();
        admitted += 1;
    }
    let (status, text) = refusal.expect("the USD budget never refused claude-opus-4-8");
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("eng-opus"), "{text}");
    let spent = settled_spend(&tg, "eng-opus").await;
    assert_eq!(
        spent,
        per * Decimal::from(admitted),
        "every admitted request counted"
    );
    assert!(
        spent + worst > limit,
        "refused only once the next worst case no longer fits"
    );
    let events = tg.wait_for_trace_at_least("trace-opus-4-8", 1).await;
    let priced = events
        .iter()
        .find(|e| e["status"] == 200)
        .expect("an admitted request in the lake");
    assert_eq!(priced["pricing_family"], "claude-opus-4-8", "{priced}");
    assert_eq!(priced["pricing_basis"], "table");
    assert_eq!(dec(&priced["cost_usd"]), per);
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_no_table_has_is_reserved_at_provisional_rates_not_zero() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    // Far below any worst case: 1 output token of the latest Opus is $0.00002.
    let tg = Tollgate::start_with_config(
        dir.path(),
        write_config(dir.path(), &mock.url(), &budget("eng-tiny", "0.00001")),
    );
    let body =
        r#"{"model":"claude-opus-9","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(post_once_admitting(&tg, body).await, 429);
    assert!(mock.received().is_empty(), "nothing went upstream");
    tg.stop();
}
