//! Hostile and unlucky inputs on the request path, each replaying a
//! reproduction: client routing configs that multiply upstream calls or
//! dodge admission, an upstream `retry-after: nan`, a client that hangs up
//! mid-stream, a cache shared across teams, `forward_headers` that leak
//! credentials, and a Vertex model ID that walks out of its URL path.

use std::time::{Duration, Instant};

use futures::StreamExt;
use tollgate::config::hash_key;
use tollgate_mock::USAGE_OUTPUT;

use crate::support::{KEY, PROVIDER_KEY, Tollgate, client, start_mock, write_config};

/// A key of another team that is allowed to send its own routing config.
const KEY_MALLORY: &str = "tg-test-key-mallory-red-0000";

const BODY: &str =
    r#"{"model":"claude-haiku-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
const BODY_STREAM: &str = r#"{"model":"claude-haiku-4-5","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

/// Mallory's key (team `red`, client configs allowed), a $1 daily budget
/// on her team, and routes the tests name.
fn extra() -> String {
    format!(
        r#"client_routes = ["patient", "cached", "leaky"]

[[keys]]
id = "key_mallory"
hash = "{mallory}"
workspace = "acme"
team = "red"
user = "mallory"
provider = "anthropic"
allow_client_config = true
client_routes = ["cached"]

[[budgets]]
name = "red-daily"
scope = "team"
subject = "red"
period = "daily"
limit_usd = "1"

[routes.patient]
targets = [{{ provider = "anthropic" }}]
retry = {{ attempts = 2, on_status_codes = [429] }}

[routes.cached]
targets = [{{ provider = "anthropic" }}]
cache = {{ mode = "simple", max_age = 600 }}

[routes.leaky]
targets = [{{ provider = "anthropic" }}]
forward_headers = ["Authorization", "host", "x-api-key", "x-tollgate-api-key", "connection", "te", "x-team-tag"]
"#,
        mallory = hash_key(KEY_MALLORY)
    )
}

/// A request with Mallory's key.
fn as_mallory(tg: &Tollgate) -> reqwest::RequestBuilder {
    client()
        .post(format!("{}/v1/messages", tg.url))
        .bearer_auth(KEY_MALLORY)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
}

/// Sends until the gateway has read its budget state (it fails closed
/// with 503 just after start), and returns the answer.
async fn admitted(make: impl Fn() -> reqwest::RequestBuilder) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = make().send().await.unwrap();
        if r.status() != 503 || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_routing_is_a_permission_and_never_multiplies_upstream_calls() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mock.url(), &extra());
    let tg = Tollgate::start_with_config(dir.path(), config);
    let thirty = vec![serde_json::json!({"provider": "anthropic"}); 30];
    let on_200 = serde_json::json!({"strategy": {"mode": "fallback", "on_status_codes": [200]}, "targets": thirty}).to_string();

    // Alice's key may not route per request at all: 403 naming the setting.
    for (header, value) in [
        ("x-tollgate-config", on_200.as_str()),
        ("x-portkey-config", on_200.as_str()),
        ("x-tollgate-provider", "anthropic"),
    ] {
        let r = tg
            .post("/v1/messages")
            .header(header, value)
            .body(BODY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{header}");
        assert_eq!(r.headers()["x-should-retry"], "false");
        let text = r.text().await.unwrap();
        assert!(text.contains("allow_client_config"), "{text}");
    }
    // Mallory may, but no config moves on after a 2xx.
    let r = admitted(|| {
        as_mallory(&tg)
            .header("x-tollgate-config", on_200.clone())
            .body(BODY)
    })
    .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("2xx"));
    assert!(mock.received().is_empty(), "refusals never go upstream");

    // Fifty retries and thirty fallbacks asked: five calls in all.
    let retries = r#"{"provider":"anthropic","retry":{"attempts":50,"on_status_codes":[529]}}"#;
    let fallbacks = serde_json::json!({"strategy": {"mode": "fallback", "on_status_codes": [529]}, "targets": thirty}).to_string();
    for (trace, config) in [
        ("trace-retries", retries.to_owned()),
        ("trace-fallbacks", fallbacks),
    ] {
        let before = mock.received().len();
        let r = as_mallory(&tg)
            .header("x-tollgate-config", config)
            .header("x-mock-scenario", "error:529")
            .header("x-tollgate-trace-id", trace)
            .body(BODY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 529, "{trace}");
        assert_eq!(mock.received().len() - before, 5, "{trace}: upstream calls");
        let e = &tg.wait_for_trace(trace, 1).await[0];
        assert_eq!(e["attempts"].as_array().unwrap().len(), 5, "{e}");
        let downgrades = e["downgrades"].to_string();
        assert!(downgrades.contains("routing:max_attempts reached"), "{e}");
    }
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn admission_prices_the_body_after_override_params() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mock.url(), &extra());
    let tg = Tollgate::start_with_config(dir.path(), config);
    // Haiku with 10 output tokens fits in $1; Opus with 100,000 output
    // tokens ($2.50 at $25 per million) does not.
    let r = admitted(|| as_mallory(&tg).body(BODY)).await;
    assert_eq!(r.status(), 200);
    let dearer = r#"{"provider":"anthropic","override_params":{"model":"claude-opus-4-6","max_tokens":100000}}"#;
    let before = mock.received().len();
    let r = as_mallory(&tg)
        .header("x-tollgate-config", dearer)
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let text = r.text().await.unwrap();
    assert!(text.contains("red-daily"), "{text}");
    assert_eq!(
        mock.received().len(),
        before,
        "refused before going upstream"
    );
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_that_is_not_a_number_is_survived_and_recorded() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mock.url(), &extra());
    let tg = Tollgate::start_with_config(dir.path(), config);
    for (i, value) in ["nan", "inf", "-1", "1e400", "Wed, 21 Oct 2015 07:28:00 GMT"]
        .iter()
        .enumerate()
    {
        let trace = format!("trace-retry-after-{i}");
        let r = tg
            .post("/v1/messages")
            .header("x-tollgate-config", "patient")
            .header("x-mock-scenario", format!("retry-after:{value}"))
            .header("x-tollgate-trace-id", &trace)
            .body(BODY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429, "retry-after {value}: {}", tg.log());
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["type"], "rate_limit_error");
        let e = &tg.wait_for_trace(&trace, 1).await[0];
        assert_eq!(e["attempts"].as_array().unwrap().len(), 2, "{e}");
    }
    assert!(!tg.log().contains("panicked"), "{}", tg.log());
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_hangs_up_mid_stream_is_billed_what_the_provider_generated() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start(dir.path(), &mock.url());
    let r = tg
        .post("/v1/messages")
        .header("x-mock-scenario", "slow-stream:150")
        .header("x-tollgate-trace-id", "trace-hangup")
        .body(BODY_STREAM)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    drop(stream);
    let e = &tg.wait_for_trace("trace-hangup", 1).await[0];
    assert_eq!(e["error_type"], "client_disconnected");
    assert_eq!(
        e["usage"]["output_tokens"], USAGE_OUTPUT,
        "the final usage, drained after the client left: {e}"
    );
    assert!(e.get("usage_estimated").is_none_or(|v| v == false), "{e}");
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_response_cache_never_answers_across_teams_or_betas() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mock.url(), &extra());
    let tg = Tollgate::start_with_config(dir.path(), config);
    let cache_header =
        |r: &reqwest::Response| r.headers()["x-tollgate-cache"].to_str().unwrap().to_owned();
    let alice = || {
        tg.post("/v1/messages")
            .header("x-tollgate-config", "cached")
            .body(BODY)
    };
    assert_eq!(cache_header(&alice().send().await.unwrap()), "miss");
    assert_eq!(cache_header(&alice().send().await.unwrap()), "hit");
    let beta = alice()
        .header("anthropic-beta", "context-1m-2025-08-07")
        .send()
        .await
        .unwrap();
    assert_eq!(
        cache_header(&beta),
        "miss",
        "another beta is another question"
    );
    let mallory = admitted(|| {
        as_mallory(&tg)
            .header("x-tollgate-config", "cached")
            .body(BODY)
    })
    .await;
    assert_eq!(mallory.status(), 200);
    assert_eq!(
        cache_header(&mallory),
        "miss",
        "another team never gets alice's answer"
    );
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_headers_cannot_send_credentials_or_hop_by_hop_headers_upstream() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mock.url(), &extra());
    let tg = Tollgate::start_with_config(dir.path(), config);
    let r = tg
        .post("/v1/messages")
        .header("x-tollgate-config", "leaky")
        .header("x-tollgate-api-key", KEY)
        .header("te", "trailers")
        .header("x-team-tag", "blue")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", tg.log());
    let got = mock.received().pop().unwrap();
    assert_eq!(got.header("x-team-tag"), Some("blue"));
    assert_eq!(
        got.header("x-api-key"),
        Some(PROVIDER_KEY),
        "the provider's own credential"
    );
    for name in ["authorization", "x-tollgate-api-key", "te"] {
        assert!(
            got.header(name).is_none(),
            "{name} reached the provider: {:?}",
            got.headers
        );
    }
    assert!(
        !got.headers.iter().any(|(_, v)| v.contains(KEY)),
        "the tollgate key never leaves: {:?}",
        got.headers
    );
    tg.stop();
}
