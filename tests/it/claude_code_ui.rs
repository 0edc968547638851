//! The interactive Claude Code (the newest pinned release) through tollgate
//! in gateway mode, driven under tmux and read off its screen with
//! capture-pane: what a developer sees of their budget in their own
//! terminal. Needs tmux (installed by scripts/install-test-deps.sh).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::claude_code::claude_bin;
use crate::support::{KEY, Tollgate, client, start_mock, write_config};

/// One interactive Claude Code in a detached tmux session; killed on drop.
struct Terminal {
    session: String,
}

impl Terminal {
    /// Starts `claude` in `home` (onboarding and folder trust answered in
    /// its `~/.claude.json`) with `env` added to a clean environment.
    fn start(home: &Path, env: &[(&str, &str)]) -> Terminal {
        let session = format!("tollgate-ui-{}", std::process::id());
        std::fs::write(
            home.join(".claude.json"),
            serde_json::json!({
                "hasCompletedOnboarding": true,
                "projects": { home.to_str().unwrap(): { "hasTrustDialogAccepted": true } },
            })
            .to_string(),
        )
        .unwrap();
        let mut cmd = Command::new("tmux");
        cmd.args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "160",
            "-y",
            "50",
            "-c",
        ])
        .arg(home)
        .args(["env", "-i"])
        .arg(format!(
            "PATH={}",
            std::env::var("PATH").unwrap_or_default()
        ))
        .arg(format!("HOME={}", home.display()))
        .args(["TERM=xterm-256color", "DISABLE_TELEMETRY=1"]);
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        let status = cmd
            .arg(claude_bin())
            .status()
            .expect("tmux runs (install-test-deps installs it)");
        assert!(status.success(), "tmux new-session failed");
        Terminal { session }
    }

    /// What the terminal shows now.
    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows every one of `texts`; returns it.
    async fn wait_for(&self, texts: &[&str], tg: &Tollgate) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if texts.iter().all(|t| screen.contains(t)) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the terminal never showed {texts:?}:\n{screen}\ntollgate:\n{}",
                tg.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Types a line as a person does: the text, then Enter apart (keys
    /// sent together with Enter can arrive before the input box takes them).
    async fn type_line(&self, line: &str) {
        self.keys(&[line]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.keys(&["Enter"]);
    }

    fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.session])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .status();
    }
}

/// Spends `n` mock answers (1,359 tokens each) of the key's budget.
async fn spend(tg: &Tollgate, n: usize) {
    let body = r#"{"model":"claude-haiku-4-5","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;
    let http = client();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let r = http
            .post(format!("{}/v1/messages", tg.url))
            .bearer_auth(KEY)
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
            .body(body);
        tasks.spawn(async move { r.send().await.unwrap().status().as_u16() });
        if tasks.len() >= 8 {
            assert_eq!(tasks.join_next().await.unwrap().unwrap(), 200);
        }
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_developers_terminal_shows_the_budget_warning_the_refusal_and_the_spend_limit() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    // A team token budget: 230 small answers use 78 % of it, and Claude
    // Code's own Opus request (64,000 max_tokens reserved) no longer fits.
    let extra = "\n[[budgets]]\nname = \"eng-daily\"\nscope = \"team\"\nsubject = \"eng\"\nperiod = \"daily\"\nlimit_tokens = 400000\n";
    let tg = Tollgate::start_with_config(dir.path(), write_config(dir.path(), &mock.url(), extra));
    spend(&tg, 230).await;
    let home = tempfile::tempdir().unwrap();
    let terminal = Terminal::start(
        home.path(),
        &[
            ("CLAUDE_CODE_USE_GATEWAY", "1"),
            ("ANTHROPIC_BASE_URL", &tg.url),
            ("ANTHROPIC_AUTH_TOKEN", KEY),
        ],
    );
    terminal.wait_for(&["shift+tab to cycle"], &tg).await;
    terminal.type_line("Say hello.").await;
    // Past 75 %: Claude Code's own usage notice, from tollgate's
    // anthropic-ratelimit-unified-* headers; then the refusal, naming the
    // budget, its spend and its reset, shown as the client shows its own.
    let screen = terminal
        .wait_for(
            &[
                "of your usage credits",
                "budget eng-daily (eng) would be exceeded",
                "tokens spent of 400000 tokens; resets",
            ],
            &tg,
        )
        .await;
    assert!(
        screen.contains("You've used 78%") || screen.contains("You've used 79%"),
        "the notice names the share used:\n{screen}"
    );
    // `/usage` draws the spend limit from the same budget.
    terminal.type_line("/usage").await;
    terminal.wait_for(&["Spend limit", "Resets"], &tg).await;
    drop(terminal);
    tg.stop();
}
