//! Bedrock and Vertex behind one tollgate key, against the project's mocks
//! of both (which recompute SigV4 signatures and verify the service
//! account's JWT), and Claude Code itself in Bedrock and Vertex mode.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tollgate_mock::{MockHandle, MockOptions};

use crate::claude_code::run_claude_output;
use crate::support::{KEY, Tollgate, write_config};

const AWS_KEY: &str = "AKIDTOLLGATETEST";
const AWS_SECRET: &str = "tollgate/test/secret/key/EXAMPLE";

/// A mock that checks SigV4 with the test credentials and JWTs with the
/// test service account's public key.
pub(crate) async fn start_cloud_mock() -> MockHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = std::fs::read_to_string(data("vertex-test-key.pub.pem")).unwrap();
    tollgate_mock::spawn(
        listener,
        MockOptions {
            record: true,
            aws: Some((AWS_KEY.into(), AWS_SECRET.into())),
            google_public_key_pem: Some(public),
            ..MockOptions::default()
        },
    )
    .unwrap()
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A config whose key routes to `target` (`bedrock` or `vertex`), both
/// pointing at the mock.
pub(crate) fn cloud_config(dir: &Path, mock: &MockHandle, target: &str) -> PathBuf {
    let key = std::fs::read_to_string(data("vertex-test-key.json")).unwrap();
    let mut key: serde_json::Value = serde_json::from_str(&key).unwrap();
    key["token_uri"] = format!("{}/token", mock.url()).into();
    let key_path = dir.join("service-account.json");
    std::fs::write(&key_path, key.to_string()).unwrap();
    let providers = format!(
        r#"
[providers.bedrock]
kind = "bedrock"
base_url = "{url}"
region = "us-east-1"
access_key_id = "{AWS_KEY}"
secret_access_key = "{AWS_SECRET}"

[providers.vertex]
kind = "vertex"
base_url = "{url}"
region = "us-east5"
project_id = "tollgate-test"
credentials_file = "{key}"
"#,
        url = mock.url(),
        key = key_path.display()
    );
    // The tests name routes and providers per request: the key may.
    let config = write_config(dir, &mock.url(), "allow_client_config = true\n");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "provider = \"anthropic\"",
        &format!("provider = \"{target}\""),
    );
    std::fs::write(&config, format!("{text}\n{providers}")).unwrap();
    config
}

const BODY_STREAM: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const BODY_JSON: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test(flavor = "multi_thread")]
async fn bedrock_target_gets_signed_invoke_requests_and_streams_back_anthropic_sse() {
    let mock = start_cloud_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start_with_config(dir.path(), cloud_config(dir.path(), &mock, "bedrock"));

    let r = tg
        .post("/v1/messages")
        .header(
            "anthropic-beta",
            "interleaved-thinking-2025-05-14,made-up-beta-2099-01-01",
        )
        .header("x-tollgate-trace-id", "trace-bedrock")
        .body(BODY_STREAM)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = r.text().await.unwrap();
    assert!(text.starts_with("event: message_start\ndata: "), "{text}");
    assert!(
        text.contains("Hello") && text.contains("event: message_stop"),
        "{text}"
    );

    let r = tg
        .post("/v1/messages")
        .header("x-tollgate-trace-id", "trace-bedrock")
        .body(BODY_JSON)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["content"][0]["text"], "Hello from the mock provider.");

    let seen = mock.received();
    assert_eq!(
        seen[0].path_and_query,
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream"
    );
    assert!(
        seen[0]
            .header("authorization")
            .unwrap()
            .starts_with("AWS4-HMAC-SHA256 Credential=AKIDTOLLGATETEST/")
    );
    let sent: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(
        sent["anthropic_beta"],
        serde_json::json!(["interleaved-thinking-2025-05-14"])
    );
    assert_eq!(
        seen[1].path_and_query,
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    );

    let events = tg.wait_for_trace("trace-bedrock", 2).await;
    for e in &events {
        assert_eq!(e["provider"], "bedrock", "{e}");
        assert_eq!(e["status"], 200);
        assert_eq!(e["usage"]["output_tokens"], 17, "{e}");
        assert_eq!(e["usage"]["cache_creation_1h_tokens"], 200, "{e}");
    }
    let streamed = events.iter().find(|e| e["stream"] == true).unwrap();
    assert_eq!(
        streamed["downgrades"],
        serde_json::json!(["anthropic-beta:made-up-beta-2099-01-01"]),
        "the removed beta is recorded"
    );
    assert!(tg.metric("tollgate_downgrades_total").await >= 1.0);
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn bedrock_with_wrong_secret_is_refused_by_the_signature_check() {
    let mock = start_cloud_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = cloud_config(dir.path(), &mock, "bedrock");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(AWS_SECRET, "not-the-secret");
    std::fs::write(&config, text).unwrap();
    let tg = Tollgate::start_with_config(dir.path(), config);
    let r = tg
        .post("/v1/messages")
        .body(BODY_JSON)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "UnrecognizedClientException maps to Anthropic's 401"
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SignatureDoesNotMatch"),
        "{v}"
    );
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn vertex_target_mints_an_oauth_token_from_a_signed_jwt_and_passes_sse_through() {
    let mock = start_cloud_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start_with_config(dir.path(), cloud_config(dir.path(), &mock, "vertex"));
    for body in [BODY_STREAM, BODY_JSON, BODY_STREAM] {
        let r = tg
            .post("/v1/messages")
            .header("x-tollgate-trace-id", "trace-vertex")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", tg.log());
        let text = r.text().await.unwrap();
        assert!(text.contains("Hello"), "{text}");
    }
    let seen = mock.received();
    let tokens = seen.iter().filter(|r| r.path_and_query == "/token").count();
    assert_eq!(tokens, 1, "the access token is cached");
    let predicts: Vec<_> = seen
        .iter()
        .filter(|r| r.path_and_query.contains(":"))
        .collect();
    assert_eq!(
        predicts[0].path_and_query,
        "/v1/projects/tollgate-test/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict"
    );
    assert_eq!(
        predicts[1].path_and_query,
        "/v1/projects/tollgate-test/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"
    );
    let events = tg.wait_for_trace("trace-vertex", 3).await;
    assert!(
        events
            .iter()
            .all(|e| e["provider"] == "vertex" && e["usage"]["cache_read_tokens"] == 1000),
        "{events:?}"
    );
    tg.stop();
}

/// Runs Claude Code in a cloud mode against tollgate and checks the answer
/// came from the mock and was recorded under the trace.
async fn claude_in_mode(target: &str, env: &[(&str, &str)], trace: &str) {
    let mock = start_cloud_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start_with_config(dir.path(), cloud_config(dir.path(), &mock, target));
    // "TOLLGATE_URL" in `env` stands for this tollgate's address.
    let mut all: Vec<(&str, &str)> = env
        .iter()
        .map(|(k, v)| {
            (
                *k,
                if *v == "TOLLGATE_URL" {
                    tg.url.as_str()
                } else {
                    *v
                },
            )
        })
        .collect();
    all.push(("CLAUDE_CODE_MAX_RETRIES", "1"));
    let headers = format!("x-tollgate-api-key: {KEY}\nx-tollgate-trace-id: {trace}");
    let out = run_claude_output(
        "http://127.0.0.1:9",
        ("ANTHROPIC_MODEL", "claude-sonnet-4-5"),
        &headers,
        &all,
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "claude failed: {stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        tg.log()
    );
    assert!(stdout.contains("Hello from the mock provider"), "{stdout}");
    let events = tg.wait_for_trace_at_least(trace, 1).await;
    assert!(
        events
            .iter()
            .any(|e| e["provider"] == target && e["status"] == 200),
        "{events:?}"
    );
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_in_bedrock_mode_through_tollgate_reaches_the_bedrock_mock() {
    claude_in_mode(
        "bedrock",
        &[
            ("CLAUDE_CODE_USE_BEDROCK", "1"),
            ("CLAUDE_CODE_SKIP_BEDROCK_AUTH", "1"),
            ("ANTHROPIC_BEDROCK_BASE_URL", "TOLLGATE_URL"),
            ("AWS_REGION", "us-east-1"),
        ],
        "trace-cc-bedrock",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_in_vertex_mode_through_tollgate_reaches_the_vertex_mock() {
    claude_in_mode(
        "vertex",
        &[
            ("CLAUDE_CODE_USE_VERTEX", "1"),
            ("CLAUDE_CODE_SKIP_VERTEX_AUTH", "1"),
            ("ANTHROPIC_VERTEX_BASE_URL", "TOLLGATE_URL"),
            ("ANTHROPIC_VERTEX_PROJECT_ID", "p"),
            ("CLOUD_ML_REGION", "us-east5"),
        ],
        "trace-cc-vertex",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn first_party_claude_code_is_routed_to_the_bedrock_mock() {
    let mock = start_cloud_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start_with_config(dir.path(), cloud_config(dir.path(), &mock, "bedrock"));
    let headers = "x-tollgate-trace-id: trace-cc-first-party-bedrock";
    let out = run_claude_output(
        &tg.url,
        ("ANTHROPIC_AUTH_TOKEN", KEY),
        headers,
        &[
            ("ANTHROPIC_MODEL", "claude-sonnet-4-5"),
            ("CLAUDE_CODE_MAX_RETRIES", "1"),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Hello from the mock provider"),
        "{stdout}\n{}",
        tg.log()
    );
    assert!(
        mock.received()
            .iter()
            .any(|r| r.path_and_query.starts_with("/model/")),
        "the request went to Bedrock"
    );
    let events = tg
        .wait_for_trace_at_least("trace-cc-first-party-bedrock", 1)
        .await;
    assert!(
        events.iter().all(|e| e["provider"] == "bedrock"),
        "{events:?}"
    );
    tg.stop();
}

/// A route config appended to a cloud config; the test key may name it.
fn with_route(config: &Path, route: &str) {
    let name = route
        .strip_prefix("[routes.")
        .and_then(|r| r.split_once(']'))
        .map(|(name, _)| name)
        .expect("a [routes.NAME] table");
    let text = std::fs::read_to_string(config).unwrap().replacen(
        "allow_client_config = true\n",
        &format!("allow_client_config = true\nclient_routes = [\"{name}\"]\n"),
        1,
    );
    std::fs::write(config, format!("{text}\n{route}\n")).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn fallback_from_anthropic_to_bedrock_on_529_records_both_attempts() {
    let cloud = start_cloud_mock().await;
    let overloaded = tollgate_mock::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        MockOptions {
            default_scenario: Some("error:529".into()),
            record: true,
            ..MockOptions::default()
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = cloud_config(dir.path(), &cloud, "anthropic");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        &format!("base_url = \"{}\"", cloud.url()),
        &format!("base_url = \"{}\"", overloaded.url()),
        1,
    );
    std::fs::write(&config, text).unwrap();
    with_route(
        &config,
        "[routes.resilient]\nstrategy = \"fallback\"\non_status_codes = [529]\ntargets = [{ provider = \"anthropic\" }, { provider = \"bedrock\" }]",
    );
    let tg = Tollgate::start_with_config(dir.path(), config);
    let r = tg
        .post("/v1/messages")
        .header("x-tollgate-config", "resilient")
        .header("x-tollgate-trace-id", "trace-fallback")
        .body(BODY_STREAM)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", tg.log());
    assert!(r.text().await.unwrap().contains("message_stop"));
    assert_eq!(overloaded.received().len(), 1);
    let e = &tg.wait_for_trace("trace-fallback", 1).await[0];
    assert_eq!(e["provider"], "bedrock");
    let attempts: Vec<(String, u64)> = e["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["target"].as_str().unwrap().to_owned(),
                a["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [("anthropic".to_owned(), 529), ("bedrock".to_owned(), 200)]
    );

    // The same as Portkey's inline JSON config.
    let portkey = r#"{"strategy":{"mode":"fallback","on_status_codes":[529]},"targets":[{"virtual_key":"anthropic"},{"virtual_key":"bedrock"}]}"#;
    let r = tg
        .post("/v1/messages")
        .header("x-portkey-config", portkey)
        .body(BODY_JSON)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_honours_retry_after_and_provider_header_picks_a_target() {
    let cloud = start_cloud_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = cloud_config(dir.path(), &cloud, "anthropic");
    with_route(
        &config,
        "[routes.patient]\ntargets = [{ provider = \"anthropic\" }]\nretry = { attempts = 2, on_status_codes = [429] }",
    );
    let tg = Tollgate::start_with_config(dir.path(), config);
    // The mock throttles on request with `retry-after: 1`; the route
    // retries once, after waiting that second.
    let started = std::time::Instant::now();
    let r = tg
        .post("/v1/messages")
        .header("x-tollgate-config", "patient")
        .header("x-mock-scenario", "error:429")
        .header("x-tollgate-trace-id", "trace-retry")
        .body(BODY_JSON)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let e = &tg.wait_for_trace("trace-retry", 1).await[0];
    assert_eq!(e["attempts"].as_array().unwrap().len(), 2, "{e}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited out retry-after before retrying"
    );

    let r = tg
        .post("/v1/messages")
        .header("x-tollgate-provider", "vertex")
        .header("x-tollgate-trace-id", "trace-provider-header")
        .body(BODY_JSON)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        tg.wait_for_trace("trace-provider-header", 1).await[0]["provider"],
        "vertex"
    );
    let r = tg
        .post("/v1/messages")
        .header("x-tollgate-config", "nope")
        .body(BODY_JSON)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a route the key does not list is refused");
    assert!(r.text().await.unwrap().contains("client_routes"));
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn loadbalance_splits_requests_between_targets_by_weight() {
    let cloud = start_cloud_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = cloud_config(dir.path(), &cloud, "anthropic");
    with_route(
        &config,
        "[routes.split]\nstrategy = \"loadbalance\"\ntargets = [{ provider = \"bedrock\", weight = 0.5 }, { provider = \"vertex\", weight = 0.5 }]",
    );
    let tg = Tollgate::start_with_config(dir.path(), config);
    for _ in 0..60 {
        let r = tg
            .post("/v1/messages")
            .header("x-tollgate-config", "split")
            .header("x-tollgate-trace-id", "trace-lb")
            .body(BODY_JSON)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let events = tg.wait_for_trace("trace-lb", 60).await;
    let bedrock = events.iter().filter(|e| e["provider"] == "bedrock").count();
    assert!(
        (15..=45).contains(&bedrock),
        "{bedrock} of 60 to bedrock at weight 0.5"
    );
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_route_answers_a_repeat_from_memory_recorded_as_a_hit_at_zero_cost() {
    let cloud = start_cloud_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = cloud_config(dir.path(), &cloud, "anthropic");
    with_route(
        &config,
        "[routes.cached]\ntargets = [{ provider = \"anthropic\" }]\ncache = { mode = \"simple\", max_age = 60 }",
    );
    let tg = Tollgate::start_with_config(dir.path(), config);
    let send = || {
        tg.post("/v1/messages")
            .header("x-tollgate-config", "cached")
            .header("x-tollgate-trace-id", "trace-cache")
            .body(BODY_STREAM)
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.headers()["x-tollgate-cache"], "miss");
    let first = first.text().await.unwrap();
    let second = send().await.unwrap();
    assert_eq!(second.headers()["x-tollgate-cache"], "hit");
    assert_eq!(
        second.text().await.unwrap(),
        first,
        "the cached answer is the same bytes"
    );
    assert_eq!(cloud.received().len(), 1, "the repeat never went upstream");
    let events = tg.wait_for_trace("trace-cache", 2).await;
    let hit = events
        .iter()
        .find(|e| e["provider"] == "cache")
        .expect("the hit is recorded as such");
    assert_eq!(hit["usage"]["input_tokens"], 0);
    let cost = hit["cost_usd"]
        .as_f64()
        .or_else(|| hit["cost_usd"].as_str().and_then(|c| c.parse().ok()));
    assert_eq!(cost, Some(0.0), "a hit costs nothing: {hit}");
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_name_cannot_walk_out_of_the_vertex_url_path() {
    let mock = start_cloud_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start_with_config(dir.path(), cloud_config(dir.path(), &mock, "vertex"));
    let hostile = r#"{"model":"../../../../v1/projects/other-project/locations/x/publishers/anthropic/models/claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = tg.post("/v1/messages").body(hostile).send().await.unwrap();
    let _ = r.bytes().await;
    let own = "/v1/projects/tollgate-test/locations/us-east5/publishers/anthropic/models/";
    let received = mock.received();
    assert!(
        !received.is_empty(),
        "the request reached the mock: {}",
        tg.log()
    );
    for got in received.iter().filter(|g| g.path_and_query != "/token") {
        assert!(
            got.path_and_query.starts_with(own) && got.path_and_query.contains("%2F"),
            "left its segment: {}",
            got.path_and_query
        );
        assert!(
            !got.path_and_query.contains("other-project/"),
            "{}",
            got.path_and_query
        );
    }
    tg.stop();
}
