//! The query API over a real lake: log filters, sorts and cursors, trace
//! view, spend group-bys, top sessions, cache savings, read-only SQL,
//! team-scoped tokens, the OpenAPI document, the `tollgate logs` CLI and
//! compaction.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::Value;
use tollgate::config::hash_key;

use crate::support::{ADMIN, Tollgate, client, start_mock, write_config};

const SALES_KEY: &str = "tg-sales-key-0123456789";
const SALES_TOKEN: &str = "sales-team-token";

/// Two teams (eng: alice via KEY; sales: bob), a sales team token, SQL
/// capped at 1 s.
fn two_team_config(dir: &std::path::Path, upstream: &str) -> std::path::PathBuf {
    write_config(
        dir,
        upstream,
        &format!(
            r#"
[[keys]]
id = "key_bob"
hash = "{hash}"
workspace = "acme"
team = "sales"
user = "bob"
provider = "anthropic"

[[api.team_tokens]]
team = "sales"
token = "{SALES_TOKEN}"
"#,
            hash = hash_key(SALES_KEY)
        ),
    )
    .pipe(|path| {
        let text = std::fs::read_to_string(&path).unwrap().replace(
            &format!("admin_tokens = [\"{ADMIN}\"]"),
            &format!("admin_tokens = [\"{ADMIN}\"]\nsql_timeout_secs = 1\nsql_max_rows = 1000"),
        );
        std::fs::write(&path, text).unwrap();
        path
    })
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

/// One request to the mock through tollgate with `key` and the given
/// trace, session, metadata and mock scenario.
async fn send(
    tg: &Tollgate,
    key: &str,
    trace: &str,
    session: &str,
    metadata: &str,
    model: &str,
    scenario: Option<&str>,
) -> u16 {
    let mut r = client()
        .post(format!("{}/v1/messages", tg.url))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .header("x-tollgate-trace-id", trace)
        .header("x-claude-code-session-id", session)
        .header("x-tollgate-metadata", metadata);
    if let Some(s) = scenario {
        r = r.header("x-mock-scenario", s);
    }
    let body = serde_json::json!({
        "model": model, "max_tokens": 64,
        "messages": [{"role": "user", "content": format!("hello {trace}")}]
    });
    r.json(&body).send().await.unwrap().status().as_u16()
}

/// `GET path` with `token`: status and JSON body.
async fn get(tg: &Tollgate, token: &str, path: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{}{path}", tg.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn sql(tg: &Tollgate, token: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("{}/v1/sql", tg.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn usd(v: &Value) -> Decimal {
    Decimal::from_str(
        v.as_str()
            .unwrap_or_else(|| panic!("not a USD string: {v}")),
    )
    .unwrap()
}

/// Waits until the lake holds `n` events.
async fn wait_for_events(tg: &Tollgate, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = sql(
            tg,
            ADMIN,
            serde_json::json!({"sql": "SELECT count(*) AS n FROM events"}),
        )
        .await;
        let have = body["rows"][0]["n"].as_u64().unwrap_or(0);
        if have >= n {
            assert_eq!(have, n, "more events than sent; log:\n{}", tg.log());
            return;
        }
        assert!(
            Instant::now() < deadline,
            "lake has {have} of {n} events; log:\n{}",
            tg.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The traffic every test here queries: 11 requests over two teams.
async fn traffic(tg: &Tollgate) {
    let key = crate::support::KEY;
    for i in 0..4 {
        let scenario = (i == 3).then_some("delay:300");
        assert_eq!(
            send(
                tg,
                key,
                "trace-q1",
                "sess-eng-1",
                r#"{"repo":"alpha"}"#,
                "claude-sonnet-4-5",
                scenario
            )
            .await,
            200
        );
    }
    for _ in 0..2 {
        send(
            tg,
            key,
            "trace-q2",
            "sess-eng-2",
            r#"{"repo":"beta"}"#,
            "claude-haiku-4-5",
            None,
        )
        .await;
    }
    assert_eq!(
        send(
            tg,
            key,
            "trace-q3",
            "sess-eng-2",
            r#"{"repo":"beta"}"#,
            "claude-sonnet-4-5",
            Some("error:529")
        )
        .await,
        529
    );
    for _ in 0..4 {
        send(
            tg,
            SALES_KEY,
            "trace-s1",
            "sess-sales-1",
            r#"{"repo":"gamma"}"#,
            "claude-opus-4-1",
            None,
        )
        .await;
    }
    wait_for_events(tg, 11).await;
}

/// A running tollgate over two teams that has served [`traffic`]; the
/// mock and the data directory live as long as the returned handles.
async fn two_teams_with_traffic() -> (tollgate_mock::MockHandle, tempfile::TempDir, Tollgate) {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = two_team_config(dir.path(), &mock.url());
    let tg = Tollgate::start_with_config(dir.path(), config);
    traffic(&tg).await;
    (mock, dir, tg)
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_filter_by_every_field_sort_and_page_without_gaps_or_repeats() {
    let (_mock, _dir, tg) = two_teams_with_traffic().await;

    let count = |q: &'static str| {
        let tg = &tg;
        async move {
            let page = tg.logs(q).await;
            page["data"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("key=key_bob").await, 4);
    assert_eq!(count("team=eng&user=alice").await, 7);
    assert_eq!(count("provider=anthropic").await, 11);
    assert_eq!(count("status=529").await, 1);
    assert_eq!(count("metadata.repo=beta").await, 3);
    assert_eq!(count("metadata.repo=beta&status=200").await, 2);
    assert_eq!(count("session_id=sess-eng-2").await, 3);
    assert_eq!(count("model=claude-haiku-4-5").await, 2);
    assert_eq!(count("from=2000-01-01&to=2000-01-02").await, 0);

    // Every sort pages through all events exactly once, in order.
    for sort in [
        "-started_at",
        "started_at",
        "-latency_ms",
        "cost_usd",
        "-total_tokens",
    ] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = format!("sort={sort}&limit=3");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let page = tg.logs(&q).await;
            seen.extend(page["data"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let ids: BTreeSet<&str> = seen
            .iter()
            .map(|e| e["event_id"].as_str().unwrap())
            .collect();
        assert_eq!((seen.len(), ids.len()), (11, 11), "sort {sort}");
        if sort == "-latency_ms" {
            let latencies: Vec<u64> = seen
                .iter()
                .map(|e| e["latency_ms"].as_u64().unwrap())
                .collect();
            assert!(latencies.windows(2).all(|w| w[0] >= w[1]), "{latencies:?}");
            assert!(
                latencies[0] >= 300,
                "the delayed request sorts first: {latencies:?}"
            );
        }
    }

    let (status, err) = get(&tg, ADMIN, "/v1/logs?sort=price").await;
    assert_eq!(status, 400);
    assert!(
        err["error"]["message"].as_str().unwrap().contains("sort"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_view_spend_group_bys_top_sessions_and_cache_savings_add_up() {
    let (_mock, _dir, tg) = two_teams_with_traffic().await;

    // Trace view: events oldest first, totals are the sums of the events.
    let (status, trace) = get(&tg, ADMIN, "/v1/traces/trace-q1").await;
    assert_eq!(status, 200, "{trace}");
    let events = trace["events"].as_array().unwrap();
    assert_eq!(events.len(), 4);
    let starts: Vec<&str> = events
        .iter()
        .map(|e| e["started_at"].as_str().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
    let t = &trace["totals"];
    let cost: Decimal = events.iter().map(|e| usd(&e["cost_usd"])).sum();
    assert_eq!(usd(&t["spend_usd"]), cost);
    let latency: u64 = events
        .iter()
        .map(|e| e["latency_ms"].as_u64().unwrap())
        .sum();
    assert_eq!(t["latency_ms"].as_u64().unwrap(), latency);
    let input: u64 = events
        .iter()
        .map(|e| e["usage"]["input_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(t["input_tokens"].as_u64().unwrap(), input);
    assert_eq!(t["requests"], 4);
    assert_eq!(get(&tg, ADMIN, "/v1/traces/no-such-trace").await.0, 404);

    // Spend by team and model adds up to the per-event costs.
    let all = tg.logs("limit=1000").await;
    let mut by_team_model: BTreeMap<(String, String), Decimal> = BTreeMap::new();
    for e in all["data"].as_array().unwrap() {
        let model = e["model_served"]
            .as_str()
            .or(e["model_requested"].as_str())
            .unwrap();
        let cost = e
            .get("cost_usd")
            .and_then(|c| c.as_str())
            .map(|c| Decimal::from_str(c).unwrap());
        *by_team_model
            .entry((e["team"].as_str().unwrap().into(), model.into()))
            .or_default() += cost.unwrap_or_default();
    }
    let (status, spend) = get(&tg, ADMIN, "/v1/spend?group_by=team,model").await;
    assert_eq!(status, 200, "{spend}");
    let rows = spend["data"].as_array().unwrap();
    assert_eq!(rows.len(), by_team_model.len(), "{spend}");
    for row in rows {
        let k = (
            row["team"].as_str().unwrap().to_owned(),
            row["model"].as_str().unwrap().to_owned(),
        );
        assert_eq!(usd(&row["spend_usd"]), by_team_model[&k], "{row}");
        let lines: Decimal = [
            "input_usd",
            "output_usd",
            "cache_write_5m_usd",
            "cache_write_1h_usd",
            "cache_read_usd",
            "web_search_usd",
        ]
        .iter()
        .map(|l| usd(&row[*l]))
        .sum();
        assert_eq!(
            lines,
            usd(&row["spend_usd"]),
            "lines add up to spend: {row}"
        );
        assert_eq!(usd(&row["subscription_value_usd"]), Decimal::ZERO);
    }

    // Other groupings: per metadata key, per day, per key, per session.
    let (_, by_repo) = get(&tg, ADMIN, "/v1/spend?group_by=metadata.repo").await;
    let repos: BTreeMap<&str, u64> = by_repo["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metadata.repo"].as_str().unwrap(),
                r["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        repos,
        BTreeMap::from([("alpha", 4), ("beta", 3), ("gamma", 4)])
    );
    let (_, by_day) = get(&tg, ADMIN, "/v1/spend?group_by=day,hour").await;
    let requests: u64 = by_day["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(requests, 11);
    let (_, by_key) = get(&tg, ADMIN, "/v1/spend?group_by=key,provider,user,session").await;
    assert_eq!(by_key["data"].as_array().unwrap().len(), 3, "{by_key}");
    let (status, err) = get(&tg, ADMIN, "/v1/spend?group_by=colour").await;
    assert_eq!(status, 400);
    assert!(err["error"]["message"].as_str().unwrap().contains("colour"));

    // Top sessions, costliest first.
    let (_, top) = get(&tg, ADMIN, "/v1/spend/top-sessions?limit=2").await;
    let top = top["data"].as_array().unwrap().clone();
    assert_eq!(top.len(), 2);
    assert!(usd(&top[0]["spend_usd"]) >= usd(&top[1]["spend_usd"]));
    assert_eq!(
        top[0]["session_id"], "sess-sales-1",
        "opus costs most: {top:?}"
    );

    // Cache savings: full price minus what was paid for the reads.
    let (_, savings) = get(&tg, ADMIN, "/v1/spend/cache-savings").await;
    for row in savings["data"].as_array().unwrap() {
        let saved = usd(&row["savings_usd"]);
        assert!(saved > Decimal::ZERO, "{row}");
        assert_eq!(
            usd(&row["full_price_usd"]) - usd(&row["cache_read_usd"]),
            saved
        );
        // Cache reads cost a tenth of input, so they saved nine tenths.
        assert_eq!(
            usd(&row["cache_read_usd"]) * Decimal::from(9),
            saved,
            "{row}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_runs_one_select_and_refuses_writes_with_the_reason_caps_rows_and_times_out() {
    let (_mock, _dir, tg) = two_teams_with_traffic().await;

    let (status, body) = sql(&tg, ADMIN, serde_json::json!({
        "sql": "SELECT team, count(*) AS n, sum(cost_usd) AS usd FROM events GROUP BY team ORDER BY team"
    })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["columns"], serde_json::json!(["team", "n", "usd"]));
    assert_eq!(body["rows"][0]["team"], "eng");
    assert_eq!(body["rows"][0]["n"], 7);
    assert!(
        body["rows"][0]["usd"].is_string(),
        "dollars stay exact: {body}"
    );

    for (statement, says) in [
        ("DELETE FROM events", "DELETE"),
        ("DROP TABLE events", "DROP"),
        ("INSERT INTO events SELECT * FROM events", "INSERT"),
        ("SELECT 1; SELECT 2", "one statement"),
        ("COPY (SELECT * FROM events) TO '/tmp/x.csv'", "COPY"),
        (
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/'",
            "EXTERNAL",
        ),
        ("SELECT * FROM secrets", "secrets"),
    ] {
        let (status, body) = sql(&tg, ADMIN, serde_json::json!({"sql": statement})).await;
        assert_eq!(status, 400, "{statement}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{statement}: {message}");
    }

    let (_, capped) = sql(
        &tg,
        ADMIN,
        serde_json::json!({"sql": "SELECT event_id FROM events", "max_rows": 3}),
    )
    .await;
    assert_eq!(capped["rows"].as_array().unwrap().len(), 3);
    assert_eq!(capped["truncated"], true);
    let (status, _) = sql(
        &tg,
        ADMIN,
        serde_json::json!({"sql": "SELECT 1", "max_rows": 5000}),
    )
    .await;
    assert_eq!(status, 400, "max_rows above the configured cap is refused");

    // Adding up 10^12 rows of a cross join takes hours: far past the 1 s
    // limit. (Table functions such as `generate_series` are refused.)
    let (status, body) = sql(
        &tg,
        ADMIN,
        serde_json::json!({
            "sql": "WITH v AS (SELECT * FROM (VALUES (1),(2),(3),(4),(5),(6),(7),(8),(9),(10)) t(x)) \
                SELECT sum(a.x + l.x) FROM v a, v b, v c, v d, v e, v f, v g, v h, v i, v j, v k, v l"
        }),
    )
    .await;
    assert_eq!(status, 408, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("time limit"),
        "{body}"
    );

    let (status, body) = client()
        .post(format!("{}/v1/sql", tg.url))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 400);
    assert!(body.text().await.unwrap().contains("body"));

    // The process kept serving after all of that.
    assert_eq!(
        tg.logs("limit=1").await["data"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_team_token_sees_only_its_team_in_every_endpoint_including_sql() {
    let (_mock, _dir, tg) = two_teams_with_traffic().await;

    let (status, logs) = get(&tg, SALES_TOKEN, "/v1/logs?limit=1000").await;
    assert_eq!(status, 200);
    let teams: BTreeSet<&str> = logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["team"].as_str().unwrap())
        .collect();
    assert_eq!(teams, BTreeSet::from(["sales"]));
    assert_eq!(logs["data"].as_array().unwrap().len(), 4);

    let (status, err) = get(&tg, SALES_TOKEN, "/v1/logs?team=eng").await;
    assert_eq!(status, 403, "{err}");
    assert_eq!(get(&tg, SALES_TOKEN, "/v1/traces/trace-q1").await.0, 404);
    assert_eq!(get(&tg, SALES_TOKEN, "/v1/traces/trace-s1").await.0, 200);
    let eng_event = tg.logs("team=eng&limit=1").await["data"][0]["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        get(&tg, SALES_TOKEN, &format!("/v1/logs/{eng_event}"))
            .await
            .0,
        404
    );
    assert_eq!(
        get(&tg, ADMIN, &format!("/v1/logs/{eng_event}")).await.0,
        200
    );

    let (_, spend) = get(&tg, SALES_TOKEN, "/v1/spend?group_by=team").await;
    let rows = spend["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["team"], "sales");
    let (_, top) = get(&tg, SALES_TOKEN, "/v1/spend/top-sessions").await;
    assert!(
        top["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["team"] == "sales")
    );

    for statement in [
        "SELECT DISTINCT team FROM events",
        "SELECT team FROM (SELECT * FROM events) WHERE team = 'eng' OR 1 = 1",
        "WITH x AS (SELECT team FROM events) SELECT DISTINCT team FROM x",
    ] {
        let (status, body) = sql(&tg, SALES_TOKEN, serde_json::json!({"sql": statement})).await;
        assert_eq!(status, 200, "{statement}: {body}");
        let teams: BTreeSet<&str> = body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["team"].as_str().unwrap())
            .collect();
        assert_eq!(teams, BTreeSet::from(["sales"]), "{statement}");
    }

    assert_eq!(get(&tg, "wrong-token", "/v1/logs").await.0, 401);
    assert_eq!(get(&tg, "", "/v1/spend").await.0, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_describes_every_endpoint_and_the_cli_prints_a_trace() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = two_team_config(dir.path(), &mock.url());
    let tg = Tollgate::start_with_config(dir.path(), config);

    let doc: Value = client()
        .get(format!("{}/openapi.json", tg.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/logs",
        "/v1/logs/{event_id}",
        "/v1/traces/{trace_id}",
        "/v1/spend",
        "/v1/spend/top-sessions",
        "/v1/spend/cache-savings",
        "/v1/sql",
        "/v1/budgets",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from /openapi.json"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    send(
        &tg,
        crate::support::KEY,
        "trace-cli",
        "sess-cli",
        "{}",
        "claude-sonnet-4-5",
        None,
    )
    .await;
    tg.wait_for_trace("trace-cli", 1).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "logs",
            "--trace-id",
            "trace-cli",
            "--url",
            &tg.url,
            "--token",
            ADMIN,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["trace_id"], "trace-cli");
    assert_eq!(view["totals"]["requests"], 1);
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "logs",
            "--trace-id",
            "trace-cli",
            "--url",
            &tg.url,
            "--token",
            "nope",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("401"));
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_under_traffic_merges_small_files_without_losing_or_duplicating_a_row() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = two_team_config(dir.path(), &mock.url());
    let tg = Tollgate::start_with_config(dir.path(), config.clone());
    // Bursts apart by more than the 200 ms flush interval: one file each.
    let mut sent = 0u64;
    for burst in 0..8 {
        for i in 0..3 {
            send(
                &tg,
                crate::support::KEY,
                &format!("trace-c{burst}-{i}"),
                "sess-c",
                "{}",
                "claude-sonnet-4-5",
                None,
            )
            .await;
            sent += 1;
        }
        wait_for_events(&tg, sent).await;
    }
    let files = |dir: &std::path::Path| {
        walk(&dir.join("data"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .count()
    };
    let before = files(dir.path());
    assert!(before >= 8, "{before} files");

    // Compact while more traffic lands.
    let more = {
        let url = tg.url.clone();
        tokio::spawn(async move {
            for i in 0..20 {
                let body = serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 8,
                    "messages": [{"role": "user", "content": format!("more {i}")}]});
                client()
                    .post(format!("{url}/v1/messages"))
                    .header("x-api-key", crate::support::KEY)
                    .header("anthropic-version", "2023-06-01")
                    .header("x-tollgate-trace-id", format!("trace-more-{i}"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["compact", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["files_merged"].as_u64().unwrap() >= 8, "{report}");
    more.await.unwrap();
    wait_for_events(&tg, sent + 20).await;
    assert!(files(dir.path()) < before, "fewer files after compaction");

    let (_, dupes) = sql(&tg, ADMIN, serde_json::json!({
        "sql": "SELECT event_id, count(*) AS n FROM events GROUP BY event_id HAVING count(*) > 1"
    })).await;
    assert_eq!(dupes["rows"].as_array().unwrap().len(), 0, "{dupes}");
    // A compacted trace is still found (through its bloom filter).
    assert_eq!(tg.wait_for_trace("trace-c3-1", 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_lake_dashboard_panel_gets_rows_from_the_query_api() {
    let (_mock, _dir, tg) = two_teams_with_traffic().await;

    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/tollgate-lake.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let mut checked = 0;
    let mut failures = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], "tollgate-lake");
            let url = target["url"]
                .as_str()
                .unwrap()
                .replace("${__from}", &(now - 3_600_000).to_string())
                .replace("${__to}", &(now + 3_600_000).to_string());
            let (status, body) = get(&tg, ADMIN, &url).await;
            let selector = target["root_selector"].as_str().unwrap();
            let rows = body[selector].as_array().map_or(0, |r| r.len());
            let title = panel["title"].as_str().unwrap();
            if status != 200 || rows == 0 {
                failures.push(format!("{title}: {url} → {status} {body}"));
            }
            for column in target["columns"].as_array().unwrap() {
                let field = column["selector"].as_str().unwrap();
                if rows > 0 && body[selector][0].get(field).is_none() {
                    failures.push(format!("{title}: no field {field} in {url}"));
                }
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 6);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A client chooses its trace and session IDs, so it can reuse one for any
/// number of requests: a view past `api.max_view_events` is refused with a
/// 422 naming the limit and `/v1/logs`, which still pages through it.
#[tokio::test(flavor = "multi_thread")]
async fn a_trace_or_session_past_the_view_limit_is_refused_and_logs_still_page() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = two_team_config(dir.path(), &mock.url());
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "sql_timeout_secs = 1",
        "sql_timeout_secs = 1\nmax_view_events = 2",
    );
    std::fs::write(&config, text).unwrap();
    let tg = Tollgate::start_with_config(dir.path(), config);
    for trace in ["trace-big", "trace-big", "trace-big", "trace-small"] {
        let status = send(
            &tg,
            crate::support::KEY,
            trace,
            &format!("sess-{trace}"),
            "{}",
            "claude-sonnet-4-5",
            None,
        )
        .await;
        assert_eq!(status, 200);
    }
    tg.wait_for_trace("trace-big", 3).await;
    tg.wait_for_trace("trace-small", 1).await;

    for path in ["/v1/traces/trace-big", "/v1/sessions/sess-trace-big"] {
        let (status, body) = get(&tg, ADMIN, path).await;
        assert_eq!(status, 422, "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("more than 2 events") && message.contains("/v1/logs"),
            "{path}: {body}"
        );
    }
    let (status, body) = get(&tg, ADMIN, "/v1/traces/trace-small").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["totals"]["requests"], 1);
    let (status, page) = get(&tg, ADMIN, "/v1/logs?trace_id=trace-big&limit=2").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert!(page["next_cursor"].is_string(), "{page}");
}
