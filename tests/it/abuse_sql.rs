//! `POST /v1/sql` cannot hurt the process (issue 14, item 3): with a team
//! token, the statements that grew `tollgate serve` to 18 GiB are refused
//! with the function they call named, heavy queries that are allowed stop
//! at their time limit (also when the client goes away first), the
//! process's memory stays small throughout, and the gateway keeps
//! answering.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{ADMIN, Tollgate, client, start_mock, write_config};

const TEAM_TOKEN: &str = "eng-team-token";

/// Peak resident memory the process may reach during the whole test.
const RSS_BOUND_KIB: u64 = 1024 * 1024;

/// Ten rows crossed twelve times: 10^12 rows to add up (a plain count
/// would come from statistics), hours of CPU and no memory to speak of.
const ENDLESS_SUM: &str = "WITH v AS (SELECT * FROM (VALUES (1),(2),(3),(4),(5),(6),(7),(8),(9),(10)) t(x)) \
    SELECT sum(a.x + l.x) FROM v a, v b, v c, v d, v e, v f, v g, v h, v i, v j, v k, v l";

/// 10^10 groups: a hash table that grows until the memory pool refuses
/// it (or the time limit comes first).
const ENDLESS_GROUP_BY: &str = "WITH v AS (SELECT * FROM (VALUES (1),(2),(3),(4),(5),(6),(7),(8),(9),(10)) t(x)) \
    SELECT a.x, b.x, c.x, d.x, e.x, f.x, g.x, h.x, i.x, j.x, count(*) \
    FROM v a, v b, v c, v d, v e, v f, v g, v h, v i, v j \
    GROUP BY a.x, b.x, c.x, d.x, e.x, f.x, g.x, h.x, i.x, j.x";

/// Tollgate with a team token for `eng`, SQL limited to 3 s and 256 MiB.
fn start(dir: &std::path::Path, upstream: &str) -> Tollgate {
    let extra = format!("\n[[api.team_tokens]]\nteam = \"eng\"\ntoken = \"{TEAM_TOKEN}\"\n");
    let config = write_config(dir, upstream, &extra);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("admin_tokens = [\"{ADMIN}\"]"),
        &format!("admin_tokens = [\"{ADMIN}\"]\nsql_timeout_secs = 3\nquery_memory_mb = 256"),
    );
    std::fs::write(&config, text).unwrap();
    Tollgate::start_with_config(dir, config)
}

/// `POST /v1/sql` with the team token: status and JSON body.
async fn sql(tg: &Tollgate, statement: &str) -> (u16, Value) {
    let r = client()
        .post(format!("{}/v1/sql", tg.url))
        .bearer_auth(TEAM_TOKEN)
        .json(&serde_json::json!({ "sql": statement }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// CPU ticks (user + system) spent so far by the process's `lake-query`
/// threads, where queries run.
fn query_cpu_ticks(pid: u32) -> u64 {
    let mut ticks = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: utime and stime are fields 14 and 15.
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        if !comm.ends_with("lake-query") {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    }
    ticks
}

/// Waits until the query threads are idle: less than 5 ticks (50 ms of
/// CPU) over half a second, within `within`.
async fn wait_for_idle_queries(tg: &Tollgate, what: &str, within: Duration) {
    let pid = tg.child.id();
    let deadline = Instant::now() + within;
    loop {
        let before = query_cpu_ticks(pid);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let spent = query_cpu_ticks(pid) - before;
        if spent < 5 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the query threads still burn CPU ({spent} ticks in 0.5 s); log:\n{}",
            tg.log()
        );
    }
}

/// One request through tollgate to the mock.
async fn gateway_answers(tg: &Tollgate) -> u16 {
    tg.post("/v1/messages")
        .json(&serde_json::json!({
            "model": "claude-sonnet-4-5", "max_tokens": 16,
            "messages": [{"role": "user", "content": "still there?"}]
        }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_from_a_team_token_cannot_exhaust_memory_or_outlive_its_time_limit() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = start(dir.path(), &mock.url());
    let pid = tg.child.id();
    assert_eq!(gateway_answers(&tg).await, 200);

    for (statement, function) in [
        (
            "SELECT length(repeat(arrow_cast('aaaaaaaaaaaaaaaa','LargeUtf8'), 300000000))",
            "\"repeat\"",
        ),
        ("SELECT arrow_cast('a', 'LargeUtf8')", "\"arrow_cast\""),
        ("SELECT count(*) FROM range(0, 3000000000)", "\"range\""),
        (
            "SELECT sum(value) FROM generate_series(1, 100000000000)",
            "\"generate_series\"",
        ),
        ("SELECT length(lpad('a', 2000000000))", "\"lpad\""),
        (
            "SELECT count(*) FROM events WHERE team = repeat('x', 1000000000)",
            "\"repeat\"",
        ),
    ] {
        let (status, body) = sql(&tg, statement).await;
        assert_eq!(status, 400, "{statement}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("function {function}")) && message.contains("/v1/sql"),
            "{statement}: {message}"
        );
    }

    // Allowed but endless: answered at the 3 s limit, and stopped.
    let (status, body) = sql(&tg, ENDLESS_SUM).await;
    assert_eq!(status, 408, "{body}");
    wait_for_idle_queries(&tg, "after the time limit", Duration::from_secs(10)).await;

    // A hash table that grows without end: refused by the pool or stopped
    // by the limit, either way without taking the machine's memory.
    let (status, body) = sql(&tg, ENDLESS_GROUP_BY).await;
    assert!(status == 408 || status == 400, "{status}: {body}");
    if status == 400 {
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("Resources exhausted"), "{message}");
    }
    wait_for_idle_queries(&tg, "after the memory-bound query", Duration::from_secs(10)).await;

    // A client that gives up before the limit: the query stops with it.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(format!("{}/v1/sql", tg.url))
        .bearer_auth(TEAM_TOKEN)
        .json(&serde_json::json!({ "sql": ENDLESS_SUM }))
        .send()
        .await;
    assert!(gave_up.is_err(), "the endless query answered in 0.5 s");
    wait_for_idle_queries(&tg, "after the client left", Duration::from_secs(10)).await;

    let (rss, peak) = (status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM"));
    eprintln!("tollgate serve memory after the abuse: VmRSS {rss} KiB, peak VmHWM {peak} KiB");
    assert!(
        peak < RSS_BOUND_KIB,
        "peak RSS {peak} KiB, bound {RSS_BOUND_KIB} KiB"
    );

    // The process is alive and both the gateway and the API answer.
    assert_eq!(gateway_answers(&tg).await, 200);
    let (status, body) = sql(&tg, "SELECT count(*) AS n FROM events").await;
    assert_eq!(status, 200, "{body}");
    assert!(tg.log().find("panicked").is_none(), "{}", tg.log());
}
