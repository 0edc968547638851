//! Claude Code's gateway protocol against a real `tollgate serve`: model
//! discovery as 2.1.332 asks for it (the captured request), usage-limit
//! headers from the tightest budget on every answer, the refusal shape,
//! `/api/oauth/usage`, and real Claude Code making one request on a bad
//! key and working in gateway mode.

use std::time::Duration;

use crate::budgets::{body_of, budget, settled_spend};
use crate::claude_code::run_claude_output;
use crate::support::{KEY, Tollgate, client, sample, start_mock, write_config};

/// A response header as text ("" when absent).
fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

const STATUS: &str = "anthropic-ratelimit-unified-status";
const UTILISATION: &str = "anthropic-ratelimit-unified-overage-utilization";
const THRESHOLD: &str = "anthropic-ratelimit-unified-overage-surpassed-threshold";

#[tokio::test(flavor = "multi_thread")]
async fn model_discovery_answers_claude_codes_captured_request_with_the_keys_priced_models() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start(dir.path(), &mock.url());
    let s = sample("anthropic_models_discovery_gateway_mode_2.1.332.json");
    let get = |auth: &str| {
        let mut r = client().get(format!("{}{}", tg.url, s.path));
        for (k, v) in &s.headers {
            if !["host", "connection", "authorization"].contains(&k.to_ascii_lowercase().as_str()) {
                r = r.header(k.as_str(), v.as_str());
            }
        }
        r.bearer_auth(auth.to_owned())
    };
    let r = get(KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"claude-sonnet-4-5") && ids.contains(&"claude-opus-4-6"),
        "{v}"
    );
    assert_eq!(v["data"][0]["type"], "model");
    assert!(
        v["data"][0]["display_name"]
            .as_str()
            .unwrap()
            .starts_with("Claude "),
        "{v}"
    );
    assert!(v["data"][0]["created_at"].is_string(), "{v}");
    assert_eq!(v["has_more"], false);
    assert_eq!(v["first_id"], ids[0]);
    assert_eq!(v["last_id"], *ids.last().unwrap());

    let r = get("not-a-key").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "x-should-retry"), "false");
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_headers_follow_the_budget_up_to_a_429_billing_error_refusal() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start_with_config(
        dir.path(),
        write_config(dir.path(), &mock.url(), &budget("eng-daily", "0.02")),
    );
    let body = body_of(200);
    let mut seen = Vec::new();
    let refusal = loop {
        let r = tg
            .post("/v1/messages")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            // Budget state not read yet just after start.
            503 => tokio::time::sleep(Duration::from_millis(200)).await,
            200 => {
                let status = header(&r, STATUS);
                let fraction: f64 = header(&r, UTILISATION).parse().unwrap();
                assert_eq!(
                    header(&r, "anthropic-ratelimit-unified-overage-status"),
                    status
                );
                assert_eq!(
                    header(&r, "anthropic-ratelimit-unified-representative-claim"),
                    "overage"
                );
                assert!(
                    header(&r, "anthropic-ratelimit-unified-reset")
                        .parse::<i64>()
                        .is_ok()
                );
                seen.push((status, fraction, header(&r, THRESHOLD)));
                r.bytes().await.unwrap();
                settled_spend(&tg, "eng-daily").await;
            }
            429 => break r,
            other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
        }
        assert!(seen.len() < 20, "the budget never refused: {seen:?}");
    };
    assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "{seen:?}");
    assert_eq!(seen[0].0, "allowed", "{seen:?}");
    assert_eq!(seen[0].2, "", "no threshold below 75 %: {seen:?}");
    let warned = seen.iter().find(|s| s.0 == "allowed_warning");
    assert!(
        warned.is_some_and(|w| w.1 > 0.75 && w.1 < 1.0 && w.2 == "0.75"),
        "{seen:?}"
    );

    assert_eq!(header(&refusal, "x-should-retry"), "false");
    assert_eq!(header(&refusal, STATUS), "rejected");
    // At least 1: spend may pass the limit by less than one reservation.
    assert!(header(&refusal, UTILISATION).parse::<f64>().unwrap() >= 1.0);
    assert_eq!(
        header(&refusal, "anthropic-ratelimit-unified-overage-period"),
        "daily"
    );
    assert_eq!(
        header(
            &refusal,
            "anthropic-ratelimit-unified-overage-disabled-reason"
        ),
        "org_spend_cap_reached"
    );
    assert!(header(&refusal, "retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(
        header(&refusal, "anthropic-ratelimit-unified-representative-claim"),
        ""
    );
    let e: serde_json::Value = refusal.json().await.unwrap();
    assert_eq!(e["error"]["type"], "billing_error", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("eng-daily"),
        "{e}"
    );
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth_usage_reports_the_covering_budget_in_cents_and_404_without_one() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start_with_config(
        dir.path(),
        write_config(dir.path(), &mock.url(), &budget("eng-daily", "5")),
    );
    let usage = || {
        client()
            .get(format!("{}/api/oauth/usage", tg.url))
            .bearer_auth(KEY)
    };
    let r = usage().send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "cache-control"), "no-store");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["extra_usage"]["monthly_limit"], 500, "{v}");
    assert_eq!(v["extra_usage"]["currency"], "USD");
    assert_eq!(v["limits"][0]["group"], "daily");
    assert_eq!(v["limits"][0]["is_active"], true);
    assert!(
        v["limits"][0]["resets_at"]
            .as_str()
            .unwrap()
            .ends_with(".000Z"),
        "{v}"
    );
    tg.stop();

    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start(dir.path(), &mock.url());
    let r = client()
        .get(format!("{}/api/oauth/usage", tg.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "no budget: the client shows the percent alone"
    );
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_makes_exactly_one_request_on_a_bad_key() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start(dir.path(), &mock.url());
    let modes: [&[(&str, &str)]; 2] = [&[], &[("CLAUDE_CODE_USE_GATEWAY", "1")]];
    for (n, mode) in modes.iter().enumerate() {
        // Claude Code's own retry default (10) stays.
        let out =
            run_claude_output(&tg.url, ("ANTHROPIC_AUTH_TOKEN", "tg-wrong-key"), "", mode).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("401"), "{mode:?}: {stdout}");
        assert_eq!(
            tg.metric("tollgate_auth_failures_total").await,
            (n + 1) as f64,
            "{mode:?}: one request, no retries"
        );
    }
    assert!(mock.received().is_empty(), "nothing went upstream");
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_in_gateway_mode_with_model_discovery_works_through_tollgate() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start(dir.path(), &mock.url());
    let out = run_claude_output(
        &tg.url,
        ("ANTHROPIC_AUTH_TOKEN", KEY),
        "x-tollgate-trace-id: trace-cc-gateway-mode",
        &[
            ("CLAUDE_CODE_USE_GATEWAY", "1"),
            ("CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY", "1"),
            ("CLAUDE_CODE_MAX_RETRIES", "1"),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", tg.log());
    assert!(stdout.contains("Hello from the mock provider"), "{stdout}");
    let events = tg.wait_for_trace_at_least("trace-cc-gateway-mode", 1).await;
    assert!(events.iter().all(|e| e["status"] == 200), "{events:?}");
    assert!(
        events.iter().all(|e| e["session_id"].is_string()),
        "{events:?}"
    );
    tg.stop();
}

/// Sends one request as Claude Code's `agent` (child of `parent`) in
/// session `session`.
async fn send_as_agent(tg: &Tollgate, session: &str, agent: Option<&str>, parent: Option<&str>) {
    let mut r = tg
        .post("/v1/messages")
        .header("x-tollgate-trace-id", "trace-agents")
        .header("x-claude-code-session-id", session);
    if let Some(a) = agent {
        r = r.header("x-claude-code-agent-id", a);
    }
    if let Some(p) = parent {
        r = r.header("x-claude-code-parent-agent-id", p);
    }
    let r = r.body(body_of(100)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_shows_its_agent_tree_with_spend_per_agent() {
    use crate::support::ADMIN;
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start(dir.path(), &mock.url());
    send_as_agent(&tg, "s-agents", None, None).await;
    send_as_agent(&tg, "s-agents", Some("agent-a"), None).await;
    send_as_agent(&tg, "s-agents", Some("agent-b"), Some("agent-a")).await;
    send_as_agent(&tg, "s-agents", Some("agent-b"), Some("agent-a")).await;
    let events = tg.wait_for_trace("trace-agents", 4).await;
    assert_eq!(
        events.iter().filter(|e| e["agent_id"] == "agent-b").count(),
        2
    );
    assert!(
        events.iter().any(|e| e["parent_agent_id"] == "agent-a"),
        "{events:?}"
    );

    let get = |path: String| {
        let r = client().get(format!("{}{path}", tg.url)).bearer_auth(ADMIN);
        async move {
            r.send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let v = get("/v1/sessions/s-agents".into()).await;
    let main = &v["agents"];
    assert!(main["agent_id"].is_null(), "{v}");
    assert_eq!(main["totals"]["requests"], 1, "{v}");
    let a = &main["children"][0];
    assert_eq!(a["agent_id"], "agent-a", "{v}");
    let b = &a["children"][0];
    assert_eq!(b["agent_id"], "agent-b");
    assert_eq!(b["parent_agent_id"], "agent-a");
    assert_eq!(b["totals"]["requests"], 2);
    let usd = |v: &serde_json::Value| v.as_str().unwrap().parse::<f64>().unwrap();
    assert!(usd(&b["totals"]["spend_usd"]) > 0.0, "{v}");
    assert!(
        (usd(&main["subtree_spend_usd"]) - usd(&v["totals"]["spend_usd"])).abs() < 1e-9,
        "the tree adds up to the session: {v}"
    );
    assert_eq!(v["events"].as_array().unwrap().len(), 4);
    let t = get("/v1/traces/trace-agents".into()).await;
    assert_eq!(t["agents"]["children"][0]["agent_id"], "agent-a", "{t}");

    let s = get("/v1/spend?group_by=agent".into()).await;
    let rows = s["data"].as_array().unwrap();
    let b_row = rows
        .iter()
        .find(|r| r["agent"] == "agent-b")
        .expect("agent-b's row");
    assert_eq!(b_row["requests"], 2, "{s}");
    assert!(
        rows.iter().any(|r| r["agent"].is_null()),
        "the main agent: {s}"
    );
    tg.stop();
}
