//! Operational hardening seen from outside the process: `/metrics` on its
//! own listener, and what tollgate writes to disk readable by its owner only.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

/// The address a role announced as `tollgate <what> listening on <url>`.
fn announced(tg: &Tollgate, what: &str) -> String {
    let needle = format!("tollgate {what} listening on ");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let printed = std::fs::read_to_string(tg.dir.join("tollgate.stdout")).unwrap_or_default();
        if let Some(line) = printed.lines().find(|l| l.starts_with(&needle)) {
            return line[needle.len()..].trim().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no {what} listener announced:\n{printed}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn with_metrics_listen_set_metrics_are_served_only_on_their_own_listener() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mock.url(), "");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "shutdown_grace_secs = 10",
        "shutdown_grace_secs = 10\nmetrics_listen = \"127.0.0.1:0\"",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let tg = Tollgate::start_with_config(dir.path(), config);
    let metrics = announced(&tg, "metrics");
    assert_ne!(metrics, tg.url);

    // One request, so the spend families have a team and user label.
    let r = tg
        .post("/v1/messages")
        .body(r#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let on_gateway = client()
        .get(format!("{}/metrics", tg.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        on_gateway.status(),
        404,
        "the gateway port must not show /metrics"
    );
    let health = client()
        .get(format!("{}/health", tg.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        health.status(),
        200,
        "health checks stay on the gateway port"
    );

    let scraped = client()
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    let text = scraped.text().await.unwrap();
    assert!(text.contains("tollgate_requests_total"), "{text}");
    assert!(text.contains("team=\"eng\""), "{text}");
    let other = client()
        .get(format!("{metrics}/v1/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        404,
        "the metrics listener serves nothing else"
    );

    // What the process wrote is its owner's only.
    let data = dir.path().join("data");
    assert_eq!(mode(&data), 0o700, "data directory");
    for entry in walk(&data) {
        let want = if entry.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&entry), want, "{}", entry.display());
    }
    tg.stop();
}

/// Every file and directory under `root`.
fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

#[test]
fn tollgate_init_writes_a_config_only_its_owner_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("init")
        .current_dir(dir.path())
        .env_remove("TOLLGATE_KAFKA_BROKERS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&dir.path().join("tollgate.toml")), 0o600);
}
