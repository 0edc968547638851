//! The control plane's later entities through a real `tollgate serve`:
//! webhooks added over the admin API while it runs and delivered to,
//! routes created and used by a key, teams and workspaces with
//! workspace-limited tokens, and the audit lake table.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::budgets::{body_of, budget, post_once_admitting, settled_spend, start_receiver};
use crate::control::{admin, eventually};
use crate::support::{ADMIN, Tollgate, start_mock, write_config};

/// Tokens of these tests: an `admin:write` one, a reader, and a
/// budgets-only one.
const TOKENS: &str = r#"
[[api.scoped_tokens]]
token = "tok-admin"
scopes = ["admin:write"]
name = "platform"

[[api.scoped_tokens]]
token = "tok-read"
scopes = ["admin:read"]
name = "auditor"

[[api.scoped_tokens]]
token = "tok-budgets"
scopes = ["budgets:write"]
name = "ops-bot"
"#;

/// A free local port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_added_over_the_api_while_serving_gets_the_next_budget_alert_and_its_secret_is_never_shown()
 {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{TOKENS}{}", budget("eng-alerts", "0.01"));
    let tg = Tollgate::start_with_config(dir.path(), write_config(dir.path(), &mock.url(), &extra));
    let port = free_port();
    let got = Arc::new(Mutex::new(Vec::new()));
    start_receiver(port, got.clone()).await;
    let url = format!("http://127.0.0.1:{port}/hook");
    let hook = serde_json::json!({"url": url, "secret": "hook-s3cret"});
    // Scope and validation first: nothing is written.
    let (status, err) = admin(
        &tg,
        http::Method::POST,
        "/v1/admin/webhooks",
        "tok-budgets",
        Some(hook.clone()),
    )
    .await;
    assert_eq!(status, 403);
    assert!(err.to_string().contains("admin:write"), "{err}");
    let bad = serde_json::json!({"url": "ftp://x/hook"});
    let (status, err) = admin(
        &tg,
        http::Method::POST,
        "/v1/admin/webhooks",
        "tok-admin",
        Some(bad),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert!(err.to_string().contains("invalid url"), "{err}");
    let bad = serde_json::json!({"url": url, "retries": 3});
    let (status, err) = admin(
        &tg,
        http::Method::POST,
        "/v1/admin/webhooks",
        "tok-admin",
        Some(bad),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert!(err.to_string().contains("retries"), "{err}");

    let (status, created) = admin(
        &tg,
        http::Method::POST,
        "/v1/admin/webhooks",
        "tok-admin",
        Some(hook),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["secret"], "set");
    assert!(
        created["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let (_, listed) = admin(
        &tg,
        http::Method::GET,
        "/v1/admin/webhooks",
        "tok-read",
        None,
    )
    .await;
    let (_, audit) = admin(
        &tg,
        http::Method::GET,
        "/v1/audit?kind=webhook",
        "tok-read",
        None,
    )
    .await;
    for shown in [created.to_string(), listed.to_string(), audit.to_string()] {
        assert!(
            !shown.contains("hook-s3cret") && !shown.contains("/hook"),
            "{shown}"
        );
    }
    assert!(listed.to_string().contains(&id), "{listed}");
    assert_eq!(audit["data"][0]["actor"], "platform", "{audit}");

    // 3 × $0.002256 = 67.7% of $0.01: the 50% alert, to the new webhook.
    let body = body_of(100);
    for _ in 0..3 {
        assert_eq!(post_once_admitting(&tg, &body).await, 200);
        settled_spend(&tg, "eng-alerts").await;
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            !got.lock().unwrap().is_empty()
        })
        .await,
        "the alert never reached the webhook added over the API: {}",
        tg.log()
    );
    let (headers, delivered) = got.lock().unwrap()[0].clone();
    let ts = headers["x-tollgate-timestamp"].to_str().unwrap();
    let expected =
        tollgate::accounting::notify::signature("hook-s3cret", ts.parse().unwrap(), &delivered);
    assert_eq!(headers["x-tollgate-signature"], expected.as_str());
    let alert: serde_json::Value = serde_json::from_slice(&delivered).unwrap();
    assert_eq!(
        (alert["budget"].as_str(), alert["threshold"].as_u64()),
        (Some("eng-alerts"), Some(50))
    );

    let path = format!("/v1/admin/webhooks/{id}");
    let (status, _) = admin(&tg, http::Method::DELETE, &path, ADMIN, None).await;
    assert_eq!(status, 200);
    let (status, _) = admin(&tg, http::Method::GET, &path, "tok-read", None).await;
    assert_eq!(status, 404);
    tg.stop();
}
