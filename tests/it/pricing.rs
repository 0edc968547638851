//! Cost accounting: hand-priced cases against the shipped tables, table
//! validation, and costs on lake events (and their recomputation).

use std::path::Path;
use std::process::Command;

use chrono::{NaiveDate, Utc};
use rust_decimal::Decimal;
use tollgate::event::Usage;
use tollgate::pricing::cost::price;
use tollgate::pricing::{PriceBook, PriceQuery};

use crate::support::{Tollgate, reprice_today, start_mock};

#[derive(serde::Deserialize)]
struct Cases {
    case: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    provider: String,
    model: String,
    region: Option<String>,
    at: NaiveDate,
    usage: String,
    arithmetic: String,
    expected_usd: Decimal,
    /// `table` unless the case says `provisional`.
    #[serde(default = "table_basis")]
    expected_basis: String,
}

fn table_basis() -> String {
    "table".to_owned()
}

fn cases() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pricing_cases.toml");
    let cases: Cases = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    cases.case
}

fn noon(d: NaiveDate) -> chrono::DateTime<Utc> {
    d.and_hms_opt(12, 0, 0).unwrap().and_utc()
}

/// `tollgate price --json` for one case.
fn price_cli(c: &Case) -> serde_json::Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(["price", "--json", "--model", &c.model, "--usage", &c.usage])
        .args(["--provider", &c.provider, "--at", &c.at.to_string()]);
    if let Some(region) = &c.region {
        cmd.args(["--region", region]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        c.name,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn hand_priced_cases_match_exactly() {
    let cases = cases();
    assert!(
        cases.len() >= 100,
        "at least 100 cases, got {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for c in &cases {
        let got = price_cli(c);
        let total = got["total_usd"]
            .as_str()
            .and_then(|t| t.parse::<Decimal>().ok());
        let want = c.expected_usd.normalize();
        if total.map(|t| t.normalize()) != Some(want)
            || got["pricing_basis"] != c.expected_basis.as_str()
        {
            failures.push(format!(
                "{}: got {} ({}), want {want} ({}) ({}) notes {}",
                c.name,
                got["total_usd"],
                got["pricing_basis"],
                c.expected_basis,
                c.arithmetic,
                got["pricing_notes"]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn pricing_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pricing")
}

#[test]
fn shipped_tables_pass_pricing_check() {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["pricing", "check", "--dir"])
        .arg(pricing_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let book = PriceBook::load_dir(&pricing_dir()).unwrap();
    assert_eq!(
        book.version(),
        PriceBook::embedded().version(),
        "the binary carries the tables in pricing/"
    );
}

const ENTRY: &str = r#"
[[price]]
family = "claude-test"
match = ['^claude-test$']
examples = ["claude-test"]
effective_from = 2026-01-01
source = "https://example.com/prices"
input = "1"
output = "2"
cache_write_5m = "1.25"
cache_write_1h = "2"
cache_read = "0.1"
"#;

fn table(entries: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        format!("provider = \"anthropic\"\n{entries}"),
    )
    .unwrap();
    dir
}

fn issues(entries: &str) -> Vec<String> {
    let dir = table(entries);
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["pricing", "check", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "broken tables must fail the check");
    PriceBook::check_dir(dir.path())
        .unwrap()
        .iter()
        .map(|i| i.to_string())
        .collect()
}

#[test]
fn broken_tables_are_reported_with_file_and_line() {
    let negative = ENTRY.replace("output = \"2\"", "output = \"-2\"");
    let found = issues(&negative);
    assert!(
        found
            .iter()
            .any(|i| i.starts_with("bad.toml:3:") && i.contains("negative price output")),
        "{found:?}"
    );

    let unparsable = ENTRY.replace("'^claude-test$'", "'^claude-(test'");
    let found = issues(&unparsable);
    assert!(
        found
            .iter()
            .any(|i| i.starts_with("bad.toml:3:") && i.contains("unparsable matcher")),
        "{found:?}"
    );

    // Valid syntax, but far too large an automaton (10,000 Unicode word
    // characters): named where it is written, as a bad pattern is.
    let oversized = ENTRY.replace("'^claude-test$'", r"'^(\w{100}){100}$'");
    let found = issues(&oversized);
    assert!(
        found.iter().any(|i| i.starts_with("bad.toml:3:")
            && i.contains("unparsable matcher")
            && i.contains("the regex size limit")),
        "{found:?}"
    );

    let overlap = format!("{ENTRY}{ENTRY}");
    let found = issues(&overlap);
    assert!(
        found
            .iter()
            .any(|i| i.starts_with("bad.toml:15:") && i.contains("overlaps bad.toml:3")),
        "{found:?}"
    );

    let ended = ENTRY.replace(
        "effective_from = 2026-01-01",
        "effective_from = 2026-01-01\neffective_to = 2026-03-01",
    );
    let later = ENTRY.replace("2026-01-01", "2026-06-01");
    let found = issues(&format!("{ended}{later}"));
    assert!(
        found
            .iter()
            .any(|i| i.contains("gap: no price from 2026-03-01")),
        "{found:?}"
    );

    let wrong_example = ENTRY.replace(
        "examples = [\"claude-test\"]",
        "examples = [\"claude-tset\"]",
    );
    let found = issues(&wrong_example);
    assert!(
        found.iter().any(|i| i.contains("does not match")),
        "{found:?}"
    );

    // Another family whose pattern also takes the first one's example.
    let wider = ENTRY
        .replace("family = \"claude-test\"", "family = \"claude-test-wide\"")
        .replace("'^claude-test$'", "'^claude-test'")
        .replace(
            "examples = [\"claude-test\"]",
            "examples = [\"claude-test-wide\"]",
        );
    let found = issues(&format!("{ENTRY}{wider}"));
    assert!(
        found.iter().any(|i| i.starts_with("bad.toml:3:")
            && i.contains("model \"claude-test\" also matches claude-test-wide at bad.toml:15")),
        "{found:?}"
    );
    assert!(
        !found.iter().any(|i| i.starts_with("bad.toml:15:")),
        "the wide family's example matches only its own entry: {found:?}"
    );

    let syntax = "[[price]\nfamily = 1\n";
    let found = issues(syntax);
    assert!(
        found.iter().any(|i| i.starts_with("bad.toml:2:")),
        "{found:?}"
    );
}

#[test]
fn price_change_applies_from_its_effective_date() {
    let later = ENTRY
        .replace("2026-01-01", "2026-06-01")
        .replace("input = \"1\"", "input = \"2\"");
    let dir = table(&format!("{ENTRY}{later}"));
    let book = PriceBook::load_dir(dir.path()).unwrap();
    let usage = Usage {
        input_tokens: 1000,
        ..Usage::default()
    };
    let at = |d: &str| noon(NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap());
    let cost = |d: &str| {
        let q = PriceQuery {
            provider: "anthropic",
            model: "claude-test",
            region: None,
            at: at(d),
        };
        price(&book, &q, &usage).map(|p| p.lines.total_usd.normalize().to_string())
    };
    // 1000 × $1/M = 0.001 before; 1000 × $2/M = 0.002 from 2026-06-01.
    assert_eq!(cost("2026-05-31").as_deref(), Some("0.001"));
    assert_eq!(cost("2026-06-01").as_deref(), Some("0.002"));
    assert_eq!(cost("2025-12-31"), None, "before the first entry: unpriced");
}

#[test]
fn price_cli_prints_a_decimal_total_and_its_basis() {
    let run = |model: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args([
                "price",
                "--model",
                model,
                "--usage",
                r#"{"input_tokens":1000,"output_tokens":500}"#,
                "--json",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // 1000 × $3/M + 500 × $15/M = 0.003 + 0.0075.
    assert_eq!(run("claude-sonnet-4-5")["total_usd"], "0.0105");
    // 1000 × $5/M + 500 × $25/M = 0.005 + 0.0125.
    assert_eq!(run("claude-opus-4-8")["total_usd"], "0.0175");
    assert_eq!(run("claude-opus-4-8")["pricing_basis"], "table");
    let unknown = run("claude-opus-9");
    assert_eq!(unknown["pricing_basis"], "provisional");
    assert!(
        unknown["pricing_notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("claude-opus-5-5")),
        "{unknown}"
    );
    let explained = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "price",
            "--model",
            "claude-sonnet-4-5",
            "--usage",
            r#"{"input_tokens":1000}"#,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(explained.stdout).unwrap();
    assert!(text.contains("1000 tok × $3/M = $0.003"), "{text}");
}

fn usd(v: &serde_json::Value) -> Decimal {
    match v {
        serde_json::Value::String(s) => s.parse().unwrap(),
        serde_json::Value::Number(n) => n.to_string().parse().unwrap(),
        other => panic!("not an amount: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lake_events_carry_their_cost_and_reprice_recomputes_it() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = Tollgate::start(dir.path(), &mock.url());
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":10,"stream":true,"messages":[]}"#;
    let r = tg
        .post("/v1/messages")
        .header("x-tollgate-trace-id", "trace-cost")
        .body(body)
        .send()
        .await
        .unwrap();
    r.bytes().await.unwrap();
    let r = tg
        .post("/v1/messages")
        .header("x-tollgate-trace-id", "trace-cost")
        .body(body.replace("claude-sonnet-4-5", "claude-unknown-9"))
        .send()
        .await
        .unwrap();
    r.bytes().await.unwrap();
    let events = tg.wait_for_trace("trace-cost", 2).await;
    let known = events
        .iter()
        .find(|e| e["model_served"] == "claude-sonnet-4-5")
        .unwrap();
    // Mock usage: 42 in × $3/M = 0.000126; 17 out × $15/M = 0.000255;
    // 100 5m × $3.75/M = 0.000375; 200 1h × $6/M = 0.0012; 1000 read ×
    // $0.30/M = 0.0003; total 0.002256.
    assert_eq!(
        usd(&known["cost_usd"]),
        "0.002256".parse::<Decimal>().unwrap(),
        "{known}"
    );
    assert_eq!(
        usd(&known["cost_cache_write_1h_usd"]),
        "0.0012".parse::<Decimal>().unwrap()
    );
    assert_eq!(known["priced"], true);
    assert_eq!(known["pricing_tier"], "standard");
    let version = known["price_table_version"].as_str().unwrap().to_owned();
    assert_eq!(version, PriceBook::embedded().version());
    let unknown = events
        .iter()
        .find(|e| e["model_served"] == "claude-unknown-9")
        .unwrap();
    // No line, so the dearest rates in force (Opus 4/4.1): 42 in × $15/M =
    // 0.00063; 17 out × $75/M = 0.001275; 100 5m × $18.75/M = 0.001875;
    // 200 1h × $30/M = 0.006; 1000 read × $1.50/M = 0.0015; total 0.01128.
    assert_eq!(unknown["priced"], true, "never $0: {unknown}");
    assert_eq!(unknown["pricing_basis"], "provisional");
    assert_eq!(
        usd(&unknown["cost_usd"]),
        "0.01128".parse::<Decimal>().unwrap(),
        "{unknown}"
    );
    assert_eq!(known["pricing_basis"], "table");
    assert!(tg.metric("tollgate_provisional_events_total").await >= 1.0);
    let config = tg.config.clone();
    tg.stop();

    // The lake has a model no entry matches: `pricing check --lake` names it.
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["pricing", "check", "--lake", "--dir"])
        .arg(pricing_dir())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{warnings}");
    assert!(
        warnings.contains("anthropic model \"claude-unknown-9\" seen in the lake"),
        "{warnings}"
    );
    assert!(!warnings.contains("claude-sonnet-4-5"), "{warnings}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 without an entry"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Twice the Sonnet 4.5 prices: every line doubles, total 0.004512.
    let printed = reprice_today(
        &config,
        r#"
family = "claude-sonnet-4-5"
match = ['^claude-sonnet-4-5(-\d{8})?$']
effective_from = 2025-09-29
source = "https://example.com/doubled"
input = "6"
output = "30"
cache_write_5m = "7.5"
cache_write_1h = "12"
cache_read = "0.6"
"#,
    );
    assert!(printed.contains("repriced 2 events"), "{printed}");

    let tg = Tollgate::start_with_config(dir.path(), config);
    let events = tg.wait_for_trace("trace-cost", 2).await;
    let known = events
        .iter()
        .find(|e| e["model_served"] == "claude-sonnet-4-5")
        .unwrap();
    assert_eq!(
        usd(&known["cost_usd"]),
        "0.004512".parse::<Decimal>().unwrap(),
        "{known}"
    );
    assert_ne!(known["price_table_version"], version.as_str());
    assert_eq!(known["usage"]["input_tokens"], 42, "facts are untouched");
    tg.stop();
}

/// A copy of the shipped tables to import into.
fn tables_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(pricing_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

fn import(dir: &Path, fixture: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "pricing",
            "import",
            "--effective-from",
            "2026-12-01",
            "--from",
        ])
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/import")
                .join(fixture),
        )
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap()
}

fn price_with(dir: &Path, model: &str, at: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["price", "--json", "--model", model, "--at", at, "--pricing-dir"])
        .arg(dir)
        .args(["--usage", r#"{"input_tokens":1000,"cache_creation_input_tokens":1000,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":1000}}"#])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn litellm_import_shows_a_diff_and_refuses_contradictions_unless_accepted() {
    let dir = tables_copy();
    let before = std::fs::read_to_string(dir.path().join("anthropic.toml")).unwrap();
    let out = import(dir.path(), "model_prices_and_context_window.json", &[]);
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{diff}");
    // LiteLLM's known error: Claude 3 Haiku's 1-hour write at $6/M.
    assert!(diff.contains("~ anthropic claude-3-haiku-20240307 (entry claude-3-haiku): cache_write_1h $0.5/M -> $6/M"), "{diff}");
    assert!(
        diff.contains("+ anthropic claude-opus-9: new entry from 2026-12-01"),
        "{diff}"
    );
    // Sonnet 4.5, Bedrock us. Opus 4.8 at ×1.1, Vertex Opus 4.8 agree; gpt-4o is not Claude.
    assert!(diff.contains("= 3 model(s) agree"), "{diff}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--accept-changes"));
    let after = std::fs::read_to_string(dir.path().join("anthropic.toml")).unwrap();
    assert_eq!(before, after, "nothing written when refused");

    let out = import(
        dir.path(),
        "model_prices_and_context_window.json",
        &["--accept-changes"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 1000 × $6/M + 1000 1h × $12/M = 0.018, from the table now.
    let opus9 = price_with(dir.path(), "claude-opus-9", "2026-12-02");
    assert_eq!(opus9["total_usd"], "0.018");
    assert_eq!(opus9["pricing_basis"], "table");
    // The accepted change applies from its date; the past keeps the old
    // price: 1000 × $0.25/M + 1000 × $0.50/M = 0.00075 before,
    // 1000 × $0.25/M + 1000 × $6/M = 0.00625 from 2026-12-01.
    assert_eq!(
        price_with(dir.path(), "claude-3-haiku-20240307", "2026-11-30")["total_usd"],
        "0.00075"
    );
    assert_eq!(
        price_with(dir.path(), "claude-3-haiku-20240307", "2026-12-01")["total_usd"],
        "0.00625"
    );
}

#[test]
fn portkey_import_adds_missing_models_from_cents_per_token() {
    let dir = tables_copy();
    let out = import(dir.path(), "portkey/anthropic.json", &[]);
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{diff}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        diff.contains("+ anthropic claude-sonnet-6: new entry from 2026-12-01: input $2.5/M"),
        "{diff}"
    );
    assert!(diff.contains("= 1 model(s) agree"), "{diff}");
    // 1000 × $2.5/M + 1000 1h × $5/M = 0.0075.
    let sonnet6 = price_with(dir.path(), "claude-sonnet-6", "2026-12-02");
    assert_eq!(sonnet6["total_usd"], "0.0075");
    assert_eq!(sonnet6["pricing_basis"], "table");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_price_tables_and_events_name_the_version() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let tables = tables_copy();
    let extra = format!(
        "\n[pricing]\ndir = {:?}\n",
        tables.path().display().to_string()
    );
    let config = crate::support::write_config(dir.path(), &mock.url(), &extra);
    let tg = Tollgate::start_with_config(dir.path(), config);
    let body = r#"{"model":"claude-opus-9","max_tokens":10,"messages":[]}"#;
    let send = |trace: &'static str| {
        tg.post("/v1/messages")
            .header("x-tollgate-trace-id", trace)
            .body(body)
            .send()
    };
    send("trace-before-reload")
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let before = tg.wait_for_trace("trace-before-reload", 1).await;
    assert_eq!(before[0]["pricing_basis"], "provisional", "{}", before[0]);
    let old_version = before[0]["price_table_version"]
        .as_str()
        .unwrap()
        .to_owned();

    let path = tables.path().join("anthropic.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(
        "\n[[price]]\nfamily = \"claude-opus-9\"\nmatch = ['^claude-opus-9$']\nexamples = [\"claude-opus-9\"]\neffective_from = 2026-01-01\nsource = \"https://example.com/opus-9\"\ninput = \"6\"\noutput = \"30\"\ncache_write_5m = \"7.5\"\ncache_write_1h = \"12\"\ncache_read = \"0.6\"\n",
    );
    std::fs::write(&path, text).unwrap();
    let new_version = PriceBook::load_dir(tables.path())
        .unwrap()
        .version()
        .to_owned();
    Command::new("kill")
        .args(["-HUP", &tg.child.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !tg.log().contains("price tables reloaded") {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload logged:\n{}",
            tg.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    send("trace-after-reload")
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let after = tg.wait_for_trace("trace-after-reload", 1).await;
    let e = &after[0];
    assert_eq!(e["pricing_basis"], "table", "{e}");
    assert_eq!(e["price_table_version"], new_version.as_str());
    assert_ne!(new_version, old_version);
    // Mock usage at the new entry: 42 × 6 + 17 × 30 + 100 × 7.5 + 200 × 12
    // + 1000 × 0.6 = 4512 per million.
    assert_eq!(usd(&e["cost_usd"]), "0.004512".parse::<Decimal>().unwrap());
    tg.stop();
}
