//! Real Claude Code (npm `@anthropic-ai/claude-code`, installed by
//! scripts/install-test-deps.sh) through tollgate to the mock provider.
//! A missing Claude Code fails the test: it never skips.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{KEY, PROVIDER_KEY, Tollgate, start_mock};

/// The Claude Code versions the real-client tests check, newest first, read
/// from the one line of scripts/install-test-deps.sh that installs them, so
/// moving the pin is a change of that line only.
pub fn claude_versions() -> Vec<String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/install-test-deps.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("CLAUDE_CODE_VERSIONS="))
        .unwrap_or_else(|| panic!("no CLAUDE_CODE_VERSIONS= line in {}", script.display()));
    let versions: Vec<String> = line
        .trim_matches('"')
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert!(!versions.is_empty(), "CLAUDE_CODE_VERSIONS is empty");
    versions
}

/// Where the test command installed Claude Code `version`.
pub fn claude_bin_of(version: &str) -> PathBuf {
    let tools = std::env::var("TOLLGATE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tollgate-tools")
        });
    let bin = tools.join(format!("claude-code-{version}/node_modules/.bin/claude"));
    assert!(
        bin.exists(),
        "Claude Code {version} is not installed at {}: run scripts/install-test-deps.sh (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// The client every real-client test drives: `TOLLGATE_CLAUDE_BIN` when
/// set, else the newest listed version.
pub fn claude_bin() -> PathBuf {
    match std::env::var("TOLLGATE_CLAUDE_BIN") {
        Ok(bin) => PathBuf::from(bin),
        Err(_) => claude_bin_of(&claude_versions()[0]),
    }
}

/// Runs `claude -p` (binary `bin`) against `base_url` with a fresh HOME;
/// returns its parsed JSON output.
async fn run_claude(
    bin: &Path,
    base_url: &str,
    auth_env: (&str, &str),
    headers: &str,
) -> serde_json::Value {
    let out = run_claude_bin(
        bin,
        base_url,
        auth_env,
        headers,
        &[("CLAUDE_CODE_MAX_RETRIES", "1")],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "claude failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("claude output is not JSON ({e}): {stdout}"))
}

/// Runs the default client's `claude -p "Say hello."` with `env` added and
/// returns what it printed and its exit status.
pub async fn run_claude_output(
    base_url: &str,
    auth_env: (&str, &str),
    headers: &str,
    env: &[(&str, &str)],
) -> std::process::Output {
    run_claude_bin(&claude_bin(), base_url, auth_env, headers, env).await
}

/// Runs `bin -p "Say hello."` with a fresh HOME and `env` added.
pub async fn run_claude_bin(
    bin: &Path,
    base_url: &str,
    auth_env: (&str, &str),
    headers: &str,
    env: &[(&str, &str)],
) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(["-p", "Say hello.", "--output-format", "json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("ANTHROPIC_BASE_URL", base_url)
        .env(auth_env.0, auth_env.1)
        .env("ANTHROPIC_CUSTOM_HEADERS", headers)
        .current_dir(home.path())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("claude -p finished within 180 s")
        .expect("claude runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_print_mode_through_tollgate_is_recorded_under_its_trace() {
    for version in claude_versions() {
        smoke_test_one_version(&version).await;
    }
}

/// The real-client smoke test against Claude Code `version`.
async fn smoke_test_one_version(version: &str) {
    let bin = claude_bin_of(version);
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start(dir.path(), &mock.url());

    let headers = "x-tollgate-trace-id: trace-claude-code\nx-tollgate-metadata: {\"env\":\"ci\"}";
    let out = run_claude(&bin, &tg.url, ("ANTHROPIC_AUTH_TOKEN", KEY), headers).await;
    assert_eq!(out["is_error"], false, "Claude Code {version}: {out}");
    assert!(
        out["result"]
            .as_str()
            .unwrap_or("")
            .contains("Hello from the mock provider"),
        "{out}"
    );

    let events = tg.wait_for_trace_at_least("trace-claude-code", 1).await;
    let messages: Vec<_> = events
        .iter()
        .filter(|e| e["endpoint"] == "messages")
        .collect();
    assert!(!messages.is_empty(), "{events:?}");
    for e in &messages {
        assert_eq!(e["status"], 200, "{e}");
        assert_eq!(e["team"], "eng");
        assert_eq!(e["metadata"]["env"], "ci");
        assert!(
            e["session_id"].is_string(),
            "Claude Code's session id is kept: {e}"
        );
        assert!(
            e["client"].as_str().unwrap().starts_with("claude-cli/"),
            "{e}"
        );
        assert!(e["usage"]["input_tokens"].as_u64().unwrap() > 0);
    }
    for seen in mock.received() {
        assert_eq!(seen.header("x-api-key"), Some(PROVIDER_KEY));
        assert!(seen.header("authorization").is_none());
    }

    // The same with ANTHROPIC_API_KEY (sent as x-api-key).
    let headers = "x-tollgate-trace-id: trace-claude-code-apikey";
    let out = run_claude(&bin, &tg.url, ("ANTHROPIC_API_KEY", KEY), headers).await;
    assert_eq!(out["is_error"], false, "Claude Code {version}: {out}");
    tg.wait_for_trace_at_least("trace-claude-code-apikey", 1)
        .await;
    tg.stop();
}
