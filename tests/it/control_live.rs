//! The control plane's later entities through a real `tollgate serve`:
//! webhooks added over the admin API while it runs and delivered to,
//! routes created and used by a key, teams and workspaces with
//! workspace-limited tokens, and the audit lake table.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::budgets::{body_of, budget, post_once_admitting, settled_spend, start_receiver};
use crate::control::admin;
use crate::support::{ADMIN, Tollgate, WithLog, free_port, poll_until, start_mock, write_config};

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
    poll_until(
        "the alert reaches the webhook added over the API",
        Duration::from_secs(30),
        || async {
            match got.lock().unwrap().is_empty() {
                false => Ok(()),
                true => Err(WithLog("nothing delivered".into(), vec![&tg])),
            }
        },
    )
    .await;
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

/// Sends one plain request with `key`; its status.
async fn status_of(tg: &Tollgate, key: &str) -> u16 {
    crate::control::status_with(tg, key).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_created_over_the_api_takes_a_keys_requests_once_the_key_points_at_it() {
    let mock = start_mock().await;
    let backup = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{TOKENS}\n[providers.backup]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"{}\"\n",
        backup.url(),
        crate::support::PROVIDER_KEY
    );
    let tg = Tollgate::start_with_config(dir.path(), write_config(dir.path(), &mock.url(), &extra));
    let new_key = serde_json::json!({"team": "eng", "user": "carol", "provider": "anthropic"});
    let (status, created) = admin(
        &tg,
        http::Method::POST,
        "/v1/admin/keys",
        ADMIN,
        Some(new_key),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (id, key) = (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    );
    poll_until(
        "the new key is answered",
        Duration::from_secs(5),
        || async {
            match status_of(&tg, &key).await {
                200 => Ok(()),
                s => Err(format!("answered {s}")),
            }
        },
    )
    .await;

    // Invalid routes are refused naming the field; nothing is written.
    let post = |body: serde_json::Value, token: &'static str| {
        let tg = &tg;
        async move {
            admin(
                tg,
                http::Method::POST,
                "/v1/admin/routes",
                token,
                Some(body),
            )
            .await
        }
    };
    let good = serde_json::json!({"name": "to-backup", "strategy": "fallback",
        "targets": [{"provider": "backup"}, {"provider": "anthropic"}]});
    let (status, err) = post(good.clone(), "tok-budgets").await;
    assert_eq!(status, 403);
    assert!(err.to_string().contains("admin:write"), "{err}");
    for (bad, field) in [
        (
            serde_json::json!({"name": "r", "targets": [{"provider": "nowhere"}]}),
            "targets[0].provider",
        ),
        (
            serde_json::json!({"name": "r", "targets": [{"provider": "backup", "wieght": 2}]}),
            "targets[0].wieght",
        ),
        (
            serde_json::json!({"name": "r", "targets": [{"provider": "backup"}], "on_status_codes": [200, 529]}),
            "on_status_codes",
        ),
        (
            serde_json::json!({"name": "r", "targets": [{"provider": "backup"}], "retry": {"attempts": 2, "on_status_codes": [204]}}),
            "retry.on_status_codes",
        ),
        (
            serde_json::json!({"name": "r", "strategy": "conditional", "targets": [{"provider": "backup"}],
            "conditions": [{"query": {"model": {"$regex": "^claude"}}, "then": "backup"}]}),
            "conditions[0].query.model",
        ),
    ] {
        let (status, err) = post(bad, "tok-admin").await;
        assert_eq!(status, 400, "{err}");
        assert!(
            err.to_string().contains(&format!("invalid {field}")),
            "{field}: {err}"
        );
    }
    let (_, listed) = admin(&tg, http::Method::GET, "/v1/admin/routes", "tok-read", None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 0, "{listed}");

    let (status, made) = post(good, "tok-admin").await;
    assert_eq!(status, 201, "{made}");
    // A stream in flight on the key's old route while the key moves.
    let r = crate::support::client()
        .post(format!("{}/v1/messages", tg.url))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .header("x-mock-scenario", "slow-stream:200")
        .body(r#"{"model":"claude-sonnet-4-5","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let path = format!("/v1/admin/keys/{id}");
    let (status, patched) = admin(
        &tg,
        http::Method::PATCH,
        &path,
        ADMIN,
        Some(serde_json::json!({"route": "to-backup"})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["route"], "to-backup");
    let rest = r.text().await.unwrap();
    assert!(
        rest.contains("message_stop"),
        "the request in flight did not complete: {rest}"
    );
    let before = backup.received().len();
    poll_until(
        "requests of the key reach the route's target within a second",
        Duration::from_secs(1),
        || async {
            let status = status_of(&tg, &key).await;
            match status == 200 && backup.received().len() > before {
                true => Ok(()),
                false => Err(format!("answered {status}; the target got none")),
            }
        },
    )
    .await;
    // A route keys use cannot be removed; the audit names both changes.
    let (status, err) = admin(
        &tg,
        http::Method::DELETE,
        "/v1/admin/routes/to-backup",
        ADMIN,
        None,
    )
    .await;
    assert_eq!(status, 409, "{err}");
    assert!(err.to_string().contains(&id), "{err}");
    let (_, audit) = admin(
        &tg,
        http::Method::GET,
        "/v1/audit?kind=route",
        "tok-read",
        None,
    )
    .await;
    assert_eq!(audit["data"][0]["kind"], "route.set", "{audit}");
    assert_eq!(audit["data"][0]["actor"], "platform", "{audit}");
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workspace_limited_token_sees_and_changes_only_its_workspaces_keys_budgets_and_teams() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{TOKENS}\n[[api.scoped_tokens]]\ntoken = \"tok-acme\"\nscopes = [\"keys:write\", \"budgets:write\"]\nworkspace = \"acme\"\nname = \"acme-lead\"\n"
    );
    let tg = Tollgate::start_with_config(dir.path(), write_config(dir.path(), &mock.url(), &extra));
    let call = |method: http::Method,
                path: &'static str,
                token: &'static str,
                body: Option<serde_json::Value>| {
        let tg = &tg;
        async move { admin(tg, method, path, token, body).await }
    };
    let (status, err) = call(
        http::Method::POST,
        "/v1/admin/workspaces",
        "tok-acme",
        Some(serde_json::json!({"name": "acme"})),
    )
    .await;
    assert_eq!(status, 403);
    assert!(err.to_string().contains("admin:write"), "{err}");
    for ws in ["acme", "beta"] {
        let body =
            serde_json::json!({"name": ws, "description": format!("the {ws} business unit")});
        let (status, made) = call(
            http::Method::POST,
            "/v1/admin/workspaces",
            "tok-admin",
            Some(body),
        )
        .await;
        assert_eq!(status, 201, "{made}");
    }
    let (status, err) = call(
        http::Method::POST,
        "/v1/admin/teams",
        ADMIN,
        Some(serde_json::json!({"name": "x", "workspace": "nowhere"})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(err.to_string().contains("invalid workspace"), "{err}");
    let (status, err) = call(
        http::Method::POST,
        "/v1/admin/teams",
        ADMIN,
        Some(serde_json::json!({"name": "x", "colour": "red"})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(err.to_string().contains("colour"), "{err}");

    // Teams: its own workspace by default; another one is 403 naming its own.
    let team = serde_json::json!({"name": "eng", "description": "platform", "metadata": {"cost_center": "42"}});
    let (status, made) = call(
        http::Method::POST,
        "/v1/admin/teams",
        "tok-acme",
        Some(team),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["workspace"], "acme");
    let (status, err) = call(
        http::Method::POST,
        "/v1/admin/teams",
        "tok-acme",
        Some(serde_json::json!({"name": "ops", "workspace": "beta"})),
    )
    .await;
    assert_eq!(status, 403);
    assert!(err.to_string().contains("workspace \\\"acme\\\""), "{err}");
    let (status, _) = call(
        http::Method::POST,
        "/v1/admin/teams",
        ADMIN,
        Some(serde_json::json!({"name": "ops", "workspace": "beta"})),
    )
    .await;
    assert_eq!(status, 201);
    let (_, teams) = call(http::Method::GET, "/v1/admin/teams", "tok-acme", None).await;
    let names: Vec<&str> = teams["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["workspace"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme"], "{teams}");
    let (status, _) = call(
        http::Method::GET,
        "/v1/admin/teams/beta/ops",
        "tok-acme",
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        http::Method::DELETE,
        "/v1/admin/teams/beta/ops",
        "tok-acme",
        None,
    )
    .await;
    assert_eq!(status, 403);

    // Keys: created in its workspace; another workspace's are neither
    // listed nor changeable.
    let (status, err) = call(
        http::Method::POST,
        "/v1/admin/keys",
        "tok-acme",
        Some(serde_json::json!({"team": "ops", "user": "u", "workspace": "beta"})),
    )
    .await;
    assert_eq!(status, 403, "{err}");
    let (status, mine) = call(
        http::Method::POST,
        "/v1/admin/keys",
        "tok-acme",
        Some(serde_json::json!({"team": "eng", "user": "dan"})),
    )
    .await;
    assert_eq!(status, 201, "{mine}");
    assert_eq!(mine["workspace"], "acme");
    let (status, theirs) = call(
        http::Method::POST,
        "/v1/admin/keys",
        ADMIN,
        Some(serde_json::json!({"team": "ops", "user": "eve", "workspace": "beta"})),
    )
    .await;
    assert_eq!(status, 201, "{theirs}");
    let (_, keys) = call(http::Method::GET, "/v1/admin/keys", "tok-acme", None).await;
    assert!(
        keys["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["workspace"] == "acme"),
        "{keys}"
    );
    let theirs_path = format!("/v1/admin/keys/{}", theirs["id"].as_str().unwrap());
    let (status, err) = admin(&tg, http::Method::DELETE, &theirs_path, "tok-acme", None).await;
    assert_eq!(status, 403);
    assert!(err.to_string().contains("acme"), "{err}");

    // Budgets: its workspace's budget only.
    let ws_budget = serde_json::json!({"name": "acme-month", "scope": "workspace", "subject": "acme", "period": "monthly", "limit_usd": "500"});
    let (status, made) = call(
        http::Method::POST,
        "/v1/admin/budgets",
        "tok-acme",
        Some(ws_budget),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let other = serde_json::json!({"name": "beta-month", "scope": "workspace", "subject": "beta", "period": "monthly", "limit_usd": "500"});
    let (status, _) = call(
        http::Method::POST,
        "/v1/admin/budgets",
        "tok-acme",
        Some(other),
    )
    .await;
    assert_eq!(status, 403);

    // A workspace with teams or keys stays; the audit names who did what.
    let (status, err) = call(
        http::Method::DELETE,
        "/v1/admin/workspaces/acme",
        ADMIN,
        None,
    )
    .await;
    assert_eq!(status, 409, "{err}");
    let (_, audit) = call(http::Method::GET, "/v1/audit?kind=team", "tok-read", None).await;
    let actors: Vec<(&str, &str)> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert!(actors.contains(&("acme/eng", "acme-lead")), "{audit}");
    let (_, audit) = call(http::Method::GET, "/v1/audit?kind=team", "tok-acme", None).await;
    assert_eq!(
        audit["data"].as_array().unwrap().len(),
        1,
        "a limited token sees its workspace's changes only: {audit}"
    );
    tg.stop();
}

/// Rows of one `POST /v1/sql` query as an admin, and the answer's text.
async fn sql(tg: &Tollgate, query: &str) -> (Vec<serde_json::Value>, String) {
    let r = crate::support::client()
        .post(format!("{}/v1/sql", tg.url))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({ "sql": query }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    (v["rows"].as_array().cloned().unwrap_or_default(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_over_the_api_shows_up_in_the_audit_lake_table_without_secrets() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start_with_config(dir.path(), write_config(dir.path(), &mock.url(), TOKENS));
    let budget = serde_json::json!({"name": "eng-daily", "scope": "team", "subject": "eng", "period": "daily", "limit_usd": "25"});
    let (status, made) = admin(
        &tg,
        http::Method::POST,
        "/v1/admin/budgets",
        "tok-budgets",
        Some(budget),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let hook = serde_json::json!({"url": "https://hooks.example.com/services/T0/B0/XyZpath", "secret": "hook-s3cret"});
    let (status, made) = admin(
        &tg,
        http::Method::POST,
        "/v1/admin/webhooks",
        "tok-admin",
        Some(hook),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let (status, made) = admin(
        &tg,
        http::Method::POST,
        "/v1/admin/keys",
        ADMIN,
        Some(serde_json::json!({"team": "eng", "user": "fay"})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let key = made["key"].as_str().unwrap().to_owned();

    let query = "SELECT kind, entity_id, actor, after FROM audit WHERE kind = 'budget.set' AND actor = 'ops-bot'";
    poll_until(
        "the budget change reaches the audit table",
        Duration::from_secs(30),
        || async {
            match sql(&tg, query).await.0.is_empty() {
                false => Ok(()),
                true => Err(WithLog("no row yet".into(), vec![&tg])),
            }
        },
    )
    .await;
    let (rows, _) = sql(&tg, query).await;
    assert_eq!(rows[0]["entity_id"], "eng-daily");
    assert!(
        rows[0]["after"]
            .as_str()
            .unwrap()
            .contains("\"limit_usd\":\"25\""),
        "{rows:?}"
    );
    // Every change is there once (the file's key too), and no secret.
    let all = "SELECT kind, entity_id, actor, before, after, day FROM audit ORDER BY bus_offset";
    poll_until(
        "every change reaches the audit table",
        Duration::from_secs(30),
        || async {
            let (rows, _) = sql(&tg, all).await;
            let created = rows.iter().filter(|r| r["kind"] == "key.created").count();
            match rows.iter().any(|r| r["kind"] == "webhook.set") && created >= 2 {
                true => Ok(()),
                false => Err(format!("{} rows so far", rows.len())),
            }
        },
    )
    .await;
    let (rows, text) = sql(&tg, all).await;
    let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "budget.set").count(),
        1,
        "{kinds:?}"
    );
    for secret in ["hook-s3cret", "XyZpath", key.as_str(), crate::support::KEY] {
        assert!(
            !text.contains(secret),
            "the audit table holds a secret: {text}"
        );
    }
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_cli_lists_creates_and_deletes_routes_webhooks_teams_and_workspaces() {
    use crate::control::cli;
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start_with_config(dir.path(), write_config(dir.path(), &mock.url(), TOKENS));
    let route = r#"{"strategy": "fallback", "targets": [{"provider": "anthropic"}]}"#;
    let out = cli(
        &tg,
        &["admin", "routes", "create", "main", "--json", route],
        "tok-admin",
    );
    assert!(out.contains("name: main"), "{out}");
    let table = cli(&tg, &["admin", "routes", "list"], "tok-read");
    assert!(
        table.starts_with("NAME") && table.contains("fallback") && table.contains("anthropic"),
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_str(&cli(
        &tg,
        &["admin", "routes", "list", "--output", "json"],
        "tok-read",
    ))
    .unwrap();
    assert_eq!(json["data"][0]["route"]["strategy"], "fallback", "{json}");

    let hook = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "admin",
            "webhooks",
            "create",
            "--webhook-url",
            "https://hooks.example.com/T0/SECRETPATH",
        ])
        .args([
            "--format",
            "slack",
            "--secret-env",
            "HOOK_SECRET",
            "--id",
            "ops-slack",
        ])
        .args(["--url", &tg.url, "--token", "tok-admin", "--output", "json"])
        .env("HOOK_SECRET", "hook-s3cret")
        .output()
        .unwrap();
    let made = String::from_utf8_lossy(&hook.stdout);
    assert!(
        hook.status.success(),
        "{}",
        String::from_utf8_lossy(&hook.stderr)
    );
    let made: serde_json::Value = serde_json::from_str(&made).unwrap();
    assert_eq!(
        (made["id"].as_str(), made["secret"].as_str()),
        (Some("ops-slack"), Some("set"))
    );
    let table = cli(&tg, &["admin", "webhooks", "list"], "tok-read");
    assert!(
        table.contains("ops-slack") && table.contains("slack"),
        "{table}"
    );
    assert!(
        !table.contains("SECRETPATH") && !table.contains("hook-s3cret"),
        "{table}"
    );

    cli(
        &tg,
        &[
            "admin",
            "workspaces",
            "create",
            "beta",
            "--description",
            "Beta",
        ],
        "tok-admin",
    );
    cli(
        &tg,
        &["admin", "teams", "create", "eng", "--workspace", "beta"],
        "tok-admin",
    );
    let teams = cli(&tg, &["admin", "teams", "list"], "tok-read");
    assert!(teams.contains("beta") && teams.contains("eng"), "{teams}");
    assert!(cli(&tg, &["admin", "workspaces", "list"], "tok-read").contains("Beta"));

    // Deletes, each gone afterwards.
    cli(
        &tg,
        &["admin", "teams", "delete", "eng", "--workspace", "beta"],
        "tok-admin",
    );
    cli(&tg, &["admin", "workspaces", "delete", "beta"], "tok-admin");
    cli(
        &tg,
        &["admin", "webhooks", "delete", "ops-slack"],
        "tok-admin",
    );
    cli(&tg, &["admin", "routes", "delete", "main"], "tok-admin");
    for what in ["routes", "webhooks", "teams", "workspaces"] {
        let list = cli(
            &tg,
            &["admin", what, "list", "--output", "json"],
            "tok-read",
        );
        let list: serde_json::Value = serde_json::from_str(&list).unwrap();
        assert_eq!(list["data"].as_array().unwrap().len(), 0, "{what}: {list}");
    }
    // A refused command fails naming the scope.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "admin", "routes", "delete", "x", "--url", &tg.url, "--token", "tok-read",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("admin:write"));
    tg.stop();
}
