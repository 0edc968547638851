//! The Grafana dashboards in `dashboards/` against the real thing: a real
//! Prometheus server (Debian package `prometheus`, installed by
//! `scripts/install-test-deps.sh`) scrapes a real `tollgate serve` under
//! traffic that makes every metric move (teams, a budget that fills up,
//! a rate limit, the response cache, upstream errors, retries, fallbacks,
//! Bedrock downgrades, a model no table has (priced provisionally), streams, subscription passthrough,
//! alert webhooks, the query API), and every
//! PromQL query of every panel is evaluated through Prometheus's HTTP API:
//! each must return data. The dashboard JSON is checked for unique uids and
//! panel ids and for datasource references that the provisioning files
//! define, and the provisioning for the paths docker-compose mounts.
//! `TOLLGATE_DASHBOARD_DEBUG=1` prints what every query returned.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate::config::hash_key;
use tollgate_mock::MockOptions;

use crate::support::{ADMIN, KEY, PROVIDER_KEY, Tollgate, client, write_config};

/// A panel whose description says this is not evaluated: its series need
/// traffic this test cannot make (none does today).
const SKIP_MARKER: &str = "requires passthrough traffic";

/// How a panel shows 0 for a kind of event that has not happened yet and
/// whose labels (an error type, a model, a downgrade) no config names: the
/// full-traffic test takes it off to see the panel's own series.
const ZERO_FALLBACK: &str = " or on() vector(0)";

/// What the test puts for Grafana's built-in variables. Scrapes are 1 s
/// apart, so 30 s holds plenty of samples for `rate`.
const BUILTINS: &[(&str, &str)] = &[
    ("__rate_interval", "30s"),
    ("__interval", "15s"),
    ("__range", "10m"),
    ("__range_s", "600"),
    ("__interval_ms", "15000"),
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every dashboard file, by file name.
fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo().join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{name} is not valid JSON: {e}"));
            out.push((name, v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every panel of a dashboard, rows' (collapsed) panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            if let Some(inner) = p.get("panels") {
                walk(inner, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// `(uid, name, type)` of every provisioned datasource.
fn provisioned_datasources() -> Vec<(String, String, String)> {
    let dir = repo().join("dashboards/provisioning/datasources");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            continue;
        }
        let doc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
        for ds in doc["datasources"].as_sequence().into_iter().flatten() {
            let field = |k: &str| {
                ds[k]
                    .as_str()
                    .unwrap_or_else(|| panic!("{}: a datasource without {k}", path.display()))
                    .to_owned()
            };
            out.push((field("uid"), field("name"), field("type")));
        }
    }
    out
}

/// The Grafana service of docker-compose.yml.
fn compose_grafana() -> serde_yaml::Value {
    let text = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    doc["services"]["grafana"].clone()
}

/// Grafana's datasource names that stand for no provisioned datasource.
const BUILTIN_DATASOURCES: &[&str] =
    &["-- Grafana --", "-- Mixed --", "-- Dashboard --", "grafana"];

/// Problems with one datasource reference (`None`: the dashboard default).
fn check_datasource(
    at: &str,
    ds: Option<&Value>,
    uids: &BTreeSet<String>,
    names: &BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    match ds {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !names.contains(s) && !uids.contains(s) && !BUILTIN_DATASOURCES.contains(&s.as_str())
            {
                problems.push(format!("{at}: datasource {s:?} is not provisioned"));
            }
        }
        Some(Value::Object(o)) => match o.get("uid").and_then(|u| u.as_str()) {
            Some(uid) if uids.contains(uid) || BUILTIN_DATASOURCES.contains(&uid) => {}
            Some(uid) => problems.push(format!(
                "{at}: datasource uid {uid:?} is not provisioned (provisioned: {uids:?})"
            )),
            None => problems.push(format!("{at}: datasource {o:?} has no uid")),
        },
        Some(other) => problems.push(format!(
            "{at}: datasource {other} is neither a uid nor a name"
        )),
    }
}

#[test]
fn dashboards_have_unique_uids_and_ids_and_reference_only_provisioned_datasources() {
    let datasources = provisioned_datasources();
    let uids: BTreeSet<String> = datasources.iter().map(|d| d.0.clone()).collect();
    let names: BTreeSet<String> = datasources.iter().map(|d| d.1.clone()).collect();
    assert_eq!(uids.len(), datasources.len(), "datasource uids are unique");
    assert!(
        uids.contains("prometheus") && uids.contains("tollgate-lake"),
        "Prometheus and the lake are provisioned: {uids:?}"
    );
    let all = dashboards();
    let files: BTreeSet<&str> = all.iter().map(|(f, _)| f.as_str()).collect();
    for expected in [
        "tollgate-spend.json",
        "tollgate-models.json",
        "tollgate-latency.json",
        "tollgate-pipeline.json",
    ] {
        assert!(files.contains(expected), "{expected} exists: {files:?}");
    }
    let mut problems = Vec::new();
    let mut seen_uids: BTreeMap<String, String> = BTreeMap::new();
    for (file, d) in &all {
        let uid = d["uid"].as_str().unwrap_or_default();
        if uid.is_empty() || d["title"].as_str().unwrap_or_default().is_empty() {
            problems.push(format!("{file}: no uid or no title"));
        }
        if let Some(other) = seen_uids.insert(uid.to_owned(), file.clone()) {
            problems.push(format!("{file}: uid {uid:?} is also the uid of {other}"));
        }
        let mut ids = BTreeSet::new();
        for p in panels(d) {
            let title = p["title"].as_str().unwrap_or("?");
            let at = format!("{file} / panel {title:?}");
            match p["id"].as_u64() {
                Some(id) if ids.insert(id) => {}
                Some(id) => problems.push(format!("{at}: panel id {id} is used twice")),
                None => problems.push(format!("{at}: no panel id")),
            }
            check_datasource(&at, p.get("datasource"), &uids, &names, &mut problems);
            for t in p["targets"].as_array().into_iter().flatten() {
                let at = format!("{at} / target {}", t["refId"].as_str().unwrap_or("?"));
                check_datasource(&at, t.get("datasource"), &uids, &names, &mut problems);
                let prometheus = t["datasource"]["type"] == "prometheus"
                    || (t.get("datasource").is_none() && p["datasource"]["type"] == "prometheus");
                if prometheus && t["expr"].as_str().unwrap_or_default().trim().is_empty() {
                    problems.push(format!("{at}: a Prometheus target without expr"));
                }
            }
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            let at = format!("{file} / variable {}", v["name"]);
            check_datasource(&at, v.get("datasource"), &uids, &names, &mut problems);
        }
        for a in d["annotations"]["list"].as_array().into_iter().flatten() {
            let at = format!("{file} / annotation {}", a["name"]);
            check_datasource(&at, a.get("datasource"), &uids, &names, &mut problems);
        }
    }
    assert!(
        problems.is_empty(),
        "dashboard problems:\n{}",
        problems.join("\n")
    );
}

#[test]
fn grafana_provisioning_points_at_what_docker_compose_mounts_and_installs() {
    let grafana = compose_grafana();
    let mounts: Vec<(String, String)> = grafana["volumes"]
        .as_sequence()
        .expect("grafana mounts volumes")
        .iter()
        .map(|v| {
            let mut parts = v.as_str().unwrap().split(':');
            (
                parts.next().unwrap().to_owned(),
                parts.next().unwrap().to_owned(),
            )
        })
        .collect();
    let target_of = |source: &str| {
        mounts
            .iter()
            .find(|(s, _)| s.trim_end_matches('/') == source)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| panic!("docker-compose mounts {source} into grafana: {mounts:?}"))
    };
    assert_eq!(
        target_of("./dashboards/provisioning"),
        "/etc/grafana/provisioning"
    );
    let dashboards_dir = target_of("./dashboards");
    let provider: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("dashboards/provisioning/dashboards/tollgate.yml"))
            .unwrap(),
    )
    .unwrap();
    let providers = provider["providers"].as_sequence().unwrap();
    assert!(
        providers
            .iter()
            .any(|p| p["options"]["path"].as_str() == Some(dashboards_dir.as_str())),
        "a dashboard provider reads {dashboards_dir}, where the JSON files are mounted"
    );

    // Every datasource type that is a plugin (not built into Grafana) is
    // installed from the catalogue.
    let installs: Vec<String> = grafana["environment"]["GF_INSTALL_PLUGINS"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .map(|p| p.trim().split(' ').next().unwrap_or_default().to_owned())
        .collect();
    for (uid, _, kind) in provisioned_datasources() {
        if kind.contains('-') {
            assert!(
                installs.contains(&kind),
                "datasource {uid} needs plugin {kind}, which GF_INSTALL_PLUGINS ({installs:?}) lacks"
            );
        }
    }
    // The lake datasource talks to the query API service with the token
    // Grafana gets from its environment.
    let lake = std::fs::read_to_string(
        repo().join("dashboards/provisioning/datasources/tollgate-lake.yml"),
    )
    .unwrap();
    assert!(lake.contains("http://api:8787"), "{lake}");
    assert!(lake.contains("Bearer ${TOLLGATE_ADMIN_TOKEN}"), "{lake}");
    assert!(
        grafana["environment"]["TOLLGATE_ADMIN_TOKEN"]
            .as_str()
            .is_some(),
        "grafana gets TOLLGATE_ADMIN_TOKEN"
    );
}

/// A Prometheus server in a temp dir, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`) every second.
    fn start(dir: &Path, target: &str) -> Prometheus {
        let binary = std::env::var("TOLLGATE_PROMETHEUS")
            .unwrap_or_else(|_| "/usr/bin/prometheus".to_owned());
        assert!(
            Path::new(&binary).exists(),
            "no Prometheus at {binary}: run scripts/install-test-deps.sh (Debian package prometheus) or set TOLLGATE_PROMETHEUS"
        );
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: tollgate\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("prometheus.log");
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/query`; the whole JSON answer (or why there is none).
    async fn query(&self, expr: &str) -> Result<Value, String> {
        let r = client()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let body: Value = r.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() || body["status"] != "success" {
            return Err(format!("HTTP {status}: {body}"));
        }
        Ok(body)
    }

    /// The first value of an instant query, if it has one.
    async fn value(&self, expr: &str) -> Option<f64> {
        let body = self.query(expr).await.ok()?;
        body["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
    }

    /// `GET /api/v1/label/<label>/values?match[]=<series>`.
    async fn label_values(&self, label: &str, series: &str) -> Result<Vec<String>, String> {
        let r = client()
            .get(format!("{}/api/v1/label/{label}/values", self.url))
            .query(&[("match[]", series)])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = r.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(body.to_string());
        }
        Ok(body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect())
    }
}

/// A webhook receiver that refuses its first delivery (so failures show)
/// and takes the rest.
async fn start_webhook() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), hits)
}

const KEY_BOB: &str = "tg-test-key-bob-ops-000000";
const KEY_CAROL: &str = "tg-test-key-carol-research-0";
const KEY_ERIN: &str = "tg-test-key-erin-limited-000";
/// A passthrough key, and the client's own (fake) subscription token.
const KEY_FRANK_SUB: &str = "tg-test-key-frank-sub-00000";
const FRANK_OAUTH: &str = "sk-ant-oat01-FAKEffffffffffffffffffffffffffffffffffffffff-FFFFFFFF";

/// The teams, providers, routes, budgets, limits and webhook of the test.
fn extra_config(upstream: &str, overloaded: &str, webhook: &str) -> String {
    format!(
        r#"client_routes = ["resilient", "patient", "cached"]

[[keys]]
id = "key_bob"
hash = "{bob}"
workspace = "acme"
team = "ops"
user = "bob"
provider = "anthropic"

[[keys]]
id = "key_carol"
hash = "{carol}"
workspace = "acme"
team = "research"
user = "carol"
provider = "bedrock"

[[keys]]
id = "key_frank_sub"
hash = "{frank}"
workspace = "acme"
team = "eng"
user = "frank"
provider = "anthropic"
passthrough = true

[[keys]]
id = "key_erin"
hash = "{erin}"
workspace = "acme"
team = "support"
user = "erin"
provider = "anthropic"

[providers.backup]
kind = "anthropic"
base_url = "{upstream}"
api_key = "{PROVIDER_KEY}"

[providers.flaky]
kind = "anthropic"
base_url = "{overloaded}"
api_key = "{PROVIDER_KEY}"

[providers.bedrock]
kind = "bedrock"
base_url = "{upstream}"
region = "us-east-1"
access_key_id = "AKIDTOLLGATEDASH"
secret_access_key = "tollgate/dashboard/test/secret"

[routes.resilient]
strategy = "fallback"
on_status_codes = [529]
targets = [{{ provider = "flaky" }}, {{ provider = "backup" }}]

[routes.patient]
targets = [{{ provider = "flaky" }}]
retry = {{ attempts = 2, on_status_codes = [529] }}

[routes.cached]
targets = [{{ provider = "anthropic" }}]
cache = {{ mode = "simple", max_age = 600 }}

[[budgets]]
name = "ops-daily"
scope = "team"
subject = "ops"
period = "daily"
limit_usd = "0.02"
thresholds = [50, 80, 100]

[[budgets]]
name = "eng-monthly"
scope = "team"
subject = "eng"
period = "monthly"
limit_usd = "1000"

[[rate_limits]]
scope = "key"
subject = "key_erin"
requests_per_minute = 3

[[webhooks]]
url = "{webhook}"
format = "json"
"#,
        bob = hash_key(KEY_BOB),
        carol = hash_key(KEY_CAROL),
        erin = hash_key(KEY_ERIN),
        frank = hash_key(KEY_FRANK_SUB),
    )
}

fn body(model: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": "hello from the dashboard test"}],
    })
    .to_string()
}

/// One request; its status (the body is read to the end so the event ends).
async fn send(tg: &Tollgate, path: &str, key: &str, body: String, headers: &[(&str, &str)]) -> u16 {
    let mut r = client()
        .post(format!("{}{path}", tg.url))
        .bearer_auth(key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    match r.body(body).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let _ = r.bytes().await;
            status
        }
        Err(_) => 0,
    }
}

/// One round of every kind of traffic the dashboards show.
async fn traffic_round(tg: &Tollgate, round: usize) {
    let sonnet = "claude-sonnet-4-5";
    send(tg, "/v1/messages", KEY, body(sonnet, true), &[]).await;
    send(tg, "/v1/messages", KEY, body(sonnet, false), &[]).await;
    send(tg, "/v1/messages", KEY, body("claude-haiku-4-5", true), &[]).await;
    // A model no price table knows.
    send(
        tg,
        "/v1/messages",
        KEY,
        body("claude-imaginary-9", true),
        &[],
    )
    .await;
    // Upstream errors, straight and after a retry; a fallback that works.
    send(
        tg,
        "/v1/messages",
        KEY,
        body(sonnet, false),
        &[("x-mock-scenario", "error:500")],
    )
    .await;
    send(
        tg,
        "/v1/messages",
        KEY,
        body(sonnet, false),
        &[("x-tollgate-config", "patient")],
    )
    .await;
    send(
        tg,
        "/v1/messages",
        KEY,
        body(sonnet, true),
        &[("x-tollgate-config", "resilient")],
    )
    .await;
    // The response cache: the same body every round, so a hit after the
    // first.
    send(
        tg,
        "/v1/messages",
        KEY,
        body(sonnet, false),
        &[("x-tollgate-config", "cached")],
    )
    .await;
    // Bedrock, with a beta flag it lacks (a downgrade).
    send(
        tg,
        "/v1/messages",
        KEY_CAROL,
        body(sonnet, true),
        &[("anthropic-beta", "made-up-beta-2099-01-01")],
    )
    .await;
    // The rate-limited key and the budget-limited team.
    send(tg, "/v1/messages", KEY_ERIN, body(sonnet, false), &[]).await;
    send(tg, "/v1/messages", KEY_BOB, body(sonnet, false), &[]).await;
    // Claude Code on a subscription: its own token upstream, the tollgate
    // key in x-tollgate-api-key.
    let passthrough = client()
        .post(format!("{}/v1/messages", tg.url))
        .bearer_auth(FRANK_OAUTH)
        .header("x-tollgate-api-key", KEY_FRANK_SUB)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body(sonnet, true))
        .send()
        .await;
    if let Ok(r) = passthrough {
        let _ = r.bytes().await;
    }
    // The query API.
    if let Ok(r) = client()
        .get(format!("{}/v1/budgets", tg.url))
        .bearer_auth(ADMIN)
        .send()
        .await
    {
        let _ = r.bytes().await;
    }
    // An unknown key, and count_tokens.
    send(
        tg,
        "/v1/messages",
        "tg-no-such-key",
        body(sonnet, false),
        &[],
    )
    .await;
    if round.is_multiple_of(2) {
        send(
            tg,
            "/v1/messages/count_tokens",
            KEY,
            body(sonnet, false),
            &[],
        )
        .await;
    }
}

/// The sum of the samples on tollgate's `/metrics` whose line starts with
/// `prefix` (a name, or a name and its first labels).
async fn metric_sum(tg: &Tollgate, prefix: &str) -> f64 {
    let Ok(r) = client().get(format!("{}/metrics", tg.url)).send().await else {
        return 0.0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with(prefix)
                && (prefix.contains('{') || l[prefix.len()..].starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Grafana's variables and built-ins put into an expression.
fn substitute(expr: &str, variables: &BTreeMap<String, String>) -> String {
    let mut out = expr.to_owned();
    let mut all: Vec<(String, String)> = BUILTINS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(variables.iter().map(|(k, v)| (k.clone(), v.clone())))
        .collect();
    // Longest names first: `$__range_s` before `$__range`.
    all.sort_by_key(|b| std::cmp::Reverse(b.0.len()));
    for (name, value) in &all {
        for form in [
            format!("${{{name}:regex}}"),
            format!("${{{name}:pipe}}"),
            format!("${{{name}}}"),
            format!("[[{name}]]"),
            format!("${name}"),
        ] {
            out = out.replace(&form, value);
        }
    }
    out
}

/// tollgate under a loop of traffic rounds, scraped by Prometheus every
/// second: traffic runs from the start until the queries are done, so every
/// `rate()` window holds samples and latency quantiles have observations.
struct Scraped {
    tg: Arc<Tollgate>,
    prometheus: Prometheus,
    target: String,
    stop: Arc<AtomicBool>,
    traffic: tokio::task::JoinHandle<()>,
}

impl Scraped {
    /// Starts tollgate on `config`, Prometheus on it, and `round(tg, n)`
    /// every 200 ms.
    fn start<F, Fut>(dir: &Path, config: PathBuf, round: F) -> Scraped
    where
        F: Fn(Arc<Tollgate>, usize) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let tg = Arc::new(Tollgate::start_with_config(dir, config));
        let target = tg
            .url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let prometheus = Prometheus::start(&dir.join("prometheus"), &target);
        let stop = Arc::new(AtomicBool::new(false));
        let traffic = {
            let (tg, stop) = (tg.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    round(tg.clone(), n).await;
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        Scraped {
            tg,
            prometheus,
            target,
            stop,
            traffic,
        }
    }

    /// Once `ready` is above 0 and the rate window is full, checks every
    /// panel query of every dashboard returns data (`strict`: without the
    /// zero fallback), then stops the traffic and tollgate. `failing` says
    /// what a failure means, for its message.
    async fn every_panel_has_data(self, ready: &str, strict: bool, failing: &str) {
        wait_for_scrapes(&self.prometheus, &self.target, ready).await;
        let (evaluated, failures, skipped) = evaluate_dashboards(&self.prometheus, strict).await;
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.traffic.await;
        eprintln!(
            "evaluated {evaluated} panel queries; skipped (marked {SKIP_MARKER:?}): {skipped:?}"
        );
        assert!(evaluated >= 40, "only {evaluated} queries found");
        assert!(
            failures.is_empty(),
            "{} of {evaluated} dashboard queries {failing}:\n{}",
            failures.len(),
            failures.join("\n")
        );
        drop(self.prometheus);
        match Arc::try_unwrap(self.tg) {
            Ok(tg) => tg.stop(),
            Err(_) => panic!("the traffic task still holds tollgate"),
        }
    }
}

/// Waits until Prometheus has scraped tollgate for 8 s more from now, holds
/// at least 8 good scrapes in the last 30 s, and `ready` (a PromQL
/// expression) is above 0: every `rate` window then holds the traffic so
/// far.
async fn wait_for_scrapes(prometheus: &Prometheus, target: &str, ready: &str) {
    let settled = chrono::Utc::now().timestamp() as f64;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let last_scrape = prometheus
            .value("max(timestamp(up{job=\"tollgate\"} == 1))")
            .await;
        let ready_value = prometheus.value(ready).await;
        // `rate` over the test's 30 s window needs several good scrapes in
        // it; on a loaded machine scrapes time out, so count them.
        let samples = prometheus
            .value("min(count_over_time(tollgate_build_info{job=\"tollgate\"}[30s]))")
            .await;
        if last_scrape.is_some_and(|t| t >= settled + 8.0)
            && ready_value.is_some_and(|d| d > 0.0)
            && samples.is_some_and(|n| n >= 8.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape tollgate at {target} (last good scrape {last_scrape:?}, {samples:?} good scrapes in 30 s); its log:\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Evaluates every Prometheus query of every dashboard panel (and every
/// template variable) as Grafana would; returns how many were evaluated,
/// which failed or had no data, and which panels were skipped.
/// With `strict`, a panel's `or on() vector(0)` fallback (the zero shown
/// when nothing of its kind happened yet) is taken off, so the panel's own
/// series must have data.
async fn evaluate_dashboards(
    prometheus: &Prometheus,
    strict: bool,
) -> (usize, Vec<String>, Vec<String>) {
    let mut failures = Vec::new();
    let mut evaluated = 0;
    let mut skipped = Vec::new();
    for (file, d) in dashboards() {
        // Template variables: their query must find values; panels get
        // the "All" value, as Grafana does by default.
        let mut variables = BTreeMap::new();
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            let name = v["name"].as_str().unwrap().to_owned();
            let definition = v["definition"]
                .as_str()
                .or_else(|| v["query"]["query"].as_str())
                .or_else(|| v["query"].as_str())
                .unwrap_or_default();
            if let Some(args) = definition
                .strip_prefix("label_values(")
                .and_then(|a| a.strip_suffix(')'))
            {
                let (series, label) = args.rsplit_once(',').expect("label_values(series, label)");
                match prometheus.label_values(label.trim(), series.trim()).await {
                    Ok(values) if !values.is_empty() => {}
                    Ok(_) => failures.push(format!(
                        "{file} / variable {name}: {definition} found no values"
                    )),
                    Err(e) => failures.push(format!("{file} / variable {name}: {definition}: {e}")),
                }
            }
            let all = v["allValue"].as_str().unwrap_or(".*").to_owned();
            variables.insert(name, all);
        }
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or("?");
            if p["description"]
                .as_str()
                .is_some_and(|s| s.contains(SKIP_MARKER))
            {
                skipped.push(format!("{file} / {title}"));
                continue;
            }
            for t in p["targets"].as_array().into_iter().flatten() {
                let uid = t["datasource"]["uid"]
                    .as_str()
                    .or_else(|| p["datasource"]["uid"].as_str());
                if uid != Some("prometheus") {
                    continue;
                }
                let raw = t["expr"].as_str().unwrap_or_default();
                let raw = match raw.strip_suffix(ZERO_FALLBACK) {
                    Some(own) if strict => own,
                    _ => raw,
                };
                let expr = substitute(raw, &variables);
                let at = format!(
                    "{file} / {title:?} / {}: {expr}",
                    t["refId"].as_str().unwrap_or("?")
                );
                evaluated += 1;
                if expr.contains('$') {
                    failures.push(format!("{at}: a variable the test does not know"));
                    continue;
                }
                match prometheus.query(&expr).await {
                    Err(e) => failures.push(format!("{at}: {e}")),
                    Ok(body) => {
                        let result = &body["data"]["result"];
                        if result.as_array().is_none_or(|r| r.is_empty()) {
                            failures.push(format!("{at}: no data"));
                        } else if std::env::var("TOLLGATE_DASHBOARD_DEBUG").is_ok() {
                            eprintln!("{at} => {result}");
                        }
                    }
                }
            }
        }
    }
    (evaluated, failures, skipped)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_query_returns_data_from_prometheus_scraping_tollgate_under_traffic() {
    let dir = tempfile::tempdir().unwrap();
    // The provider: tollgate's own key, or a passthrough client's token.
    let mock = tollgate_mock::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        MockOptions {
            api_key: Some(PROVIDER_KEY.into()),
            credentials: vec![FRANK_OAUTH.into()],
            ..MockOptions::default()
        },
    )
    .unwrap();
    let overloaded = tollgate_mock::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        MockOptions {
            api_key: Some(PROVIDER_KEY.into()),
            default_scenario: Some("error:529".into()),
            ..MockOptions::default()
        },
    )
    .unwrap();
    let (webhook, webhook_hits) = start_webhook().await;
    let config = write_config(
        dir.path(),
        &mock.url(),
        &extra_config(&mock.url(), &overloaded.url(), &webhook),
    );
    let scraped = Scraped::start(dir.path(), config, |tg, round| async move {
        traffic_round(&tg, round).await
    });
    let tg = scraped.tg.clone();

    // Fill the ops budget until it refuses (its alerts fire on the way).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = send(
            &tg,
            "/v1/messages",
            KEY_BOB,
            body("claude-sonnet-4-5", false),
            &[],
        )
        .await;
        if status == 429 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ops budget never refused (last status {status}); log:\n{}",
            tg.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Wait until the pipeline has done each thing once: priced, alerted,
    // delivered (after one refused delivery), written the lake.
    let deadline = Instant::now() + Duration::from_secs(120);
    for metric in [
        "tollgate_accountant_events_total",
        "tollgate_provisional_events_total",
        "tollgate_budget_alerts_total",
        "tollgate_alert_delivery_failures_total",
        "tollgate_alert_deliveries_total",
        "tollgate_sink_files_total",
        "tollgate_rate_limit_refusals_total",
        "tollgate_upstream_attempts_total{kind=\"fallback\"",
        "tollgate_upstream_attempts_total{kind=\"retry\"",
        "tollgate_subscription_value_usd_total",
        "tollgate_api_requests_total",
        "tollgate_downgrades_total",
        "tollgate_cache_lookups_total",
        "tollgate_time_to_first_token_seconds_count",
    ] {
        while metric_sum(&tg, metric).await <= 0.0 {
            assert!(
                Instant::now() < deadline,
                "{metric} stayed 0 (webhook hits: {}); log:\n{}",
                webhook_hits.load(Ordering::SeqCst),
                tg.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    drop(tg);
    scraped
        .every_panel_has_data("sum(tollgate_alert_deliveries_total)", true, "failed")
        .await;
}

/// An ordinary install: one key, one budget, one rate limit, one webhook,
/// and plain Claude Code traffic (streamed and not, two models, the query
/// API). Nothing is refused, alerted, retried or cached, yet a new user's
/// Grafana must show zeros on every panel, not "No data": everything
/// configured has its series from the moment it is configured.
#[tokio::test(flavor = "multi_thread")]
async fn an_ordinary_install_shows_zeros_not_no_data_on_every_panel() {
    let dir = tempfile::tempdir().unwrap();
    let mock = tollgate_mock::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        MockOptions {
            api_key: Some(PROVIDER_KEY.into()),
            ..MockOptions::default()
        },
    )
    .unwrap();
    let (webhook, _) = start_webhook().await;
    let extra = format!(
        r#"
[[budgets]]
name = "eng-monthly"
scope = "team"
subject = "eng"
period = "monthly"
limit_usd = "1000"

[[rate_limits]]
scope = "team"
subject = "eng"
requests_per_minute = 6000

[[webhooks]]
url = "{webhook}"
format = "slack"
"#
    );
    let config = write_config(dir.path(), &mock.url(), &extra);
    let scraped = Scraped::start(
        dir.path(),
        config,
        |tg, _| async move { plain_round(&tg).await },
    );
    scraped
        .tg
        .wait_for_metric("tollgate_sink_files_total", 1.0, Duration::from_secs(60))
        .await;
    scraped
        .every_panel_has_data(
            "sum(tollgate_sink_files_total)",
            false,
            "show no data on an ordinary install",
        )
        .await;
}

/// One round of plain traffic: what Claude Code sends, answered.
async fn plain_round(tg: &Tollgate) {
    send(
        tg,
        "/v1/messages",
        KEY,
        body("claude-sonnet-4-5", true),
        &[],
    )
    .await;
    send(
        tg,
        "/v1/messages",
        KEY,
        body("claude-haiku-4-5", false),
        &[],
    )
    .await;
    if let Ok(r) = client()
        .get(format!("{}/v1/budgets", tg.url))
        .bearer_auth(ADMIN)
        .send()
        .await
    {
        let _ = r.bytes().await;
    }
}
