//! Real Claude Code (npm `@anthropic-ai/claude-code`, installed by
//! scripts/install-test-deps.sh) through tollgate to the mock provider.
//! A missing Claude Code fails the test: it never skips.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{KEY, PROVIDER_KEY, Tollgate, start_mock};

/// Where the test command installed Claude Code.
fn claude_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("TOLLGATE_CLAUDE_BIN") {
        return PathBuf::from(bin);
    }
    let tools = std::env::var("TOLLGATE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tollgate-tools")
        });
    let bin = tools.join("claude-code/node_modules/.bin/claude");
    assert!(
        bin.exists(),
        "Claude Code is not installed at {}: run scripts/install-test-deps.sh (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Runs `claude -p` against `base_url` with a fresh HOME; returns its
/// parsed JSON output.
async fn run_claude(base_url: &str, auth_env: (&str, &str), headers: &str) -> serde_json::Value {
    let out = run_claude_output(
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

/// Runs `claude -p "Say hello."` with `env` added and returns what it
/// printed and its exit status.
pub async fn run_claude_output(
    base_url: &str,
    auth_env: (&str, &str),
    headers: &str,
    env: &[(&str, &str)],
) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(claude_bin());
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
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start(dir.path(), &mock.url());

    let headers = "x-tollgate-trace-id: trace-claude-code\nx-tollgate-metadata: {\"env\":\"ci\"}";
    let out = run_claude(&tg.url, ("ANTHROPIC_AUTH_TOKEN", KEY), headers).await;
    assert_eq!(out["is_error"], false, "{out}");
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
    let out = run_claude(&tg.url, ("ANTHROPIC_API_KEY", KEY), headers).await;
    assert_eq!(out["is_error"], false, "{out}");
    tg.wait_for_trace_at_least("trace-claude-code-apikey", 1)
        .await;
    tg.stop();
}
