//! Price tables (data in `pricing/*.toml`) and the lookup of the entry in
//! force for one model at one time.
//!
//! Tables are data so a price change is a reviewed edit, not a release:
//! each entry names its family, the regexes its model IDs match, its prices
//! per million tokens, its effective dates and its source. The book's
//! version is a hash of the files, stored on every priced event.
//!
//! Shared like `event`: the accountant prices events with it, and the
//! gateway prices a request's worst case before admitting it.

pub mod cost;
pub mod import;
mod match_cache;
mod matcher;

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The shipped tables, compiled in so the binary prices without the repo.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "anthropic.toml",
        include_str!("../../pricing/anthropic.toml"),
    ),
    ("bedrock.toml", include_str!("../../pricing/bedrock.toml")),
    ("vertex.toml", include_str!("../../pricing/vertex.toml")),
];

/// Providers a table may be for.
const PROVIDERS: &[&str] = &["anthropic", "bedrock", "vertex"];

/// One problem in a table, located by file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricingIssue {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for PricingIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Why tables could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("cannot read price tables in {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid price tables:\n{}", .0.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<PricingIssue>),
}

/// Which kind of endpoint served a Bedrock or Vertex request: the price
/// can differ between global and regional ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    Global,
    Regional,
}

/// Prices per million tokens of one tier.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rates {
    pub input: Decimal,
    pub output: Decimal,
    pub cache_write_5m: Decimal,
    pub cache_write_1h: Decimal,
    pub cache_read: Decimal,
}

/// The long-context tier: above the threshold (input + cache writes +
/// cache reads), the whole request is priced at these rates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongContext {
    pub above_input_tokens: u64,
    #[serde(flatten)]
    pub rates: Rates,
}

/// A table entry as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    family: String,
    #[serde(rename = "match")]
    matchers: Vec<String>,
    #[serde(default)]
    examples: Vec<String>,
    effective_from: toml::Value,
    #[serde(default)]
    effective_to: Option<toml::Value>,
    source: String,
    #[serde(default)]
    endpoint: Option<EndpointKind>,
    #[serde(default)]
    multiplier: Option<Decimal>,
    #[serde(flatten)]
    rates: Rates,
    #[serde(default)]
    web_search_per_1k: Decimal,
    /// The whole request above a prompt length (Sonnet 4/4.5's 200K long
    /// context, Haiku 5.5's 100K tier); `prompt_tier` is the same thing.
    #[serde(default, alias = "prompt_tier")]
    long_context: Option<LongContext>,
    #[serde(default)]
    fast: Option<Rates>,
    #[serde(default)]
    us_inference_multiplier: Option<Decimal>,
    #[serde(default)]
    batch_multiplier: Option<Decimal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    provider: String,
    #[serde(default)]
    price: Vec<toml::Spanned<toml::Value>>,
}

/// A checked, compiled table entry.
#[derive(Debug, Clone)]
pub struct PriceEntry {
    pub provider: String,
    pub family: String,
    matchers: Vec<matcher::Matcher>,
    pub examples: Vec<String>,
    pub effective_from: NaiveDate,
    pub effective_to: Option<NaiveDate>,
    pub source: String,
    pub endpoint: Option<EndpointKind>,
    pub multiplier: Decimal,
    pub rates: Rates,
    pub web_search_per_1k: Decimal,
    pub long_context: Option<LongContext>,
    /// Fast-mode rates (`usage.speed = "fast"`), cache classes included;
    /// other multipliers apply on top. None: the model has no fast mode.
    pub fast: Option<Rates>,
    /// Premium for US-only inference (`usage.inference_geo = "us"`), on
    /// every token class; None: the model or provider has none.
    pub us_inference_multiplier: Option<Decimal>,
    /// Factor for batch requests (`usage.service_tier = "batch"`): 0.5
    /// unless the entry says otherwise.
    pub batch_multiplier: Decimal,
    /// The model line (`opus`, `sonnet`, `haiku`, `fable`, `mythos`) the
    /// family belongs to, for pricing unknown models of the same line.
    pub model_line: Option<&'static str>,
    /// When the family first had a price in this scope: the most recent
    /// release of a line is the one with the latest date.
    pub released: NaiveDate,
    pub file: String,
    pub line: usize,
}

impl PriceEntry {
    fn in_force(&self, day: NaiveDate) -> bool {
        self.effective_from <= day && self.effective_to.is_none_or(|to| day < to)
    }

    /// The entry's `match` regexes as written.
    pub fn patterns(&self) -> Vec<&str> {
        self.matchers.iter().map(|m| m.as_str()).collect()
    }

    /// Where the entry is written (`file:line`).
    pub fn where_(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    /// A stand-in entry carrying fallback rates for a model no table
    /// knows (`name` says where the rates come from).
    pub fn fallback(provider: &str, name: &str, rates: Rates, day: NaiveDate) -> PriceEntry {
        PriceEntry {
            provider: provider.to_owned(),
            family: name.to_owned(),
            matchers: Vec::new(),
            examples: Vec::new(),
            effective_from: day,
            effective_to: None,
            source: format!("tollgate unknown-model policy ({name})"),
            endpoint: None,
            multiplier: Decimal::ONE,
            rates,
            web_search_per_1k: Decimal::TEN,
            long_context: None,
            fast: None,
            us_inference_multiplier: None,
            batch_multiplier: Decimal::new(5, 1),
            model_line: None,
            released: day,
            file: "config".to_owned(),
            line: 0,
        }
    }
}

/// What to price.
#[derive(Debug, Clone)]
pub struct PriceQuery<'a> {
    pub provider: &'a str,
    pub model: &'a str,
    pub region: Option<&'a str>,
    pub at: DateTime<Utc>,
}

/// Every price table, checked.
#[derive(Debug, Clone)]
pub struct PriceBook {
    entries: Vec<PriceEntry>,
    version: String,
    /// `[pricing] unknown_model_rates`: what a model of no known line costs
    /// (None: the dearest rates in force).
    unknown_rates: Option<Rates>,
    /// Every entry's `match` patterns, compiled together.
    patterns: matcher::PatternSet,
    /// Which entries match each model name looked up so far.
    matching: match_cache::MatchCache,
}

/// The price tables in use, shared by admission and the accountant and
/// replaced whole on reload (SIGHUP): readers take the current book and
/// price with it, so an event is priced by exactly one version.
#[derive(Debug, Clone)]
pub struct SharedBook(std::sync::Arc<std::sync::RwLock<std::sync::Arc<PriceBook>>>);

impl SharedBook {
    /// Shares `book`.
    pub fn new(book: PriceBook) -> SharedBook {
        SharedBook(std::sync::Arc::new(std::sync::RwLock::new(
            std::sync::Arc::new(book),
        )))
    }

    /// The book in use now (the lock is held only to clone the pointer).
    pub fn current(&self) -> std::sync::Arc<PriceBook> {
        match self.0.read() {
            Ok(b) => b.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `book` in use for everything priced from now on.
    pub fn replace(&self, book: PriceBook) {
        let book = std::sync::Arc::new(book);
        match self.0.write() {
            Ok(mut b) => *b = book,
            Err(poisoned) => *poisoned.into_inner() = book,
        }
    }
}

/// Model lines whose unknown members are priced like their latest release.
const MODEL_LINES: &[&str] = &["opus", "sonnet", "haiku", "fable", "mythos"];

/// The model line a model ID or family name belongs to: `claude-opus-9`,
/// `us.anthropic.claude-opus-9-v1` and `claude-3-7-sonnet` name one.
pub fn model_line(id: &str) -> Option<&'static str> {
    let at = id.find("claude-")? + "claude-".len();
    id[at..]
        .split(['-', '@', '.', ':'])
        .find_map(|part| MODEL_LINES.iter().find(|l| **l == part).copied())
}

impl PriceBook {
    /// The tables shipped in `pricing/`, compiled into the binary.
    pub fn embedded() -> PriceBook {
        let files: Vec<(String, String)> = EMBEDDED
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect();
        // The shipped tables are checked by the test suite.
        PriceBook::from_files(&files).expect("shipped price tables are valid")
    }

    /// Loads every `*.toml` in `dir`; any issue refuses the whole book.
    pub fn load_dir(dir: &Path) -> Result<PriceBook, PricingError> {
        PriceBook::from_files(&read_dir(dir)?)
    }

    /// Every issue in the tables of `dir` (empty when they are valid).
    pub fn check_dir(dir: &Path) -> Result<Vec<PricingIssue>, PricingError> {
        Ok(match PriceBook::from_files(&read_dir(dir)?) {
            Ok(_) => Vec::new(),
            Err(PricingError::Invalid(issues)) => issues,
            Err(e) => return Err(e),
        })
    }

    /// Builds a book from `(file name, text)` pairs.
    pub fn from_files(files: &[(String, String)]) -> Result<PriceBook, PricingError> {
        let mut issues = Vec::new();
        let mut entries = Vec::new();
        let mut hash = Sha256::new();
        let mut sorted: Vec<&(String, String)> = files.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, text) in sorted {
            hash.update(name.as_bytes());
            hash.update([0]);
            hash.update(text.as_bytes());
            hash.update([0]);
            parse_file(name, text, &mut entries, &mut issues);
        }
        let patterns = compile_patterns(&entries, &mut issues);
        if let Some(patterns) = &patterns {
            check_book(&entries, patterns, &mut issues);
        }
        let Some(patterns) = patterns.filter(|_| issues.is_empty()) else {
            return Err(PricingError::Invalid(issues));
        };
        set_release_dates(&mut entries);
        let version = format!("sha256:{}", &hex::encode(hash.finalize())[..16]);
        Ok(PriceBook {
            entries,
            version,
            unknown_rates: None,
            patterns,
            matching: match_cache::MatchCache::default(),
        })
    }

    /// The book with `[pricing] unknown_model_rates` set: part of what
    /// prices events, so part of the version.
    pub fn with_unknown_model_rates(mut self, rates: Option<Rates>) -> PriceBook {
        if let Some(r) = &rates {
            let mut hash = Sha256::new();
            hash.update(self.version.as_bytes());
            hash.update(format!("{r:?}").as_bytes());
            self.version = format!("sha256:{}", &hex::encode(hash.finalize())[..16]);
        }
        self.unknown_rates = rates;
        self
    }

    /// The configured unknown-model rates, if any.
    pub fn unknown_model_rates(&self) -> Option<&Rates> {
        self.unknown_rates.as_ref()
    }

    /// For a model no entry matches: the entry in force of the most
    /// recently released family of its line (`claude-opus-*` at the latest
    /// Opus), for the same provider and endpoint kind.
    pub fn find_provisional(&self, q: &PriceQuery) -> Option<&PriceEntry> {
        let line = model_line(q.model)?;
        let day = q.at.date_naive();
        let endpoint = endpoint_kind(q.provider, q.model, q.region);
        self.entries
            .iter()
            .filter(|e| e.provider == q.provider && e.in_force(day))
            .filter(|e| e.model_line == Some(line))
            .filter(|e| e.endpoint.is_none() || e.endpoint == endpoint)
            .max_by_key(|e| (e.released, e.effective_from))
    }

    /// The dearest rate of each class among entries in force on `day`
    /// (endpoint multipliers included): the default price of a model of no
    /// known line, so an unknown model is never cheaper than any known one.
    pub fn dearest_rates(&self, day: NaiveDate) -> Rates {
        let zero = Decimal::ZERO;
        let mut r = Rates {
            input: zero,
            output: zero,
            cache_write_5m: zero,
            cache_write_1h: zero,
            cache_read: zero,
        };
        for e in self.entries.iter().filter(|e| e.in_force(day)) {
            let m = e.multiplier;
            r.input = r.input.max(e.rates.input * m);
            r.output = r.output.max(e.rates.output * m);
            r.cache_write_5m = r.cache_write_5m.max(e.rates.cache_write_5m * m);
            r.cache_write_1h = r.cache_write_1h.max(e.rates.cache_write_1h * m);
            r.cache_read = r.cache_read.max(e.rates.cache_read * m);
        }
        r
    }

    /// The content hash identifying these tables.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether any entry, of any provider and time, prices `model`.
    pub fn knows_model(&self, model: &str) -> bool {
        !self.matching(model).is_empty()
    }

    /// The model names the tables give as examples.
    pub fn example_models(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .flat_map(|e| e.examples.iter().map(String::as_str))
    }

    /// The model families `provider` has a price for on `day`, each with
    /// the day its price took effect: what a key on that provider may be
    /// offered (`GET /v1/models`).
    pub fn families_in_force(&self, provider: &str, day: NaiveDate) -> Vec<(&str, NaiveDate)> {
        self.entries
            .iter()
            .filter(|e| e.provider == provider && e.in_force(day))
            .map(|e| (e.family.as_str(), e.effective_from))
            .collect()
    }

    /// The entry in force for a model at a time, if any.
    pub fn find(&self, q: &PriceQuery) -> Option<&PriceEntry> {
        let day = q.at.date_naive();
        let endpoint = endpoint_kind(q.provider, q.model, q.region);
        self.matching(q.model)
            .iter()
            .map(|&i| &self.entries[i as usize])
            .filter(|e| e.provider == q.provider && e.in_force(day))
            .filter(|e| e.endpoint.is_none() || e.endpoint == endpoint)
            .max_by_key(|e| e.effective_from)
    }

    /// Indices (ascending) of the entries whose regexes match `model`,
    /// computed once per name.
    fn matching(&self, model: &str) -> std::sync::Arc<[u32]> {
        self.matching
            .get_or_compute(model, || self.patterns.entries_matching(model))
    }
}

/// Global or regional, as far as the provider's price depends on it:
/// Bedrock says it in the model ID (`global.` profiles), Vertex in the
/// location (an event without one is taken as global).
fn endpoint_kind(provider: &str, model: &str, region: Option<&str>) -> Option<EndpointKind> {
    match provider {
        "bedrock" => {
            let id = model.rsplit('/').next().unwrap_or(model);
            Some(if id.starts_with("global.") {
                EndpointKind::Global
            } else {
                EndpointKind::Regional
            })
        }
        "vertex" => Some(match region {
            None | Some("global") => EndpointKind::Global,
            Some(_) => EndpointKind::Regional,
        }),
        _ => None,
    }
}

/// Sets each entry's `released`: the first `effective_from` of its family
/// with the same provider and endpoint kind.
fn set_release_dates(entries: &mut [PriceEntry]) {
    let firsts: Vec<NaiveDate> = entries
        .iter()
        .map(|a| {
            entries
                .iter()
                .filter(|b| b.family == a.family && b.provider == a.provider)
                .filter(|b| b.endpoint == a.endpoint)
                .map(|b| b.effective_from)
                .min()
                .unwrap_or(a.effective_from)
        })
        .collect();
    for (e, first) in entries.iter_mut().zip(firsts) {
        e.released = first;
    }
}

fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, PricingError> {
    let read = |source| PricingError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|source| PricingError::Read {
            path: path.clone(),
            source,
        })?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_owned();
        files.push((name, text));
    }
    Ok(files)
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// A TOML date (`2025-09-29`), which reaches here as a datetime or, after
/// passing through `toml::Value`, as its text.
fn to_date(v: &toml::Value) -> Option<NaiveDate> {
    match v {
        toml::Value::Datetime(d) if d.time.is_none() => {
            let date = d.date?;
            NaiveDate::from_ymd_opt(
                i32::from(date.year),
                u32::from(date.month),
                u32::from(date.day),
            )
        }
        toml::Value::String(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d").ok(),
        _ => None,
    }
}

fn parse_file(
    name: &str,
    text: &str,
    entries: &mut Vec<PriceEntry>,
    issues: &mut Vec<PricingIssue>,
) {
    let issue = |line: usize, message: String| PricingIssue {
        file: name.to_owned(),
        line,
        message,
    };
    let table: RawTable = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
            issues.push(issue(line, e.message().to_owned()));
            return;
        }
    };
    if !PROVIDERS.contains(&table.provider.as_str()) {
        issues.push(issue(
            1,
            format!(
                "unknown provider {:?} (one of {})",
                table.provider,
                PROVIDERS.join(", ")
            ),
        ));
        return;
    }
    for spanned in table.price {
        let line = line_of(text, spanned.span().start);
        let raw: RawEntry = match spanned.into_inner().try_into() {
            Ok(raw) => raw,
            Err(e) => {
                issues.push(issue(
                    line,
                    format!("entry: {}", toml::de::Error::message(&e)),
                ));
                continue;
            }
        };
        if let Some(entry) = compile_entry(&table.provider, name, line, raw, issues) {
            entries.push(entry);
        }
    }
}

fn compile_entry(
    provider: &str,
    file: &str,
    line: usize,
    raw: RawEntry,
    issues: &mut Vec<PricingIssue>,
) -> Option<PriceEntry> {
    let start = issues.len();
    let mut bad = |message: String| {
        issues.push(PricingIssue {
            file: file.to_owned(),
            line,
            message: format!("{}: {message}", raw.family),
        })
    };
    let mut matchers = Vec::new();
    for m in &raw.matchers {
        match matcher::Matcher::new(m) {
            Ok(r) => matchers.push(r),
            Err(e) => bad(format!("unparsable matcher {m:?}: {e}")),
        }
    }
    if raw.matchers.is_empty() {
        bad("no `match` patterns".into());
    }
    let effective_from = to_date(&raw.effective_from);
    if effective_from.is_none() {
        bad("effective_from must be a date (YYYY-MM-DD)".into());
    }
    let effective_to = match &raw.effective_to {
        Some(d) => match to_date(d) {
            Some(d) => Some(d),
            None => {
                bad("effective_to must be a date (YYYY-MM-DD)".into());
                None
            }
        },
        None => None,
    };
    if let (Some(from), Some(to)) = (effective_from, effective_to)
        && to <= from
    {
        bad(format!(
            "effective_to {to} is not after effective_from {from}"
        ));
    }
    let multiplier = raw.multiplier.unwrap_or(Decimal::ONE);
    let mut prices = vec![
        ("input", raw.rates.input),
        ("output", raw.rates.output),
        ("cache_write_5m", raw.rates.cache_write_5m),
        ("cache_write_1h", raw.rates.cache_write_1h),
        ("cache_read", raw.rates.cache_read),
        ("web_search_per_1k", raw.web_search_per_1k),
    ];
    if let Some(f) = &raw.fast {
        prices.extend([
            ("fast.input", f.input),
            ("fast.output", f.output),
            ("fast.cache_write_5m", f.cache_write_5m),
            ("fast.cache_write_1h", f.cache_write_1h),
            ("fast.cache_read", f.cache_read),
        ]);
    }
    if let Some(lc) = &raw.long_context {
        prices.extend([
            ("long_context.input", lc.rates.input),
            ("long_context.output", lc.rates.output),
            ("long_context.cache_write_5m", lc.rates.cache_write_5m),
            ("long_context.cache_write_1h", lc.rates.cache_write_1h),
            ("long_context.cache_read", lc.rates.cache_read),
        ]);
    }
    for (name, v) in prices {
        if v.is_sign_negative() {
            bad(format!("negative price {name} = {v}"));
        }
    }
    let batch_multiplier = raw.batch_multiplier.unwrap_or(Decimal::new(5, 1));
    for (name, m) in [
        ("multiplier", Some(multiplier)),
        ("us_inference_multiplier", raw.us_inference_multiplier),
        ("batch_multiplier", Some(batch_multiplier)),
    ] {
        if m.is_some_and(|m| m <= Decimal::ZERO) {
            bad(format!(
                "{name} must be positive, got {}",
                m.unwrap_or_default()
            ));
        }
    }
    if !raw.source.starts_with("http") {
        bad("source must be the URL the prices come from".into());
    }
    if issues.len() > start {
        return None;
    }
    let entry = PriceEntry {
        provider: provider.to_owned(),
        family: raw.family.clone(),
        matchers,
        examples: raw.examples,
        effective_from: effective_from?,
        effective_to,
        source: raw.source,
        endpoint: raw.endpoint,
        multiplier,
        rates: raw.rates,
        web_search_per_1k: raw.web_search_per_1k,
        long_context: raw.long_context,
        fast: raw.fast,
        us_inference_multiplier: raw.us_inference_multiplier,
        batch_multiplier,
        model_line: model_line(&raw.family),
        released: effective_from?,
        file: file.to_owned(),
        line,
    };
    Some(entry)
}

/// Every entry's patterns compiled together; `None` (with issues) when
/// they are too large to.
fn compile_patterns(
    entries: &[PriceEntry],
    issues: &mut Vec<PricingIssue>,
) -> Option<matcher::PatternSet> {
    let patterns = (0u32..)
        .zip(entries)
        .flat_map(|(i, e)| e.matchers.iter().map(move |m| (i, m)));
    let together = match matcher::PatternSet::new(patterns) {
        Ok(set) => return Some(set),
        Err(e) => e,
    };
    let before = issues.len();
    name_oversized_patterns(entries, issues);
    if issues.len() == before {
        let first = entries.first();
        issues.push(PricingIssue {
            file: first.map(|e| e.file.clone()).unwrap_or_default(),
            line: first.map_or(0, |e| e.line),
            message: format!(
                "the tables' `match` patterns do not compile together: {}",
                matcher::why(&together)
            ),
        });
    }
    None
}

/// An issue, where it is written, for each pattern too large to compile
/// even on its own (only when the set did not compile: the one-by-one
/// compile costs what the set saves).
fn name_oversized_patterns(entries: &[PriceEntry], issues: &mut Vec<PricingIssue>) {
    for entry in entries {
        for m in &entry.matchers {
            if let Err(e) = matcher::PatternSet::new([(0, m)]) {
                issues.push(PricingIssue {
                    file: entry.file.clone(),
                    line: entry.line,
                    message: format!(
                        "{}: unparsable matcher {:?}: {}",
                        entry.family,
                        m.as_str(),
                        matcher::why(&e)
                    ),
                });
            }
        }
    }
}

/// Whether two entries can apply to the same request (same provider,
/// compatible endpoint).
fn same_scope(a: &PriceEntry, b: &PriceEntry) -> bool {
    a.provider == b.provider
        && (a.endpoint.is_none() || b.endpoint.is_none() || a.endpoint == b.endpoint)
}

/// Examples that miss their own entry, overlaps and gaps between
/// entries.
fn check_book(
    entries: &[PriceEntry],
    patterns: &matcher::PatternSet,
    issues: &mut Vec<PricingIssue>,
) {
    let at = |e: &PriceEntry, message: String| PricingIssue {
        file: e.file.clone(),
        line: e.line,
        message,
    };
    // Which entries each entry's examples match.
    let matched: Vec<Vec<Vec<u32>>> = entries
        .iter()
        .map(|e| {
            let each = e.examples.iter();
            each.map(|ex| patterns.entries_matching(ex)).collect()
        })
        .collect();
    for ((i, a), by_example) in (0u32..).zip(entries).zip(&matched) {
        for (ex, hits) in a.examples.iter().zip(by_example) {
            if hits.binary_search(&i).is_err() {
                let family = &a.family;
                let message =
                    format!("{family}: example {ex:?} does not match the entry's patterns");
                issues.push(at(a, message));
            }
        }
    }
    // An example that another family's entry also matches is ambiguous.
    for (a, by_example) in entries.iter().zip(&matched) {
        for (j, b) in (0u32..).zip(entries) {
            let matches_b = |(_, hits): &(&String, &Vec<u32>)| hits.binary_search(&j).is_ok();
            if a.family != b.family
                && same_scope(a, b)
                && let Some((ex, _)) = a.examples.iter().zip(by_example).find(matches_b)
            {
                issues.push(at(
                    a,
                    format!(
                        "{}: model {ex:?} also matches {} at {}",
                        a.family,
                        b.family,
                        b.where_()
                    ),
                ));
            }
        }
    }
    // Within one family and scope, periods must follow each other.
    let mut seen = std::collections::HashSet::new();
    for a in entries {
        let mut timeline: Vec<&PriceEntry> = entries
            .iter()
            .filter(|b| b.family == a.family && same_scope(a, b) && a.endpoint == b.endpoint)
            .collect();
        timeline.sort_by_key(|e| e.effective_from);
        for pair in timeline.windows(2) {
            let (prev, next) = (pair[0], pair[1]);
            if !seen.insert((prev.where_(), next.where_())) {
                continue;
            }
            if prev.effective_from == next.effective_from {
                issues.push(at(
                    next,
                    format!(
                        "{}: overlaps {} (both effective from {})",
                        next.family,
                        prev.where_(),
                        next.effective_from
                    ),
                ));
            } else if let Some(to) = prev.effective_to {
                if to > next.effective_from {
                    issues.push(at(
                        next,
                        format!(
                            "{}: overlaps {} (that one runs to {to}, this starts {})",
                            next.family,
                            prev.where_(),
                            next.effective_from
                        ),
                    ));
                } else if to < next.effective_from {
                    issues.push(at(
                        next,
                        format!(
                            "{}: gap: no price from {to} (end of {}) to {}",
                            next.family,
                            prev.where_(),
                            next.effective_from
                        ),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_tables_load_and_have_a_version() {
        let book = PriceBook::embedded();
        assert!(book.version().starts_with("sha256:"));
        assert!(book.entries.len() >= 40);
    }

    #[test]
    fn bedrock_global_and_regional_ids_find_different_entries() {
        let book = PriceBook::embedded();
        let at = Utc::now();
        let q = |model| PriceQuery {
            provider: "bedrock",
            model,
            region: None,
            at,
        };
        let global = book
            .find(&q("global.anthropic.claude-sonnet-4-5-20250929-v1:0"))
            .unwrap();
        let regional = book
            .find(&q("us.anthropic.claude-sonnet-4-5-20250929-v1:0"))
            .unwrap();
        assert_eq!(global.multiplier, Decimal::ONE);
        assert_eq!(regional.multiplier, Decimal::new(11, 1));
    }
}
