//! The control plane through a real `tollgate serve` on the embedded bus:
//! keys created and revoked over the admin API and used (or refused)
//! within a second while a request in flight completes; a budget raised
//! while requests are refused; the audit log; scoped tokens; `tollgate
//! apply` writing exactly the difference; state read before the first
//! request after a restart; and a spend-limits client written from
//! Anthropic's published shapes.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::budgets::body_of;
use crate::support::{ADMIN, KEY, Tollgate, client, poll_until, start_mock, write_config};

/// Scoped tokens of the test configs: one per write scope, one reader.
const SCOPED: &str = r#"
[[api.scoped_tokens]]
token = "tok-budgets"
scopes = ["budgets:write"]
name = "ops-bot"

[[api.scoped_tokens]]
token = "tok-keys"
scopes = ["keys:write"]
name = "onboarding"

[[api.scoped_tokens]]
token = "tok-read"
scopes = ["admin:read"]
name = "auditor"
"#;

/// A small budget the first request already exceeds (its worst case is
/// far above a hundredth of a cent).
const TINY_BUDGET: &str = "\n[[budgets]]\nname = \"eng-daily\"\nscope = \"team\"\nsubject = \"eng\"\nperiod = \"daily\"\nlimit_usd = \"0.0001\"\n";

const STREAM_BODY: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

/// Sends an admin request; answers status and JSON body.
pub async fn admin(
    tg: &Tollgate,
    method: http::Method,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = client()
        .request(method, format!("{}{path}", tg.url))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// Status of one plain request with `key`.
pub async fn status_with(tg: &Tollgate, key: &str) -> u16 {
    client()
        .post(format!("{}/v1/messages", tg.url))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .body(body_of(200))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits until `key` is answered `want` by `tg` (a control change took
/// effect), failing with `what` and the last status after `within`.
pub async fn answered(tg: &Tollgate, key: &str, want: u16, within: Duration, what: &str) {
    poll_until(what, within, || async {
        match status_with(tg, key).await {
            s if s == want => Ok(()),
            s => Err(format!("answered {s}, wanted {want}")),
        }
    })
    .await
}

/// The audit entries of `kind`.
async fn audit(tg: &Tollgate, query: &str) -> (String, Vec<serde_json::Value>) {
    let r = client()
        .get(format!("{}/v1/audit?{query}", tg.url))
        .bearer_auth("tok-read")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    (text, v["data"].as_array().cloned().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_created_over_the_api_works_at_once_and_a_revoked_one_is_refused_while_a_request_in_flight_completes()
 {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start_with_config(dir.path(), write_config(dir.path(), &mock.url(), SCOPED));
    let body = serde_json::json!({"team": "eng", "user": "bob", "workspace": "acme",
        "metadata": {"ticket": "IT-42"}});
    let (status, created) = admin(
        &tg,
        http::Method::POST,
        "/v1/admin/keys",
        "tok-keys",
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (id, key) = (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    );
    assert!(created["hash"].as_str().unwrap().starts_with("sha256:"));
    answered(
        &tg,
        &key,
        200,
        Duration::from_secs(1),
        "the new key was not accepted within a second",
    )
    .await;
    // Only the hash is kept: the listing holds no key.
    let (_, listed) = admin(&tg, http::Method::GET, "/v1/admin/keys", "tok-read", None).await;
    assert!(!listed.to_string().contains(&key));
    assert!(
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == id.as_str())
    );

    // A stream in flight with the key while it is revoked.
    let r = client()
        .post(format!("{}/v1/messages", tg.url))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .header("x-mock-scenario", "slow-stream:200")
        .body(STREAM_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    let (status, _) = admin(
        &tg,
        http::Method::DELETE,
        &format!("/v1/admin/keys/{id}"),
        "tok-keys",
        None,
    )
    .await;
    assert_eq!(status, 200);
    answered(
        &tg,
        &key,
        401,
        Duration::from_secs(1),
        "the revoked key was still accepted after a second",
    )
    .await;
    let mut rest = String::from_utf8_lossy(&first).into_owned();
    while let Some(chunk) = stream.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(
        rest.contains("message_stop"),
        "the request in flight did not complete: {rest}"
    );
    // The file's key was never touched.
    assert_eq!(status_with(&tg, KEY).await, 200);

    let (text, entries) = audit(&tg, "kind=key").await;
    let kinds: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e["id"] == id.as_str())
        .map(|e| (e["kind"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("key.created", "onboarding"), ("key.revoked", "onboarding")]
    );
    assert!(!text.contains(&key), "the audit log holds the key itself");
    assert!(!text.contains(KEY), "the audit log holds the file's key");
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn raising_a_budget_admits_requests_it_refused_and_the_audit_log_names_the_actor() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{SCOPED}{TINY_BUDGET}");
    let tg = Tollgate::start_with_config(dir.path(), write_config(dir.path(), &mock.url(), &extra));
    answered(
        &tg,
        KEY,
        429,
        Duration::from_secs(30),
        "the tiny budget never refused",
    )
    .await;
    let raised = serde_json::json!({"scope": "team", "subject": "eng", "period": "daily", "limit_usd": "100"});
    // Wrong scopes are refused, naming the scope.
    let (status, err) = admin(
        &tg,
        http::Method::PUT,
        "/v1/admin/budgets/eng-daily",
        "tok-keys",
        Some(raised.clone()),
    )
    .await;
    assert_eq!(status, 403);
    assert!(err.to_string().contains("budgets:write"), "{err}");
    let (status, err) = admin(
        &tg,
        http::Method::POST,
        "/v1/admin/keys",
        "tok-read",
        Some(serde_json::json!({"team": "eng", "user": "x"})),
    )
    .await;
    assert_eq!(status, 403);
    assert!(err.to_string().contains("keys:write"), "{err}");
    // Invalid writes name the field, and change nothing.
    let (status, err) = admin(&tg, http::Method::PUT, "/v1/admin/budgets/eng-daily", "tok-budgets",
        Some(serde_json::json!({"scope": "team", "period": "daily", "limit_usd": "5", "colour": "red"}))).await;
    assert_eq!(status, 400);
    assert!(err.to_string().contains("colour"), "{err}");
    let (status, err) = admin(
        &tg,
        http::Method::POST,
        "/v1/admin/keys",
        "tok-keys",
        Some(serde_json::json!({"team": "eng", "user": "x", "provider": "nope"})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(err.to_string().contains("provider"), "{err}");

    let (status, body) = admin(
        &tg,
        http::Method::PUT,
        "/v1/admin/budgets/eng-daily",
        "tok-budgets",
        Some(raised),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    answered(
        &tg,
        KEY,
        200,
        Duration::from_secs(1),
        "requests were still refused a second after the budget was raised",
    )
    .await;
    let (_, entries) = audit(&tg, "kind=budget.set&actor=ops-bot").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["before"]["budget"]["limit_usd"], "0.0001");
    assert_eq!(entries[0]["after"]["budget"]["limit_usd"], "100");
    // A rate limit set over the API holds back the next requests.
    let rpm = serde_json::json!({"scope": "team", "subject": "eng", "requests_per_minute": 1});
    let (status, body) = admin(
        &tg,
        http::Method::PUT,
        "/v1/admin/rate_limits/eng-rpm",
        "tok-budgets",
        Some(rpm),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    answered(
        &tg,
        KEY,
        429,
        Duration::from_secs(1),
        "the new rate limit did not refuse within a second",
    )
    .await;
    let (_, limits) = audit(&tg, "kind=rate_limit").await;
    assert_eq!(limits.len(), 1, "{limits:?}");
    let (_, from_file) = audit(&tg, "actor=config-file").await;
    assert!(
        from_file
            .iter()
            .any(|e| e["kind"] == "budget.set" && e["id"] == "eng-daily")
    );
    tg.stop();
}

/// How much the processes of `dir` logged so far.
fn tg_log_len(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("tollgate.log")).map_or(0, |l| l.len())
}

/// Runs `tollgate apply` on `config`; answers (stdout, stderr).
fn apply(config: &Path, dry_run: bool) -> (String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(["apply", "-f"]).arg(config);
    if dry_run {
        cmd.arg("--dry-run");
    }
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "apply failed: {stderr}");
    (stdout, stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_writes_exactly_the_difference_and_a_restart_has_the_state_before_its_first_request()
{
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mock.url(), SCOPED);
    let tg = Tollgate::start_with_config(dir.path(), config.clone());
    let (status, created) = admin(
        &tg,
        http::Method::POST,
        "/v1/admin/keys",
        ADMIN,
        Some(serde_json::json!({"team": "eng", "user": "carol"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    tg.kill();

    let (plan, summary) = apply(&config, true);
    assert!(
        plan.is_empty() && summary.contains("would write 0"),
        "{plan}{summary}"
    );
    // A changed file: one budget more, the rest equal.
    let changed = write_config(
        dir.path(),
        &mock.url(),
        &format!("{SCOPED}{}", crate::budgets::budget("eng-cap", "50")),
    );
    let (plan, _) = apply(&changed, true);
    let lines: Vec<&str> = plan.lines().collect();
    assert_eq!(lines.len(), 1, "{plan}");
    assert!(
        lines[0].starts_with("budget.set") && lines[0].contains("eng-cap"),
        "{plan}"
    );
    let (_, summary) = apply(&changed, false);
    assert!(summary.contains("wrote 1"), "{summary}");
    let (_, summary) = apply(&changed, false);
    assert!(summary.contains("wrote 0"), "{summary}");

    // The restarted process read the topic before it listened: the
    // API-made key works on the very first request, and the budget is there.
    let logged_before = tg_log_len(dir.path());
    let tg = Tollgate::start_with_config(dir.path(), changed);
    assert_eq!(status_with(&tg, &key).await, 200);
    let (_, budgets) = admin(
        &tg,
        http::Method::GET,
        "/v1/admin/budgets/eng-cap",
        "tok-read",
        None,
    )
    .await;
    assert_eq!(budgets["budget"]["limit_usd"], "50");
    assert_eq!(budgets["origin"], "file");
    assert!(
        !tg.log()[logged_before..].contains("applying the config file's changes"),
        "the restart rewrote an applied file"
    );
    tg.stop();
}

/// Runs the `tollgate` CLI against `tg`'s API with `token`; its stdout.
pub fn cli(tg: &Tollgate, args: &[&str], token: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .args(["--url", &tg.url, "--token", token])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tollgate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Anthropic's spend-limit scope, written from its published API shapes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum SpendScope {
    User { user_id: String },
    RbacGroup { rbac_group_id: String },
    Organization,
}

/// A spend limit as Anthropic's Admin API answers it.
#[derive(Debug, Clone, Deserialize)]
struct SpendLimit {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    amount: Option<String>,
    currency: String,
    period: String,
    scope: SpendScope,
    #[allow(dead_code)]
    created_at: chrono::DateTime<chrono::Utc>,
    is_enabled: bool,
}

/// The list answer.
#[derive(Debug, Deserialize)]
struct SpendLimitPage {
    data: Vec<SpendLimit>,
    next_page: Option<String>,
}

/// A minimal spend-limits client: base URL and admin key, as a client of
/// Anthropic's API is configured.
struct SpendLimits {
    base: String,
    key: String,
}

impl SpendLimits {
    fn req(&self, method: http::Method, path: &str) -> reqwest::RequestBuilder {
        client()
            .request(
                method,
                format!("{}/v1/organizations/spend_limits{path}", self.base),
            )
            .header("x-api-key", &self.key)
            .header("anthropic-version", "2023-06-01")
    }

    async fn set(&self, scope: SpendScope, amount: Option<&str>, period: &str) -> SpendLimit {
        let body = serde_json::json!({"scope": scope, "amount": amount, "period": period});
        let r = self
            .req(http::Method::POST, "")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    async fn list(&self) -> SpendLimitPage {
        self.req(http::Method::GET, "?limit=100")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn get(&self, id: &str) -> Option<SpendLimit> {
        let r = self
            .req(http::Method::GET, &format!("/{id}"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            Some(r.json().await.unwrap())
        } else {
            assert_eq!(r.status(), 404);
            None
        }
    }

    async fn delete(&self, id: &str) -> serde_json::Value {
        self.req(http::Method::DELETE, &format!("/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spend_limits_client_round_trips_against_tollgate() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start_with_config(dir.path(), write_config(dir.path(), &mock.url(), SCOPED));
    let api = SpendLimits {
        base: tg.url.clone(),
        key: "tok-budgets".into(),
    };
    let alice = SpendScope::User {
        user_id: "alice".into(),
    };
    let set = api.set(alice.clone(), Some("50000"), "monthly").await;
    assert_eq!(
        (
            set.kind.as_str(),
            set.currency.as_str(),
            set.period.as_str()
        ),
        ("spend_limit", "USD", "monthly")
    );
    assert!(set.id.starts_with("spl_") && set.is_enabled, "{set:?}");
    assert_eq!((set.amount.as_deref(), &set.scope), (Some("50000"), &alice));
    // Upsert on (scope, period): the same limit, a new amount.
    let again = api.set(alice.clone(), Some("70000"), "monthly").await;
    assert_eq!(again.id, set.id);
    let group = api
        .set(
            SpendScope::RbacGroup {
                rbac_group_id: "eng".into(),
            },
            Some("100"),
            "daily",
        )
        .await;
    let org = api
        .set(SpendScope::Organization, Some("1000000"), "weekly")
        .await;
    let page = api.list().await;
    assert_eq!(page.next_page, None);
    let ids: Vec<&str> = page.data.iter().map(|l| l.id.as_str()).collect();
    for id in [&set.id, &group.id, &org.id] {
        assert!(ids.contains(&id.as_str()), "{id} missing from {ids:?}");
    }
    assert_eq!(
        api.get(&set.id).await.unwrap().amount.as_deref(),
        Some("70000")
    );
    // Mapped onto tollgate budgets: user → user, rbac_group → team.
    let (_, budgets) = admin(
        &tg,
        http::Method::GET,
        "/v1/admin/budgets",
        "tok-read",
        None,
    )
    .await;
    let team = budgets["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["budget"]["scope"] == "team")
        .unwrap();
    assert_eq!(
        (
            team["budget"]["subject"].as_str(),
            team["budget"]["limit_usd"].as_str()
        ),
        (Some("eng"), Some("1.00"))
    );
    // The CLI over the same API: a table of budgets, a key made with --apply.
    let table = cli(&tg, &["admin", "budgets", "list"], "tok-read");
    assert!(
        table.starts_with("NAME") && table.contains("rbac_group-eng-daily"),
        "{table}"
    );
    let made = cli(
        &tg,
        &[
            "key",
            "new",
            "--team",
            "eng",
            "--user",
            "erin",
            "--workspace",
            "acme",
            "--apply",
        ],
        ADMIN,
    );
    let key = made
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .expect("the new key is printed");
    assert_eq!(status_with(&tg, key).await, 200);
    let json = cli(
        &tg,
        &["admin", "keys", "list", "--output", "json"],
        "tok-read",
    );
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["user"] == "erin"),
        "{json}"
    );
    let deleted = api.delete(&set.id).await;
    assert_eq!(
        deleted,
        serde_json::json!({"id": set.id, "type": "spend_limit_deleted"})
    );
    assert!(api.get(&set.id).await.is_none());
    tg.stop();
}
