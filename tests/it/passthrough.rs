//! Subscription passthrough: Claude Code on a Max plan or Anthropic OAuth
//! (or a user's own Anthropic key) through tollgate. The mock provider
//! accepts only the clients' own credentials (never tollgate's provider
//! key), so every 200 here proves the client's credential went upstream.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use tollgate::config::hash_key;
use tollgate_mock::{MockHandle, MockOptions};

use crate::claude_code::run_claude_output;
use crate::support::{ADMIN, PROVIDER_KEY, Tollgate, client, sample, write_config};

/// The passthrough tollgate key (user `bob`, team `eng`).
const SUB_KEY: &str = "tg-sub-key-9876543210";
/// Fake Claude Code OAuth tokens (Max plan / Anthropic OAuth look-alikes).
const OAUTH_A: &str = "sk-ant-oat01-FAKEaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-AAAAAAAA";
const OAUTH_B: &str = "sk-ant-oat01-FAKEbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-BBBBBBBB";
/// A user's own Anthropic API key, sent as `x-api-key`.
const USER_KEY: &str = "sk-ant-api03-FAKEuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu-UUUUUUUU";

/// The `[[keys]]` entry of the passthrough key.
fn sub_key() -> String {
    format!(
        "\n[[keys]]\nid = \"key_bob_sub\"\nhash = \"{}\"\nworkspace = \"acme\"\nteam = \"eng\"\nuser = \"bob\"\nprovider = \"anthropic\"\npassthrough = true\n",
        hash_key(SUB_KEY)
    )
}

/// A mock that accepts the clients' own credentials only.
async fn subscription_mock() -> MockHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    tollgate_mock::spawn(
        listener,
        MockOptions {
            credentials: vec![OAUTH_A.into(), OAUTH_B.into(), USER_KEY.into()],
            record: true,
            ..MockOptions::default()
        },
    )
    .unwrap()
}

/// A request as Claude Code sends it on a subscription: its own
/// credential, the tollgate key in a custom header.
fn sub_request(tg: &Tollgate, path: &str, trace: &str) -> reqwest::RequestBuilder {
    client()
        .post(format!("{}{path}", tg.url))
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .header("x-tollgate-api-key", SUB_KEY)
        .header("x-tollgate-trace-id", trace)
}

/// A small Messages body.
fn small_body(stream: bool) -> String {
    serde_json::json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": "hello"}],
    })
    .to_string()
}

/// The captured Claude Code request, pretty-printed so that any re-encoding
/// on the way (serde's compact form) would change its bytes.
fn claude_code_body() -> String {
    let s = sample("anthropic_first_request_authtoken.json");
    let v: serde_json::Value = serde_json::from_str(&s.body).unwrap();
    let text = serde_json::to_string_pretty(&v).unwrap();
    assert!(text.contains("x-anthropic-billing-header: cc_version="));
    assert!(v["metadata"]["user_id"].is_string());
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn passthrough_forwards_the_clients_own_credential_and_the_body_byte_for_byte() {
    let mock = subscription_mock().await;
    let dir = tempfile::tempdir().unwrap();
    // Both keys may route per request, so what is checked below is that
    // routing still cannot move credentials across.
    let routing = format!(
        "client_routes = [\"sub\"]\n{}\n[providers.bedrock]\nkind = \"bedrock\"\nregion = \"us-east-1\"\nbase_url = \"{}\"\nbearer_token = \"br\"\n\n[routes.sub]\npassthrough = true\ntargets = [{{ provider = \"anthropic\" }}]\n",
        sub_key().replace(
            "passthrough = true\n",
            "passthrough = true\nallow_client_config = true\n"
        ),
        mock.url()
    );
    let config = write_config(dir.path(), &mock.url(), &routing);
    let tg = Tollgate::start_with_config(dir.path(), config);

    // Claude Code's own request, OAuth token as Bearer, the oauth beta on.
    let s = sample("anthropic_first_request_authtoken.json");
    let body = claude_code_body();
    let mut r = client().post(format!("{}{}", tg.url, s.path));
    for (k, v) in &s.headers {
        let lower = k.to_ascii_lowercase();
        if ["host", "content-length", "connection", "authorization"].contains(&lower.as_str()) {
            continue;
        }
        if lower == "anthropic-beta" {
            r = r.header(k.as_str(), format!("{v},oauth-2025-04-20"));
        } else {
            r = r.header(k.as_str(), v.as_str());
        }
    }
    let r = r
        .bearer_auth(OAUTH_A)
        .header("x-tollgate-api-key", SUB_KEY)
        .header("x-tollgate-trace-id", "trace-sub-oauth")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer = r.text().await.unwrap();
    assert!(answer.contains("message_stop"), "{answer}");

    let seen = mock.received();
    assert_eq!(seen.len(), 1);
    let up = &seen[0];
    assert_eq!(up.path_and_query, "/v1/messages?beta=true");
    assert_eq!(
        up.header("authorization"),
        Some(format!("Bearer {OAUTH_A}").as_str())
    );
    assert!(up.header("x-api-key").is_none(), "no provider key added");
    assert!(
        up.header("anthropic-beta")
            .unwrap()
            .ends_with(",oauth-2025-04-20")
    );
    for (name, value) in &up.headers {
        assert!(
            !name.starts_with("x-tollgate-") && !name.starts_with("x-portkey-"),
            "tollgate's own header {name} went upstream"
        );
        assert!(
            !value.contains(SUB_KEY) && !value.contains(PROVIDER_KEY),
            "{name}: {value}"
        );
    }
    assert_eq!(
        hex::encode(Sha256::digest(&up.body)),
        hex::encode(Sha256::digest(body.as_bytes())),
        "the body reached Anthropic byte for byte"
    );

    // A user's own key as x-api-key, tollgate's key under the Portkey name.
    let r = client()
        .post(format!("{}/v1/messages", tg.url))
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", USER_KEY)
        .header("x-portkey-api-key", SUB_KEY)
        .header("x-tollgate-trace-id", "trace-sub-apikey")
        .body(small_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let up = mock.received().pop().unwrap();
    assert_eq!(up.header("x-api-key"), Some(USER_KEY));
    assert!(up.header("authorization").is_none());
    assert!(up.header("x-portkey-api-key").is_none());
    assert_eq!(up.body, small_body(false).as_bytes());

    // The mock refuses tollgate's provider key: a plain key's request
    // (sent with it) fails upstream, which is what proves the passthrough
    // requests above carried the client's credential instead.
    let r = tg
        .post("/v1/messages")
        .body(small_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        mock.received().pop().unwrap().header("x-api-key"),
        Some(PROVIDER_KEY)
    );

    // Without x-tollgate-api-key: a clear 401 naming the header, and
    // nothing goes upstream.
    let before = mock.received().len();
    for auth in [OAUTH_A, SUB_KEY] {
        let r = client()
            .post(format!("{}/v1/messages", tg.url))
            .header("anthropic-version", "2023-06-01")
            .bearer_auth(auth)
            .body(small_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let e: serde_json::Value = r.json().await.unwrap();
        assert_eq!(e["error"]["type"], "authentication_error");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.contains("x-tollgate-api-key"), "{msg}");
        assert!(!msg.contains(auth), "the credential is not echoed: {msg}");
    }
    // The tollgate key but no credential of the client's own.
    let r = sub_request(&tg, "/v1/messages", "trace-sub-nocred")
        .body(small_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let e: serde_json::Value = r.json().await.unwrap();
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("key_bob_sub") && msg.contains("no Anthropic credential"),
        "{msg}"
    );
    // Per-request routing cannot send the client's credential elsewhere,
    // nor move a plain key onto a passthrough route.
    let r = sub_request(&tg, "/v1/messages", "trace-sub-bedrock")
        .bearer_auth(OAUTH_A)
        .header("x-tollgate-provider", "bedrock")
        .body(small_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let msg = r.text().await.unwrap();
    assert!(
        msg.contains("bedrock") && msg.contains("Anthropic only"),
        "{msg}"
    );
    let r = tg
        .post("/v1/messages")
        .header("x-tollgate-config", "sub")
        .body(small_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let msg = r.text().await.unwrap();
    assert!(msg.contains("passthrough route"), "{msg}");
    assert_eq!(mock.received().len(), before, "refusals never go upstream");

    let oauth = tg.wait_for_trace("trace-sub-oauth", 1).await;
    let apikey = tg.wait_for_trace("trace-sub-apikey", 1).await;
    for e in oauth.iter().chain(&apikey) {
        assert_eq!(e["billed_by"], "subscription", "{e}");
        assert_eq!(e["user"], "bob");
        assert_eq!(e["key_id"], "key_bob_sub");
        assert_eq!(e["status"], 200);
        assert!(
            e["credential_fingerprint"]
                .as_str()
                .unwrap()
                .starts_with("fp_"),
            "{e}"
        );
    }
    let nocred = tg.wait_for_trace("trace-sub-nocred", 1).await;
    assert_eq!(nocred[0]["error_type"], "passthrough_no_credential");
    tg.stop();
}

/// One request of the leak test: trace, path, Bearer token, `x-api-key`,
/// whether it streams.
type Send = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    bool,
);

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Every row of a Parquet file as JSON text (every column decoded, the
/// zstd pages included).
fn parquet_as_json(path: &Path) -> String {
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    for batch in reader {
        writer.write(&batch.unwrap()).unwrap();
    }
    writer.finish().unwrap();
    String::from_utf8(writer.into_inner()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_credentials_never_reach_events_logs_or_the_lake_only_their_fingerprints_do() {
    let mock = subscription_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mock.url(), &sub_key());
    // Everything the process can log, HTTP client and server included.
    let tg = Tollgate::start_role_env(dir.path(), config, "serve", &[("TOLLGATE_LOG", "trace")]);

    // (trace, path, Bearer, x-api-key, stream)
    let sends: [Send; 5] = [
        ("trace-fp-a1", "/v1/messages", Some(OAUTH_A), None, true),
        ("trace-fp-a2", "/v1/messages", Some(OAUTH_A), None, false),
        ("trace-fp-b", "/v1/messages", Some(OAUTH_B), None, true),
        ("trace-fp-u", "/v1/messages", None, Some(USER_KEY), false),
        (
            "trace-fp-count",
            "/v1/messages/count_tokens",
            Some(OAUTH_A),
            None,
            false,
        ),
    ];
    for (trace, path, bearer, api_key, stream) in sends {
        let mut r = sub_request(&tg, path, trace).body(small_body(stream));
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        if let Some(k) = api_key {
            r = r.header("x-api-key", k);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 200, "{trace}");
        r.bytes().await.unwrap();
    }
    // Refused ones are recorded too; they must not leak either.
    let r = client()
        .post(format!("{}/v1/messages", tg.url))
        .header("anthropic-version", "2023-06-01")
        .bearer_auth(OAUTH_B)
        .header("x-tollgate-api-key", "tg-wrong")
        .body(small_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let fp = |trace: &'static str| {
        let tg = &tg;
        async move {
            let e = tg.wait_for_trace(trace, 1).await.remove(0);
            assert_eq!(e["billed_by"], "subscription", "{e}");
            e["credential_fingerprint"].as_str().unwrap().to_owned()
        }
    };
    let a1 = fp("trace-fp-a1").await;
    let a2 = fp("trace-fp-a2").await;
    let b = fp("trace-fp-b").await;
    let u = fp("trace-fp-u").await;
    let count = fp("trace-fp-count").await;
    assert_eq!(a1, a2, "one credential, one fingerprint");
    assert_eq!(a1, count);
    assert_ne!(a1, b, "two credentials, two fingerprints");
    assert_ne!(a1, u);
    assert_ne!(b, u);
    assert!(a1.starts_with("fp_") && a1.len() == 19, "{a1}");
    // The list-price value is still computed.
    let e = tg.wait_for_trace("trace-fp-a1", 1).await.remove(0);
    let value = Decimal::from_str(&e["cost_usd"].to_string().replace('"', "")).unwrap();
    assert!(value > Decimal::ZERO, "{e}");
    tg.stop();

    let secrets = [OAUTH_A, OAUTH_B, USER_KEY];
    let files = files_under(dir.path());
    let lake: Vec<&PathBuf> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert!(!lake.is_empty(), "the lake has files: {files:?}");
    assert!(
        files
            .iter()
            .any(|p| p.starts_with(dir.path().join("data/log"))),
        "the bus log is searched: {files:?}"
    );
    let log = std::fs::read_to_string(dir.path().join("tollgate.log")).unwrap();
    assert!(
        log.contains("TRACE") && log.lines().count() > 100,
        "the process logged at trace level"
    );
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        for secret in secrets {
            assert!(
                memchr::memmem::find(&bytes, secret.as_bytes()).is_none(),
                "{} holds a client credential",
                path.display()
            );
            // Not even a recognisable part of it.
            assert!(
                memchr::memmem::find(&bytes, &secret.as_bytes()[13..40]).is_none(),
                "{} holds part of a client credential",
                path.display()
            );
        }
    }
    let mut rows = 0;
    let mut decoded = String::new();
    for path in lake {
        let json = parquet_as_json(path);
        // Rows of the events table; the rollups and the audit table (whose
        // rows have an event_id too) are searched as well, not counted.
        if path.components().any(|c| c.as_os_str() == "events") {
            rows += json.matches("\"event_id\"").count();
        }
        decoded.push_str(&json);
        for secret in secrets {
            assert!(
                !json.contains(secret) && !json.contains(&secret[13..40]),
                "{} holds a client credential",
                path.display()
            );
        }
    }
    // The five admitted requests (an unknown key is no one's event), and
    // the decoding sees what the search must not: fingerprints, in clear.
    assert_eq!(rows, 5, "every event was decoded and searched");
    for fp in [&a1, &b, &u] {
        assert!(decoded.contains(fp.as_str()), "{fp} in the decoded lake");
    }
}

/// `GET /v1/budgets` rows.
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

/// Waits until the ledger of `budget` holds `tokens` tokens and no
/// request's reservation is left on it; returns it.
async fn ledger_with(tg: &Tollgate, budget: &str, tokens: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = budgets(tg).await;
        if let Some(row) = all.iter().find(|b| {
            b["budget"] == budget && b["spent_tokens"] == tokens && b["reserved_tokens"] == 0
        }) {
            return row.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{budget} never reached {tokens} tokens: {all:?}\n{}",
            tg.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn subscription_requests_are_held_by_token_budgets_but_spend_nothing_in_usd() {
    let mock = subscription_mock().await;
    let dir = tempfile::tempdir().unwrap();
    // A USD budget so small that any API-billed request is refused, and a
    // token budget worth about four mock answers (1359 tokens each).
    let extra = format!(
        "{}\n[[budgets]]\nname = \"eng-usd\"\nscope = \"team\"\nsubject = \"eng\"\nperiod = \"daily\"\nlimit_usd = \"0.000001\"\n\n[[budgets]]\nname = \"bob-tokens\"\nscope = \"user\"\nsubject = \"bob\"\nperiod = \"daily\"\nlimit_tokens = 5000\n",
        sub_key()
    );
    let config = write_config(dir.path(), &mock.url(), &extra);
    let tg = Tollgate::start_with_config(dir.path(), config);
    let per_request = 42 + 17 + 100 + 200 + 1000;

    let mut admitted = 0u64;
    let refusal = loop {
        let r = sub_request(&tg, "/v1/messages", "trace-sub-budget")
            .bearer_auth(OAUTH_A)
            .body(small_body(false))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => {
                admitted += 1;
                r.bytes().await.unwrap();
                ledger_with(&tg, "bob-tokens", admitted * per_request).await;
            }
            // Budget state not read yet right after start: retried.
            503 => tokio::time::sleep(Duration::from_millis(200)).await,
            429 => break r.json::<serde_json::Value>().await.unwrap(),
            other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
        }
        assert!(admitted < 10, "the token budget never refused");
    };
    assert_eq!(
        admitted, 4,
        "5000 tokens hold four answers of {per_request}"
    );
    let msg = refusal["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("bob-tokens") && msg.contains("tokens"),
        "{msg}"
    );

    let usd = ledger_with(&tg, "eng-usd", admitted * per_request).await;
    assert_eq!(
        usd["spent_usd"], "0",
        "subscription value is not spend: {usd}"
    );
    assert_eq!(usd["reserved_usd"], "0", "{usd}");
    // The USD budget is live: a key billed to tollgate's account is refused.
    let r = tg
        .post("/v1/messages")
        .body(small_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"].as_str().unwrap().contains("eng-usd"),
        "{e}"
    );
    assert!(tg.metric("tollgate_subscription_value_usd_total").await > 0.0);
    assert_eq!(tg.metric("tollgate_cost_usd_total").await, 0.0);

    // The spend API shows the value per team and user as its own figure.
    let deadline = Instant::now() + Duration::from_secs(30);
    let bob = loop {
        let spend: serde_json::Value = crate::support::client()
            .get(format!("{}/v1/spend?group_by=team,user", tg.url))
            .bearer_auth(crate::support::ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let row = spend["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["user"] == "bob" && r["requests"].as_u64() >= Some(admitted))
            .cloned();
        if let Some(row) = row {
            break row;
        }
        assert!(Instant::now() < deadline, "no spend row for bob: {spend}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(bob["spend_usd"], "0", "{bob}");
    let value = Decimal::from_str(bob["subscription_value_usd"].as_str().unwrap()).unwrap();
    assert!(value > Decimal::ZERO, "{bob}");
    assert_eq!(bob["total_tokens"].as_u64(), Some(admitted * per_request));
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_with_its_own_oauth_token_and_a_tollgate_custom_header_is_passed_through() {
    let mock = subscription_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mock.url(), &sub_key());
    let tg = Tollgate::start_with_config(dir.path(), config);

    let headers = format!("x-tollgate-api-key: {SUB_KEY}\nx-tollgate-trace-id: trace-cc-sub");
    let out = run_claude_output(
        &tg.url,
        ("ANTHROPIC_AUTH_TOKEN", OAUTH_A),
        &headers,
        &[("CLAUDE_CODE_MAX_RETRIES", "1")],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "claude failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["is_error"], false, "{v}");
    assert!(
        v["result"]
            .as_str()
            .unwrap_or("")
            .contains("Hello from the mock provider"),
        "{v}"
    );

    let seen = mock.received();
    let messages: Vec<_> = seen
        .iter()
        .filter(|r| r.path_and_query.starts_with("/v1/messages"))
        .collect();
    assert!(!messages.is_empty());
    for r in &messages {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {OAUTH_A}").as_str())
        );
        assert!(r.header("x-api-key").is_none());
        assert!(r.header("x-tollgate-api-key").is_none());
    }
    let body: serde_json::Value = serde_json::from_slice(&messages[0].body).unwrap();
    assert!(
        body["system"][0]["text"]
            .as_str()
            .unwrap_or("")
            .starts_with("x-anthropic-billing-header:"),
        "the billing header reached Anthropic: {}",
        body["system"]
    );
    assert!(body["metadata"]["user_id"].is_string());

    let events = tg.wait_for_trace_at_least("trace-cc-sub", 1).await;
    for e in events.iter().filter(|e| e["endpoint"] == "messages") {
        assert_eq!(e["billed_by"], "subscription", "{e}");
        assert_eq!(e["user"], "bob");
        assert_eq!(e["status"], 200);
        assert!(
            e["credential_fingerprint"]
                .as_str()
                .unwrap()
                .starts_with("fp_")
        );
        assert!(e["client"].as_str().unwrap().starts_with("claude-cli/"));
    }
    let log = tg.log();
    assert!(!log.contains(OAUTH_A), "the token is not logged");

    // Claude Code's own subscription login (`claude setup-token`'s
    // CLAUDE_CODE_OAUTH_TOKEN), the Max-plan mode proper: its OAuth beta
    // and token reach Anthropic as sent.
    let before = mock.received().len();
    let headers = format!("x-tollgate-api-key: {SUB_KEY}\nx-tollgate-trace-id: trace-cc-oauth");
    let out = run_claude_output(
        &tg.url,
        ("CLAUDE_CODE_OAUTH_TOKEN", OAUTH_B),
        &headers,
        &[("CLAUDE_CODE_MAX_RETRIES", "1")],
    )
    .await;
    assert!(
        out.status.success(),
        "claude failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = mock.received();
    let oauth: Vec<_> = seen[before..]
        .iter()
        .filter(|r| r.path_and_query.starts_with("/v1/messages"))
        .collect();
    assert!(!oauth.is_empty());
    for r in &oauth {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {OAUTH_B}").as_str())
        );
        assert!(
            r.header("anthropic-beta")
                .unwrap_or("")
                .contains("oauth-2025-04-20"),
            "{:?}",
            r.header("anthropic-beta")
        );
    }
    let events = tg.wait_for_trace_at_least("trace-cc-oauth", 1).await;
    let fp_b = events[0]["credential_fingerprint"].as_str().unwrap();
    let fp_a = tg.wait_for_trace_at_least("trace-cc-sub", 1).await[0]["credential_fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(fp_a, fp_b, "two logins, two fingerprints");
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_refuses_to_start_when_a_plain_key_reaches_anthropic_without_a_provider_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9", &sub_key());
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&format!("api_key = \"{PROVIDER_KEY}\""), "api_key = \"\"");
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("providers.anthropic.api_key")
            && err.contains("key_alice")
            && err.contains("passthrough = true"),
        "{err}"
    );
}
