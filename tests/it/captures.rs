//! Every request a current Claude Code release was captured sending
//! (`scripts/capture/capture-claude-code.sh` writes them to
//! `tests/data/claude-code/captured/<version>/<mode>/`), replayed in order
//! through tollgate: first-party, gateway mode (with a subagent, with model
//! discovery, interactive with `/usage`), Bedrock and Vertex, each with and
//! without `CLAUDE_CODE_USE_GATEWAY`. Each must get the answer the client
//! can use, and each model request must land in the lake under its
//! session and agent. The older 2.1.197 samples keep their own tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::providers::{cloud_config, start_cloud_mock};
use crate::support::{Sample, Tollgate, sample};

/// The captured modes of every version: `(version, mode, files in order)`.
fn captured() -> Vec<(String, String, Vec<PathBuf>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/claude-code/captured");
    let mut out = Vec::new();
    for version in sorted_dirs(&root) {
        for mode in sorted_dirs(&version) {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&mode)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            files.sort();
            out.push((name(&version), name(&mode), files));
        }
    }
    out
}

fn sorted_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// The provider a mode's key routes to: the one the client addressed.
fn target_of(mode: &str) -> &'static str {
    if mode.starts_with("bedrock") {
        "bedrock"
    } else if mode.starts_with("vertex") {
        "vertex"
    } else {
        "anthropic"
    }
}

/// A captured header's value.
fn header<'a>(s: &'a Sample, name: &str) -> Option<&'a str> {
    s.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether a request asks a model for an answer (and so becomes an event).
fn is_model_call(s: &Sample) -> bool {
    s.method == "POST" && !s.path.contains("count_tokens")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_captured_request_of_current_claude_code_is_served_and_recorded_by_session_and_agent()
{
    let all = captured();
    let modes: Vec<String> = all.iter().map(|(v, m, _)| format!("{v}/{m}")).collect();
    for needed in [
        "first-party",
        "gateway-subagent",
        "gateway-discovery",
        "gateway-interactive",
        "bedrock",
        "bedrock-gateway",
        "vertex",
        "vertex-gateway",
    ] {
        assert!(
            modes.iter().any(|m| m.ends_with(&format!("/{needed}"))),
            "no capture of mode {needed}: {modes:?}"
        );
    }
    let mock = start_cloud_mock().await;
    for (version, mode, files) in &all {
        replay_mode(&mock, version, mode, files).await;
    }
}

/// Replays one mode's captures through a fresh tollgate and checks what
/// landed in the lake.
async fn replay_mode(
    mock: &tollgate_mock::MockHandle,
    version: &str,
    mode: &str,
    files: &[PathBuf],
) {
    let dir = tempfile::tempdir().unwrap();
    let config = cloud_config(dir.path(), mock, target_of(mode));
    let tg = Tollgate::start_with_config(dir.path(), config);
    let trace = format!("trace-capture-{version}-{mode}").replace('.', "-");
    // (session, agent) → model calls sent.
    let mut expected: BTreeMap<(String, Option<String>), usize> = BTreeMap::new();
    for file in files {
        let rel = file
            .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/claude-code"))
            .unwrap();
        let s = sample(rel.to_str().unwrap());
        let at = format!("{version}/{mode}/{}", name(file));
        let r = s
            .replay(&tg.url, &[("x-tollgate-trace-id", &trace)])
            .send()
            .await
            .unwrap_or_else(|e| panic!("{at}: {e}"));
        let status = r.status().as_u16();
        let body = r.bytes().await.unwrap();
        check_answer(&s, status, &body, &at, &tg);
        if is_model_call(&s) {
            let session = header(&s, "x-claude-code-session-id").unwrap_or_default();
            let agent = header(&s, "x-claude-code-agent-id").map(str::to_owned);
            *expected.entry((session.to_owned(), agent)).or_default() += 1;
        }
    }
    let calls: usize = expected.values().sum();
    assert!(calls > 0, "{version}/{mode} holds no model call");
    let events = tg.wait_for_trace(&trace, calls).await;
    for ((session, agent), n) in &expected {
        let got = events
            .iter()
            .filter(|e| e["session_id"] == session.as_str())
            .filter(|e| e["agent_id"].as_str() == agent.as_deref())
            .count();
        assert_eq!(
            got, *n,
            "{version}/{mode}: events of session {session} agent {agent:?}: {events:?}"
        );
    }
    tg.stop();
}

/// What the client needs from each kind of request it was seen sending.
fn check_answer(s: &Sample, status: u16, body: &[u8], at: &str, tg: &Tollgate) {
    let text = String::from_utf8_lossy(body);
    let path = s.path.split('?').next().unwrap_or_default();
    match (s.method.as_str(), path) {
        // Warm-up and Bedrock's profile listing: Claude Code takes any
        // answer but a server error.
        ("HEAD", _) | ("GET", "/inference-profiles") => {
            assert!(status < 500, "{at}: {status} {text}")
        }
        ("GET", "/v1/models") => {
            assert_eq!(status, 200, "{at}: {text}");
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert!(
                v["data"].as_array().is_some_and(|d| !d.is_empty()),
                "{at}: {v}"
            );
        }
        // No budget covers these keys: 404 says "no spend limit" and the
        // client shows its session figures alone.
        ("GET", "/api/oauth/usage") => {
            assert!(status == 200 || status == 404, "{at}: {status} {text}")
        }
        _ => {
            assert_eq!(status, 200, "{at}: {text}\n{}", tg.log());
            assert!(!body.is_empty(), "{at}: empty answer");
        }
    }
}
