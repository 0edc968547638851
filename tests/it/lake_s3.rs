//! The lake in a bucket: `tollgate serve` with `[lake] url = "s3://…"`
//! against a real S3-protocol server (moto in server mode, from PyPI,
//! installed by scripts/install-test-deps.sh) on a free loopback port.
//! Events go through the mock provider, land in the bucket as Parquet,
//! and come back through the query API; compaction merges them there
//! without losing or doubling a row; hourly rollups are written and
//! merged beside them, and retention deletes expired days with a record.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use tollgate_mock::MockHandle;

use crate::support::{
    ADMIN, Tollgate, client, free_port, reprice_today, start_mock, wait_for_listener, write_config,
};

/// The bucket and prefix the lake goes to.
pub(crate) const BUCKET: &str = "tollgate-lake";
const PREFIX: &str = "prod";

/// A moto S3 server on a free loopback port; killed on drop.
pub(crate) struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    pub(crate) fn start(dir: &Path) -> Moto {
        let port = free_port();
        let log = std::fs::File::create(dir.join("moto.log")).unwrap();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .env("PYTHONPATH", moto_dir())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 starts moto");
        let addr = format!("127.0.0.1:{port}");
        let log = dir.join("moto.log");
        wait_for_listener("moto", &addr, &log, Duration::from_secs(90));
        Moto {
            child,
            endpoint: format!("http://{addr}"),
        }
    }

    /// Creates the bucket (moto's server mode takes an unsigned
    /// CreateBucket; object_store cannot create buckets).
    pub(crate) async fn create_bucket(&self, bucket: &str) {
        let r = client()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "CreateBucket: {}", r.status());
    }

    /// The `[lake]` section pointing at the bucket.
    pub(crate) fn lake_config(&self) -> String {
        format!(
            r#"
[lake]
url = "s3://{BUCKET}/{PREFIX}"

[lake.options]
aws_endpoint = "{}"
aws_allow_http = "true"
aws_virtual_hosted_style_request = "false"
aws_region = "us-east-1"
aws_access_key_id = "test"
aws_secret_access_key = "test"
"#,
            self.endpoint
        )
    }

    /// A client of the bucket, to look at what tollgate put there.
    fn store(&self) -> impl ObjectStore {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap()
    }

    /// The lake files in the bucket.
    pub(crate) async fn lake_files(&self) -> Vec<String> {
        self.files_under("events").await
    }

    /// The Parquet files of a table (`events`, `events_hourly`).
    async fn files_under(&self, table: &str) -> Vec<String> {
        let mut names = self.objects_under(table).await;
        names.retain(|n| n.ends_with(".parquet"));
        names
    }

    /// Every object under `<prefix>/<dir>`.
    async fn objects_under(&self, dir: &str) -> Vec<String> {
        let prefix = object_store::path::Path::from(format!("{PREFIX}/{dir}"));
        let mut names: Vec<String> = self
            .store()
            .list(Some(&prefix))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        names.sort();
        names
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the test command installs its tools (`$TOLLGATE_TOOLS_DIR`).
pub(crate) fn tools_dir() -> PathBuf {
    std::env::var("TOLLGATE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tollgate-tools")
        })
}

/// Where the test command installed moto (PyPI `moto[server]`).
fn moto_dir() -> PathBuf {
    let dir = tools_dir().join("moto");
    assert!(
        dir.join("moto").exists(),
        "moto is not installed at {} (scripts/install-test-deps.sh installs it)",
        dir.display()
    );
    dir
}

/// A moto bucket, the mock provider, and a config (in `dir`) whose lake
/// is that bucket.
async fn bucket_lake(dir: &Path) -> (Moto, MockHandle, PathBuf) {
    let moto = Moto::start(dir);
    moto.create_bucket(BUCKET).await;
    let mock = start_mock().await;
    let config = write_config(dir, &mock.url(), &moto.lake_config());
    (moto, mock, config)
}

/// Sends `n` requests of trace `trace` through tollgate, one at a time.
pub(crate) async fn send(tg: &Tollgate, trace: &str, n: usize) {
    let body = r#"{"model":"claude-haiku-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..n {
        let r = tg
            .post("/v1/messages")
            .header("x-tollgate-trace-id", trace)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
}

/// `GET /v1/spend?group_by=team` as `(requests, spend_usd)` of team eng.
pub(crate) async fn spend_of_eng(tg: &Tollgate) -> (u64, String) {
    let r = client()
        .get(format!("{}/v1/spend?group_by=team", tg.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let row = body["data"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["team"] == "eng"))
        .unwrap_or_else(|| panic!("no spend row for team eng: {body}"))
        .clone();
    (
        row["requests"].as_u64().unwrap(),
        row["spend_usd"].as_str().unwrap().to_owned(),
    )
}

/// Local lake files under `data.dir` (there must be none).
pub(crate) fn local_parquet(dir: &Path) -> usize {
    fn walk(dir: &Path, n: &mut usize) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, n);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(dir, &mut n);
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lake_in_a_bucket_is_written_queried_and_compacted_there() {
    let dir = tempfile::tempdir().unwrap();
    let (moto, _mock, config) = bucket_lake(dir.path()).await;

    // Three batches, each waited for, so the sink writes several files.
    let tg = Tollgate::start_with_config(dir.path(), config.clone());
    for (i, n) in [(1, 4), (2, 3), (3, 5)] {
        send(&tg, "trace-s3", n).await;
        let total = [4, 7, 12][i - 1];
        tg.wait_for_trace("trace-s3", total).await;
    }
    let files = moto.lake_files().await;
    assert!(files.len() >= 3, "files in the bucket: {files:?}");
    assert_eq!(local_parquet(dir.path()), 0, "no lake file on local disk");
    let (requests, spend) = spend_of_eng(&tg).await;
    assert_eq!(requests, 12);
    tg.stop();

    // Compaction in the bucket: one merged file; its inputs are hidden at
    // once and deleted by the next run.
    let compact = || {
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["compact", "--min-files", "2", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tollgate compact: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let report = compact();
    assert_eq!(report["files_merged"], files.len(), "{report}");
    assert_eq!(report["rows"], 12, "{report}");
    let tg = Tollgate::start_with_config(dir.path(), config.clone());
    let events = tg.wait_for_trace("trace-s3", 12).await;
    let ids: std::collections::HashSet<_> = events.iter().map(|e| &e["event_id"]).collect();
    assert_eq!(ids.len(), 12, "each event once after compaction");
    assert_eq!(spend_of_eng(&tg).await, (12, spend.clone()));
    assert_eq!(hourly_requests(&tg).await, 12, "rollups: each event once");
    tg.stop();
    let report = compact();
    assert_eq!(report["leftovers_deleted"], files.len(), "{report}");
    assert_eq!(moto.lake_files().await.len(), 1);
    assert_eq!(moto.files_under("events_hourly").await.len(), 1);

    retention_deletes_expired_days_in_the_bucket(&moto, dir.path(), &config).await;
}

/// `SELECT sum(requests) FROM events_hourly` through the API.
pub(crate) async fn hourly_requests(tg: &Tollgate) -> u64 {
    let r = client()
        .post(format!("{}/v1/sql", tg.url))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"sql": "SELECT sum(requests) AS n FROM events_hourly"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    body["rows"][0]["n"].as_u64().unwrap()
}

/// Copies of today's raw file and rollups planted 10 and 40 days back;
/// tollgate with retention of 7 days (raw) and 30 (rollups) and a fast
/// compactor deletes the expired ones and records each deletion.
async fn retention_deletes_expired_days_in_the_bucket(moto: &Moto, dir: &Path, config: &Path) {
    let today = chrono::Utc::now().date_naive();
    let day = |back: i64| format!("day={}", today - chrono::TimeDelta::days(back));
    let store = moto.store();
    for table in ["events", "events_hourly", "events_daily"] {
        for f in moto.files_under(table).await {
            for back in [10, 40] {
                let to = f.replace(&format!("day={today}"), &day(back));
                let (from, to) = (object_store::path::Path::from(f.as_str()), to.into());
                store.copy(&from, &to).await.unwrap();
            }
        }
    }
    let text = std::fs::read_to_string(config).unwrap();
    let text = text
        .replace(
            "[lake.options]",
            "retention_days = 7\nrollup_retention_days = 30\n\n[lake.options]",
        )
        .replace(
            "flush_interval_ms = 200",
            "flush_interval_ms = 200\ncompact_interval_secs = 1",
        );
    std::fs::write(config, text).unwrap();
    let tg = Tollgate::start_with_config(dir, config.to_owned());
    let deadline = Instant::now() + Duration::from_secs(30);
    let left =
        |files: Vec<String>, back: i64| files.iter().filter(|f| f.contains(&day(back))).count();
    loop {
        let raw = moto.files_under("events").await;
        let mut rollups = moto.files_under("events_hourly").await;
        rollups.extend(moto.files_under("events_daily").await);
        let (raw10, raw40, roll10, roll40) = (
            left(raw.clone(), 10),
            left(raw, 40),
            left(rollups.clone(), 10),
            left(rollups, 40),
        );
        if raw10 + raw40 + roll40 == 0 {
            assert_eq!(roll10, 2, "rollups (hourly and daily) are kept 30 days");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expired days still in the bucket; log:\n{}",
            tg.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let records = moto.objects_under("_retention").await;
    assert_eq!(
        records.len(),
        4,
        "one record per table and day: {records:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r.contains(&format!("_retention/events/{}/", day(10))))
    );
    assert_eq!(moto.lake_files().await.len(), 1, "today's file kept");
    tg.stop();
}

/// A lake file above the multipart threshold (16 MiB) goes up in parts
/// against a real S3 server (its ETag says so: `…-N` for N parts), reads
/// back whole, and as a new file keeps the first upload when a second
/// writer of the same name comes along (the sink's exactly-once commit),
/// while a replacement (compaction's rewrite, reprice) overwrites it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_lake_file_is_uploaded_in_parts_and_committed_once() {
    use tollgate::lake::object::{LakeConfig, LakeLocation};
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(dir.path());
    moto.create_bucket(BUCKET).await;
    let cfg: toml::Value = toml::from_str(&moto.lake_config()).unwrap();
    let cfg: LakeConfig = cfg["lake"].clone().try_into().unwrap();
    let LakeLocation::Object(lake) = LakeLocation::parse(&cfg, PathBuf::new()).unwrap() else {
        panic!("an s3:// URL is a bucket");
    };
    let lake = std::sync::Arc::new(lake);
    // Lake paths are keys in the bucket, the lake's prefix included.
    let name = PathBuf::from(format!("{PREFIX}/events/day=2026-12-01/p0000-big.parquet"));
    let first: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let second = vec![7u8; 20 * 1024 * 1024];
    let (l, n, f, s) = (lake.clone(), name.clone(), first.clone(), second.clone());
    let read_back = tokio::task::spawn_blocking(move || {
        l.put(&n, f, true).unwrap();
        let after_first = l.get(&n).unwrap();
        l.put(&n, s.clone(), true).unwrap();
        let after_create_again = l.get(&n).unwrap();
        l.put(&n, s, false).unwrap();
        (after_first, after_create_again, l.get(&n).unwrap())
    })
    .await
    .unwrap();
    assert!(read_back.0 == first, "the parts read back as the file");
    assert!(
        read_back.1 == first,
        "a second new-file upload keeps the first"
    );
    assert!(read_back.2 == second, "a replacement overwrites");
    let key = object_store::path::Path::from(name.display().to_string());
    let head = moto.store().head(&key).await.unwrap();
    let etag = head.e_tag.unwrap_or_default();
    assert!(
        etag.trim_matches('"').ends_with("-3"),
        "uploaded in 3 parts of 8 MiB: ETag {etag}"
    );
}

/// The query API keeps what it read from the bucket (rollups whole, ranges
/// of raw files), but `tollgate reprice` rewrites those objects under the
/// same names while it runs: the spend it answers must become the new one
/// within a listing, never stay the cached old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_query_api_over_a_bucket_answers_a_reprice_not_its_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (_moto, _mock, config) = bucket_lake(dir.path()).await;
    let tg = Tollgate::start_with_config(dir.path(), config.clone());
    send(&tg, "trace-reprice", 3).await;
    tg.wait_for_trace("trace-reprice", 3).await;
    let (requests, before) = spend_of_eng(&tg).await;
    assert_eq!(requests, 3);
    // Asked again: now served from the read cache.
    assert_eq!(spend_of_eng(&tg).await, (3, before.clone()));
    let cached = tg
        .metric("tollgate_lake_bucket_reads_total{result=\"hit\"}")
        .await;
    assert!(cached > 0.0, "the second answer read cached bytes");

    // Twice the Haiku 4.5 prices: the spend doubles.
    reprice_today(
        &config,
        r#"
family = "claude-haiku-4-5"
match = ['^claude-haiku-4-5(-\d{8})?$']
effective_from = 2025-10-15
source = "https://example.com/doubled"
input = "2"
output = "10"
cache_write_5m = "2.5"
cache_write_1h = "4"
cache_read = "0.2"
"#,
    );
    let doubled =
        (before.parse::<rust_decimal::Decimal>().unwrap() * rust_decimal::Decimal::TWO).normalize();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (requests, now) = spend_of_eng(&tg).await;
        assert_eq!(requests, 3);
        let now = now.parse::<rust_decimal::Decimal>().unwrap().normalize();
        if now == doubled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spend still {now} 30 s after reprice (was {before}, repriced {doubled})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tg.stop();
}
