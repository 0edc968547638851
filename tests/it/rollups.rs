//! Hourly rollups and retention through the real binary on a local lake:
//! the sink writes `events_hourly` beside `events`, `/v1/spend` answers
//! from it with the sums the raw events give, `/v1/sql` reads it within a
//! team token's scope, and the compactor deletes expired days whole,
//! recording each deletion.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

use crate::support::{ADMIN, KEY, Tollgate, WithLog, client, poll_until, start_mock, write_config};

const TEAM_TOKEN: &str = "eng-team-token";

/// A config with a fast compactor, retention of 7 days for raw events
/// and 30 for rollups, and an `eng` team token.
fn config(dir: &Path, upstream: &str) -> PathBuf {
    let path = write_config(
        dir,
        upstream,
        &format!(
            r#"
[[api.team_tokens]]
team = "eng"
token = "{TEAM_TOKEN}"

[lake]
retention_days = 7
rollup_retention_days = 30
"#
        ),
    );
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "flush_interval_ms = 200",
        "flush_interval_ms = 200\ncompact_interval_secs = 1",
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `n` requests through tollgate with trace `trace`.
async fn send(tg: &Tollgate, trace: &str, n: usize) {
    for _ in 0..n {
        let r = client()
            .post(format!("{}/v1/messages", tg.url))
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01")
            .header("x-tollgate-trace-id", trace)
            .json(&json!({"model": "claude-haiku-4-5", "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
}

async fn get(tg: &Tollgate, token: &str, path: &str) -> Value {
    let r = client()
        .get(format!("{}{path}", tg.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

async fn sql(tg: &Tollgate, token: &str, sql: &str) -> Value {
    let r = client()
        .post(format!("{}/v1/sql", tg.url))
        .bearer_auth(token)
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{sql}");
    r.json().await.unwrap()
}

/// Every Parquet file under `dir`, recursively.
fn parquet_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(parquet_under(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out
}

/// Waits until `done` holds, failing with `what` at the deadline.
async fn wait_until(tg: &Tollgate, what: &str, mut done: impl FnMut() -> bool) {
    poll_until(what, Duration::from_secs(30), || {
        let held = done();
        async move {
            match held {
                true => Ok(()),
                false => Err(WithLog("not yet".into(), vec![tg])),
            }
        }
    })
    .await
}

/// Copies every file of today's `table` day directory into the day
/// `back` days ago (what an old lake would hold there).
fn plant_old_day(lake: &Path, table: &str, back: i64) -> PathBuf {
    let today = Utc::now().date_naive();
    let from = lake.join(table).join(format!("day={today}"));
    let to = lake
        .join(table)
        .join(format!("day={}", today - TimeDelta::days(back)));
    std::fs::create_dir_all(&to).unwrap();
    for f in parquet_under(&from) {
        std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
    }
    to
}

#[tokio::test(flavor = "multi_thread")]
async fn rollups_answer_spend_and_sql_and_retention_deletes_expired_days_with_a_record() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start_with_config(dir.path(), config(dir.path(), &mock.url()));
    send(&tg, "trace-r1", 3).await;
    tg.wait_for_trace("trace-r1", 3).await;
    send(&tg, "trace-r2", 2).await;
    tg.wait_for_trace("trace-r2", 2).await;
    let lake = dir.path().join("data/lake");
    wait_until(&tg, "a rollup beside every raw file", || {
        let raw = parquet_under(&lake.join("events")).len();
        raw > 0 && parquet_under(&lake.join("events_hourly")).len() == raw
    })
    .await;

    // Whole hours from rollups (open range, and one from an hour ago to
    // the next hour) give the raw sums.
    let raw = sql(
        &tg,
        ADMIN,
        "SELECT count(*) AS n, sum(cost_usd) AS c FROM events",
    )
    .await;
    let rolled = sql(
        &tg,
        ADMIN,
        "SELECT sum(requests) AS n, sum(cost_usd) AS c FROM events_hourly",
    )
    .await;
    assert_eq!(raw["rows"][0]["n"], 5);
    assert_eq!(rolled["rows"][0], raw["rows"][0]);
    let hour_ago = (Utc::now() - TimeDelta::hours(1)).format("%Y-%m-%dT%H:00:00Z");
    let next_hour = (Utc::now() + TimeDelta::hours(1)).format("%Y-%m-%dT%H:00:00Z");
    for range in ["".to_owned(), format!("&from={hour_ago}&to={next_hour}")] {
        let spend = get(&tg, ADMIN, &format!("/v1/spend?group_by=team,model{range}")).await;
        let row = &spend["data"][0];
        assert_eq!(row["requests"], 5, "{spend}");
        let c = raw["rows"][0]["c"].as_str().unwrap();
        assert_eq!(row["spend_usd"].as_str().unwrap(), c, "{spend}");
    }
    let scoped = sql(&tg, TEAM_TOKEN, "SELECT DISTINCT team FROM events_hourly").await;
    assert_eq!(scoped["rows"], json!([{"team": "eng"}]));

    // Retention: 10 days back goes for raw events but not rollups, 40
    // days back for both; each deletion leaves a record.
    let old_raw = plant_old_day(&lake, "events", 10);
    let kept_rollups = plant_old_day(&lake, "events_hourly", 10);
    let older_rollups = plant_old_day(&lake, "events_hourly", 40);
    wait_until(&tg, "expired days deleted", || {
        parquet_under(&old_raw).is_empty() && parquet_under(&older_rollups).is_empty()
    })
    .await;
    assert!(
        !parquet_under(&kept_rollups).is_empty(),
        "rollups kept 30 days"
    );
    let records = lake.join("_retention");
    let day = old_raw.file_name().unwrap();
    let audit: Vec<_> = std::fs::read_dir(records.join("events").join(day))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(audit.len(), 1);
    let record: Value = serde_json::from_slice(&std::fs::read(audit[0].path()).unwrap()).unwrap();
    assert_eq!(record["table"], "events");
    assert_eq!(record["retention_days"], 7);
    assert!(!record["files"].as_array().unwrap().is_empty(), "{record}");
    assert!(
        records
            .join("events_hourly")
            .join(older_rollups.file_name().unwrap())
            .is_dir()
    );
    let today = parquet_under(&lake.join("events")).len();
    assert!(today > 0, "today's events are kept");
    tg.stop();
}
