//! The spine end to end: Claude Code's real requests through a real
//! `tollgate serve` to the mock provider, into the lake, back out of
//! `/v1/logs`.

use std::time::Duration;

use futures::StreamExt;
use tollgate_mock::{USAGE_CACHE_1H, USAGE_CACHE_5M, USAGE_CACHE_READ, USAGE_INPUT, USAGE_OUTPUT};

use crate::support::{
    ADMIN, KEY, PROVIDER_KEY, Tollgate, client, sample, start_mock, write_config,
};

fn assert_full_usage(event: &serde_json::Value) {
    let u = &event["usage"];
    assert_eq!(u["input_tokens"], USAGE_INPUT, "{event}");
    assert_eq!(u["output_tokens"], USAGE_OUTPUT, "{event}");
    assert_eq!(u["cache_creation_5m_tokens"], USAGE_CACHE_5M, "{event}");
    assert_eq!(u["cache_creation_1h_tokens"], USAGE_CACHE_1H, "{event}");
    assert_eq!(u["cache_read_tokens"], USAGE_CACHE_READ, "{event}");
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_stream_passes_through_byte_for_byte_and_is_queryable_by_trace() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start(dir.path(), &mock.url());
    let s = sample("anthropic_first_request_authtoken.json");

    let direct = s
        .replay(&mock.url(), &[("x-api-key", PROVIDER_KEY)])
        .send()
        .await
        .unwrap();
    let direct_bytes = direct.bytes().await.unwrap();

    let meta = r#"{"team_project":"apollo","env":"ci"}"#;
    let via = s
        .replay(
            &tg.url,
            &[
                ("x-tollgate-trace-id", "trace-spine-1"),
                ("x-tollgate-metadata", meta),
            ],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(via.status(), 200);
    assert_eq!(via.headers()["x-tollgate-trace-id"], "trace-spine-1");
    assert!(
        via.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let via_bytes = via.bytes().await.unwrap();
    assert_eq!(
        via_bytes, direct_bytes,
        "the stream is forwarded byte for byte"
    );

    // What the provider saw: the client's body and headers, the provider
    // key instead of the tollgate key, nothing of tollgate's own.
    let seen = mock.received().pop().unwrap();
    assert_eq!(seen.path_and_query, "/v1/messages?beta=true");
    assert_eq!(
        seen.body,
        s.body.as_bytes(),
        "the body is forwarded byte for byte"
    );
    assert_eq!(seen.header("x-api-key"), Some(PROVIDER_KEY));
    assert_eq!(
        seen.header("authorization"),
        None,
        "the tollgate key never goes upstream"
    );
    assert_eq!(seen.header("accept-encoding"), Some("identity"));
    for (name, value) in &s.headers {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("anthropic-")
            || lower.starts_with("x-stainless")
            || lower == "x-claude-code-session-id"
            || lower == "user-agent"
            || lower == "x-app"
            || lower == "x-metadata"
        {
            assert_eq!(
                seen.header(&lower),
                Some(value.as_str()),
                "{name} is forwarded"
            );
        }
    }
    assert!(
        seen.headers
            .iter()
            .all(|(k, _)| !k.starts_with("x-tollgate-"))
    );

    let events = tg.wait_for_trace("trace-spine-1", 1).await;
    let e = &events[0];
    assert_full_usage(e);
    assert_eq!(e["status"], 200);
    assert_eq!(e["stream"], true);
    assert_eq!(e["team"], "eng");
    assert_eq!(e["user"], "alice");
    assert_eq!(e["workspace"], "acme");
    assert_eq!(e["key_id"], "key_alice");
    assert_eq!(e["provider"], "anthropic");
    assert_eq!(e["stop_reason"], "end_turn");
    assert_eq!(e["request_id"], "req_mock_stream");
    assert_eq!(e["metadata"]["team_project"], "apollo");
    assert_eq!(e["endpoint"], "messages");
    assert!(e["ttft_ms"].is_u64(), "{e}");
    assert!(e["latency_ms"].is_u64());
    assert_eq!(e["attempts"].as_array().unwrap().len(), 1);
    let session = s
        .headers
        .iter()
        .find(|(k, _)| k == "X-Claude-Code-Session-Id")
        .unwrap();
    assert_eq!(e["session_id"], session.1.as_str());
    assert_eq!(e["model_served"], e["model_requested"]);
    assert!(e["client"].as_str().unwrap().starts_with("claude-cli/"));

    // One event by id.
    let id = e["event_id"].as_str().unwrap();
    let one: serde_json::Value = client()
        .get(format!("{}/v1/logs/{id}", tg.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["event_id"], id);
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn x_api_key_auth_non_streaming_and_count_tokens_are_recorded() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start(dir.path(), &mock.url());

    let s = sample("anthropic_nonstream_fallback_after_cut_stream.json");
    let r = client()
        .post(format!("{}{}", tg.url, s.path))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .header("x-portkey-trace-id", "trace-json")
        .body(s.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["type"], "message");

    let c = sample("anthropic_count_tokens.json");
    let r = c
        .replay(&tg.url, &[("x-tollgate-trace-id", "trace-json")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let counted: serde_json::Value = r.json().await.unwrap();
    assert!(counted["input_tokens"].as_u64().unwrap() > 0);

    let events = tg.wait_for_trace("trace-json", 2).await;
    let messages = events.iter().find(|e| e["endpoint"] == "messages").unwrap();
    assert_full_usage(messages);
    assert_eq!(messages["stream"], false);
    assert_eq!(messages["request_id"], "req_mock_json");
    let count = events
        .iter()
        .find(|e| e["endpoint"] == "count_tokens")
        .unwrap();
    assert_eq!(count["status"], 200);
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_anthropic_shaped_errors_that_name_the_problem() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start(dir.path(), &mock.url());
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[]}"#;

    let cases: Vec<(reqwest::RequestBuilder, u16, &str, &str)> = vec![
        (
            client().post(format!("{}/v1/messages", tg.url)).body(body),
            401,
            "authentication_error",
            "missing tollgate key",
        ),
        (
            client()
                .post(format!("{}/v1/messages", tg.url))
                .bearer_auth("tg-wrong")
                .body(body),
            401,
            "authentication_error",
            "invalid tollgate key",
        ),
        (
            tg.post("/v1/messages")
                .header("x-tollgate-metadata", "[1,2]")
                .body(body),
            400,
            "invalid_request_error",
            "x-tollgate-metadata",
        ),
        (
            tg.post("/v1/messages")
                .header("x-tollgate-metadata", r#"{"n":1}"#)
                .body(body),
            400,
            "invalid_request_error",
            "x-tollgate-metadata",
        ),
        (
            tg.post("/v1/messages").body("{\"model\": "),
            400,
            "invalid_request_error",
            "not valid JSON",
        ),
        (
            tg.post("/v1/messages").body(vec![b' '; 2 * 1024 * 1024]),
            413,
            "request_too_large",
            "limit",
        ),
    ];
    for (request, status, kind, needle) in cases {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), status, "{needle}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], kind, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    assert!(
        mock.received().is_empty(),
        "no refused request reached the provider"
    );

    // The process keeps serving.
    let ok = tg.post("/v1/messages").body(body).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    // Health checks need no key.
    for (method, path) in [
        (reqwest::Method::HEAD, "/"),
        (reqwest::Method::GET, "/health"),
    ] {
        let r = client()
            .request(method, format!("{}{path}", tg.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_errors_pass_through_and_failures_are_recorded() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start(dir.path(), &mock.url());
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":10,"stream":true,"messages":[]}"#;

    let r = tg
        .post("/v1/messages")
        .header("x-mock-scenario", "error:529")
        .header("x-tollgate-trace-id", "trace-err")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 529);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["error"]["type"], "overloaded_error",
        "the provider's body passes through"
    );

    let r = tg
        .post("/v1/messages")
        .header("x-mock-scenario", "error:429")
        .header("x-tollgate-trace-id", "trace-err")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");

    // A stream the provider cuts: the client gets what came, then an error.
    let r = tg
        .post("/v1/messages")
        .header("x-mock-scenario", "cut")
        .header("x-tollgate-trace-id", "trace-err")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut got = Vec::new();
    let mut broke = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => got.extend_from_slice(&c),
            Err(_) => {
                broke = true;
                break;
            }
        }
    }
    assert!(broke, "the client sees the stream break");
    assert!(String::from_utf8_lossy(&got).contains("message_start"));

    let events = tg.wait_for_trace("trace-err", 3).await;
    let by_status = |s: u64| events.iter().find(|e| e["status"] == s).unwrap();
    assert_eq!(by_status(529)["error_type"], "overloaded_error");
    assert_eq!(by_status(429)["error_type"], "rate_limit_error");
    let cut = by_status(200);
    assert_eq!(cut["error_type"], "upstream_stream_error");
    assert_eq!(
        cut["usage"]["input_tokens"], USAGE_INPUT,
        "partial usage is kept"
    );
    tg.stop();

    // A provider nobody listens on: 502 in Anthropic's shape, and an event.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start(dir.path(), &dead);
    let r = tg
        .post("/v1/messages")
        .header("x-tollgate-trace-id", "trace-dead")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "api_error");
    let events = tg.wait_for_trace("trace-dead", 1).await;
    assert_eq!(events[0]["error_type"], "upstream_connect_error");
    assert_eq!(
        events[0]["attempts"][0]["error_type"],
        "upstream_connect_error"
    );
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn client_disconnect_mid_stream_is_recorded() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start(dir.path(), &mock.url());
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":10,"stream":true,"messages":[]}"#;
    let r = tg
        .post("/v1/messages")
        .header("x-mock-scenario", "slow-stream:300")
        .header("x-tollgate-trace-id", "trace-gone")
        .body(body)
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    drop(stream);

    let events = tg.wait_for_trace("trace-gone", 1).await;
    assert_eq!(events[0]["error_type"], "client_disconnected");
    assert_eq!(events[0]["usage"]["input_tokens"], USAGE_INPUT);
    tg.stop();
}

async fn send_many(tg: &Tollgate, trace: &str, n: usize) {
    let body = r#"{"model":"claude-haiku-4-5","max_tokens":10,"stream":true,"messages":[]}"#;
    let sends = (0..n).map(|_| async {
        let r = tg
            .post("/v1/messages")
            .header("x-tollgate-trace-id", trace)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    });
    futures::future::join_all(sends).await;
}

fn ids(events: &[serde_json::Value]) -> std::collections::HashSet<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn restarts_lose_nothing_and_duplicate_nothing() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start(dir.path(), &mock.url());

    // SIGTERM right after the answers: the queue and the sink drain first.
    send_many(&tg, "trace-restart", 40).await;
    let config = tg.config.clone();
    tg.stop();
    let tg = Tollgate::start_with_config(dir.path(), config.clone());
    let events = tg.wait_for_trace("trace-restart", 40).await;
    assert_eq!(ids(&events).len(), 40);

    // SIGKILL once the events are on the log but maybe not in the lake:
    // the restarted sink writes each exactly once.
    send_many(&tg, "trace-restart", 30).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tg
        .metric(r#"tollgate_bus_appended_total{topic="tollgate.events.v1"}"#)
        .await
        < 30.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "events never reached the log"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tg.kill();
    let tg = Tollgate::start_with_config(dir.path(), config);
    let events = tg.wait_for_trace("trace-restart", 70).await;
    assert_eq!(ids(&events).len(), 70, "every event exactly once");
    // The restarted process has read its log to the end and flushed what it
    // read: a duplicate from the replay would be in the lake by now.
    tg.wait_until_landed(Duration::from_secs(30)).await;
    tg.wait_until_drained(0, Duration::from_secs(30)).await;
    let again = tg.wait_for_trace("trace-restart", 70).await;
    assert_eq!(again.len(), 70);
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_api_filters_paginates_newest_first_and_refuses_bad_queries() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start(dir.path(), &mock.url());
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[]}"#;
    for i in 0..5 {
        let r = tg
            .post("/v1/messages")
            .header("x-tollgate-trace-id", "trace-pages")
            .header("x-tollgate-metadata", format!(r#"{{"i":"{i}"}}"#))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let all = tg.wait_for_trace("trace-pages", 5).await;
    let order: Vec<&str> = all
        .iter()
        .map(|e| e["metadata"]["i"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["4", "3", "2", "1", "0"], "newest first");

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("trace_id=trace-pages&limit=2&cursor={c}"),
            None => "trace_id=trace-pages&limit=2".to_owned(),
        };
        let page = tg.logs(&q).await;
        for e in page["data"].as_array().unwrap() {
            seen.push(e["metadata"]["i"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["4", "3", "2", "1", "0"]);

    for q in [
        "team=eng&user=alice",
        "model=claude-sonnet-4-5",
        "status=200",
        "from=2020-01-01&to=2999-01-01T00:00:00Z",
    ] {
        let page = tg.logs(&format!("{q}&trace_id=trace-pages")).await;
        assert_eq!(page["data"].as_array().unwrap().len(), 5, "{q}");
    }
    for q in ["team=other", "status=500", "to=2020-01-01"] {
        let page = tg.logs(&format!("{q}&trace_id=trace-pages")).await;
        assert!(page["data"].as_array().unwrap().is_empty(), "{q}");
    }
    for (q, name) in [
        ("status=abc", "status"),
        ("limit=5000", "limit"),
        ("bogus=1", "bogus"),
        ("from=yesterday", "from"),
    ] {
        let r = client()
            .get(format!("{}/v1/logs?{q}", tg.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(
            v["error"]["message"].as_str().unwrap().contains(name),
            "{v}"
        );
    }
    let r = client()
        .get(format!("{}/v1/logs", tg.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the query API needs the admin token");
    let r = client()
        .get(format!("{}/v1/logs", tg.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a gateway key is not an admin token");
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_config_is_refused_with_a_message_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "ftp://nowhere", "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("providers.anthropic.base_url"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn init_writes_a_config_that_serves_with_the_printed_key() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let init = |dir: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("init")
            .current_dir(dir)
            .output()
            .unwrap()
    };
    let out = init(dir.path());
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.lines().last().unwrap().trim().to_owned();
    assert!(key.starts_with("tg-"));
    let text = std::fs::read_to_string(dir.path().join("tollgate.toml")).unwrap();
    assert!(!text.contains(&key), "only the key's hash is stored");
    assert!(
        !init(dir.path()).status.success(),
        "init refuses to overwrite"
    );

    // Serve it on free ports (gateway and metrics) against the mock, with
    // the env the starter reads.
    let text = text
        .replace("127.0.0.1:8787", "127.0.0.1:0")
        .replace("127.0.0.1:9464", "127.0.0.1:0");
    std::fs::write(dir.path().join("tollgate.toml"), text).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("serve")
        .current_dir(dir.path())
        .env("ANTHROPIC_UPSTREAM_URL", mock.url())
        .env("ANTHROPIC_API_KEY", PROVIDER_KEY)
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let url = lines
        .next()
        .unwrap()
        .unwrap()
        .strip_prefix("tollgate gateway listening on ")
        .unwrap()
        .to_owned();
    let r = client()
        .post(format!("{url}/v1/messages"))
        .bearer_auth(&key)
        .header("anthropic-version", "2023-06-01")
        .body(r#"{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        dir.path().join("tollgate-data").is_dir(),
        "data lives under ./tollgate-data"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// In `tollgate serve` the accountant and the sink take each event as the
/// stage before them held it in memory instead of decoding its JSON again
/// (the debug build checks each against its bytes): the hand-over counters
/// move, and the lake holds every event all the same.
#[tokio::test(flavor = "multi_thread")]
async fn in_one_process_events_are_handed_over_not_decoded_again() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start(dir.path(), &mock.url());
    send_many(&tg, "trace-handed", 3).await;
    let events = tg.wait_for_trace("trace-handed", 3).await;
    assert_eq!(ids(&events).len(), 3);
    for topic in ["tollgate.events.v1", "tollgate.costed.v1"] {
        let handed = format!(r#"tollgate_bus_handed_over_total{{topic="{topic}"}}"#);
        let n = tg.metric(&handed).await;
        assert!(n >= 1.0, "{handed} is {n}:\n{}", tg.log());
    }
    tg.stop();
}
