//! The cost of one request, line by line.
//!
//! `(input·P_in + w5m·P_5m + w1h·P_1h + read·P_read + out·P_out) / 1e6 × m
//!  + searches · P_search / 1000`, where:
//! - the rates are the entry's, or its prompt tier's when input + cache
//!   writes + cache reads exceed the tier's threshold (the whole request,
//!   output included), or its fast rates when `usage.speed` is `fast`;
//! - `m` = endpoint multiplier (Bedrock/Vertex regional) × the US-only
//!   premium when `usage.inference_geo` is `us` × the batch factor when
//!   `usage.service_tier` is `batch`;
//! - with `usage.iterations`, each entry is priced at its own model (all at
//!   the retry model when a fallback credit was redeemed) and the top level
//!   is not added again;
//! - a model no entry matches is priced provisionally (see [`quote`]).
//!
//! Every choice the price depends on is written into the cost's notes.

use std::borrow::Cow;
use std::fmt::Write;

use rust_decimal::Decimal;

use super::{PriceBook, PriceEntry, PriceQuery, Rates};
use crate::event::{Cost, CostLines, LlmEvent, Usage};

/// A priced request: which entry and tier, the lines, and why.
#[derive(Debug, Clone)]
pub struct Priced<'a> {
    /// The request model's entry (a stand-in for fallback rates).
    pub entry: Cow<'a, PriceEntry>,
    /// `standard`, `long_context`, `fast` or `iterations`.
    pub tier: &'static str,
    /// No entry matches some model of the request: priced by the policy.
    pub provisional: bool,
    pub lines: CostLines,
    /// Choices made, in words (stored on the event as `pricing_notes`).
    pub notes: Vec<String>,
    /// Token-price factor applied to the request model's rates.
    pub multiplier: Decimal,
    /// The request model's rates used (before the multiplier).
    pub rates: Rates,
}

/// Basis names stored on events.
pub const BASIS_TABLE: &str = "table";
/// See [`BASIS_TABLE`].
pub const BASIS_PROVISIONAL: &str = "provisional";

const MILLION: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);
const THOUSAND: Decimal = Decimal::from_parts(1_000, 0, 0, false, 0);

/// The entry a model is priced by, and whether it is its own.
struct Resolved<'a> {
    entry: Cow<'a, PriceEntry>,
    provisional: bool,
    note: Option<String>,
}

/// The model's entry; else the most recent entry of its line; else the
/// configured unknown-model rates (default: the dearest rates in force).
fn resolve<'a>(book: &'a PriceBook, q: &PriceQuery) -> Resolved<'a> {
    if let Some(e) = book.find(q) {
        return Resolved {
            entry: Cow::Borrowed(e),
            provisional: false,
            note: None,
        };
    }
    if let Some(e) = book.find_provisional(q) {
        let note = format!(
            "provisional: no entry matches {:?}; priced at {} ({}), the most recent {} entry",
            q.model,
            e.family,
            e.where_(),
            e.model_line.unwrap_or("?")
        );
        return Resolved {
            entry: Cow::Borrowed(e),
            provisional: true,
            note: Some(note),
        };
    }
    let day = q.at.date_naive();
    let (name, rates) = match book.unknown_model_rates() {
        Some(r) => ("unknown_model_rates", r.clone()),
        None => ("dearest_current_rates", book.dearest_rates(day)),
    };
    let note = format!(
        "provisional: no entry matches {:?} and it names no Claude model line; priced at {name} \
         (input ${}/M, output ${}/M)",
        q.model, rates.input, rates.output
    );
    Resolved {
        entry: Cow::Owned(PriceEntry::fallback(q.provider, name, rates, day)),
        provisional: true,
        note: Some(note),
    }
}

/// The billing facts of a response that change its price.
struct Flags {
    fast: bool,
    us_only: bool,
    batch: bool,
}

impl Flags {
    fn of(u: &Usage) -> Flags {
        Flags {
            fast: u.speed.as_deref() == Some("fast"),
            us_only: u.inference_geo.as_deref() == Some("us"),
            batch: u.service_tier.as_deref() == Some("batch"),
        }
    }
}

/// Adds a note once.
fn note(notes: &mut Vec<String>, text: String) {
    if !notes.contains(&text) {
        notes.push(text);
    }
}

/// One model's tokens priced: lines (no web search yet), tier, factor and
/// the rates used.
struct Part {
    lines: CostLines,
    tier: &'static str,
    multiplier: Decimal,
    rates: Rates,
}

/// The rates and tier for a usage: prompt tier by the request's own
/// prompt length, fast rates on top when asked for.
fn rates_for(
    e: &PriceEntry,
    u: &Usage,
    flags: &Flags,
    notes: &mut Vec<String>,
) -> (Rates, &'static str) {
    let prompt = u.input_tokens
        + u.cache_creation_5m_tokens
        + u.cache_creation_1h_tokens
        + u.cache_read_tokens;
    let tiered = e
        .long_context
        .as_ref()
        .filter(|lc| prompt > lc.above_input_tokens);
    let (rates, tier) = match tiered {
        Some(lc) => (lc.rates.clone(), "long_context"),
        None => (e.rates.clone(), "standard"),
    };
    if !flags.fast {
        return (rates, tier);
    }
    match &e.fast {
        Some(f) => {
            note(
                notes,
                format!(
                    "speed fast: {} fast-mode rates (input ${}/M, output ${}/M)",
                    e.family, f.input, f.output
                ),
            );
            (f.clone(), "fast")
        }
        None => {
            note(
                notes,
                format!(
                    "speed fast: {} has no fast-mode rates in the table; priced at its {tier} rates",
                    e.family
                ),
            );
            (rates, tier)
        }
    }
}

/// The token-price factor: endpoint × US-only premium × batch.
fn multiplier_for(e: &PriceEntry, flags: &Flags, notes: &mut Vec<String>) -> Decimal {
    let mut m = e.multiplier;
    if flags.us_only {
        match e.us_inference_multiplier {
            Some(x) => {
                m *= x;
                note(
                    notes,
                    format!("inference_geo us: x{x} on every token class ({})", e.family),
                );
            }
            None => note(
                notes,
                format!(
                    "inference_geo us: no US-only premium for {} (Claude 4.6 and later on the Claude API only)",
                    e.family
                ),
            ),
        }
    }
    if flags.batch {
        m *= e.batch_multiplier;
        note(
            notes,
            format!("service_tier batch: x{}", e.batch_multiplier),
        );
    }
    m
}

/// Prices the token classes of `u` with entry `e`.
fn price_tokens(e: &PriceEntry, u: &Usage, flags: &Flags, notes: &mut Vec<String>) -> Part {
    let (rates, tier) = rates_for(e, u, flags, notes);
    let m = multiplier_for(e, flags, notes);
    let tokens = |n: u64, per_million: Decimal| Decimal::from(n) * per_million / MILLION * m;
    let lines = CostLines {
        input_usd: tokens(u.input_tokens, rates.input),
        output_usd: tokens(u.output_tokens, rates.output),
        cache_write_5m_usd: tokens(u.cache_creation_5m_tokens, rates.cache_write_5m),
        cache_write_1h_usd: tokens(u.cache_creation_1h_tokens, rates.cache_write_1h),
        cache_read_usd: tokens(u.cache_read_tokens, rates.cache_read),
        cache_savings_usd: tokens(u.cache_read_tokens, rates.input)
            - tokens(u.cache_read_tokens, rates.cache_read),
        ..CostLines::default()
    };
    Part {
        lines,
        tier,
        multiplier: m,
        rates,
    }
}

/// Adds `b`'s token lines into `a`.
fn add(a: &mut CostLines, b: &CostLines) {
    a.input_usd += b.input_usd;
    a.output_usd += b.output_usd;
    a.cache_write_5m_usd += b.cache_write_5m_usd;
    a.cache_write_1h_usd += b.cache_write_1h_usd;
    a.cache_read_usd += b.cache_read_usd;
    a.cache_savings_usd += b.cache_savings_usd;
}

/// Prices `usage.iterations`, each at its own model (or every one at the
/// retry model when a fallback credit was redeemed). The top level is the
/// message iteration repeated, so it is added only when no iteration is
/// the message. Returns the lines and whether any model was provisional.
fn price_iterations(
    book: &PriceBook,
    q: &PriceQuery,
    usage: &Usage,
    flags: &Flags,
    notes: &mut Vec<String>,
) -> (CostLines, bool) {
    let retry = usage.fallback_credit_redeemed.then(|| {
        let last = usage.iterations.last().and_then(|i| i.model.clone());
        last.unwrap_or_else(|| q.model.to_owned())
    });
    let mut own = Vec::new();
    let mut total = CostLines::default();
    let mut provisional = false;
    let mut described = Vec::new();
    let mut steps: Vec<(&str, Option<&str>, &Usage)> = usage
        .iterations
        .iter()
        .map(|i| (i.kind.as_str(), i.model.as_deref(), &i.usage))
        .collect();
    let has_message = usage.iterations.iter().any(|i| i.kind == "message");
    if !has_message {
        steps.push(("top-level message", None, usage));
    }
    for (kind, model, u) in steps {
        let model = retry.as_deref().or(model).unwrap_or(q.model);
        let iq = PriceQuery { model, ..q.clone() };
        let r = resolve(book, &iq);
        provisional |= r.provisional;
        if let Some(n) = r.note {
            note(&mut own, n);
        }
        let part = price_tokens(&r.entry, u, flags, &mut own);
        add(&mut total, &part.lines);
        described.push(format!("{kind} at {model} ({})", part.tier));
    }
    notes.push(format!(
        "usage.iterations: {} priced each at its own model: {}; {}",
        usage.iterations.len(),
        described.join(", "),
        if has_message {
            "top-level counts not added (they repeat the message iteration)"
        } else {
            "no message iteration, so the top-level counts are priced as the message"
        }
    ));
    if let Some(m) = &retry {
        notes.push(format!(
            "fallback_credit redeemed: billed as if wholly on the retry model {m} (the last iteration's model)"
        ));
    }
    notes.extend(own);
    (total, provisional)
}

/// Prices `usage` for a query, never at $0 by accident: a model no entry
/// matches is priced provisionally (its line's most recent entry, else the
/// unknown-model rates), and says so.
pub fn quote<'a>(book: &'a PriceBook, q: &PriceQuery, usage: &Usage) -> Priced<'a> {
    let flags = Flags::of(usage);
    let main = resolve(book, q);
    let mut notes = Vec::new();
    let mut provisional = main.provisional;
    let (mut lines, tier, multiplier, rates) = if usage.iterations.is_empty() {
        notes.extend(main.note.clone());
        let p = price_tokens(&main.entry, usage, &flags, &mut notes);
        (p.lines, p.tier, p.multiplier, p.rates)
    } else {
        let (lines, any_provisional) = price_iterations(book, q, usage, &flags, &mut notes);
        provisional |= any_provisional;
        let m = multiplier_for(&main.entry, &flags, &mut Vec::new());
        (lines, "iterations", m, main.entry.rates.clone())
    };
    lines.web_search_usd =
        Decimal::from(usage.web_search_requests) * main.entry.web_search_per_1k / THOUSAND;
    lines.total_usd = lines.input_usd
        + lines.output_usd
        + lines.cache_write_5m_usd
        + lines.cache_write_1h_usd
        + lines.cache_read_usd
        + lines.web_search_usd;
    Priced {
        entry: main.entry,
        tier,
        provisional,
        lines,
        notes,
        multiplier,
        rates,
    }
}

/// Prices `usage` with the tables alone: `None` when no entry matches the
/// model (or an iteration's model).
pub fn price<'a>(book: &'a PriceBook, q: &PriceQuery, usage: &Usage) -> Option<Priced<'a>> {
    let p = quote(book, q, usage);
    (!p.provisional).then_some(p)
}

impl Priced<'_> {
    /// The tier's name as stored on events.
    pub fn tier(&self) -> &'static str {
        self.tier
    }

    /// `table` or `provisional`.
    pub fn basis(&self) -> &'static str {
        if self.provisional {
            BASIS_PROVISIONAL
        } else {
            BASIS_TABLE
        }
    }

    /// The price explained line by line, as `tollgate price` prints it.
    pub fn explain(&self, usage: &Usage) -> String {
        let e = &self.entry;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "entry     {} ({}:{}), effective from {}, {} tier, basis {}",
            e.family,
            e.file,
            e.line,
            e.effective_from,
            self.tier,
            self.basis()
        );
        if self.multiplier != Decimal::ONE {
            let _ = writeln!(out, "token prices × {}", self.multiplier.normalize());
        }
        let (l, r) = (&self.lines, &self.rates);
        for (name, n, rate, usd) in [
            ("input", usage.input_tokens, r.input, l.input_usd),
            ("output", usage.output_tokens, r.output, l.output_usd),
            (
                "cache write 5m",
                usage.cache_creation_5m_tokens,
                r.cache_write_5m,
                l.cache_write_5m_usd,
            ),
            (
                "cache write 1h",
                usage.cache_creation_1h_tokens,
                r.cache_write_1h,
                l.cache_write_1h_usd,
            ),
            (
                "cache read",
                usage.cache_read_tokens,
                r.cache_read,
                l.cache_read_usd,
            ),
        ] {
            if self.tier == "iterations" {
                let _ = writeln!(out, "{name:<15} ${}", usd.normalize());
            } else {
                let _ = writeln!(
                    out,
                    "{name:<15} {n:>10} tok × ${rate}/M = ${}",
                    usd.normalize()
                );
            }
        }
        let _ = writeln!(
            out,
            "{:<15} {:>10} req × ${}/1000 = ${}",
            "web search",
            usage.web_search_requests,
            e.web_search_per_1k,
            l.web_search_usd.normalize()
        );
        let _ = writeln!(out, "total           ${}", l.total_usd.normalize());
        for n in &self.notes {
            let _ = writeln!(out, "note      {n}");
        }
        let _ = write!(out, "source    {}", e.source);
        out
    }
}

/// The model an event is priced by: what the provider served, or else
/// what was asked for.
fn event_model(e: &LlmEvent) -> Option<&str> {
    e.model_served.as_deref().or(e.model_requested.as_deref())
}

/// Prices one event (see [`price_facts`]).
pub fn price_event(book: &PriceBook, e: &LlmEvent) -> Cost {
    let q = PriceQuery {
        provider: &e.provider,
        model: event_model(e).unwrap_or(""),
        region: e.region.as_deref(),
        at: e.started_at,
    };
    price_facts(book, Some(&q), &e.usage)
}

/// Prices usage for a query (no query: the model is unknown). An event
/// that counted nothing (refused, or failed before the provider counted
/// anything) costs $0 whatever its model; anything else is priced, at a
/// provisional basis when no entry matches its model.
pub fn price_facts(book: &PriceBook, q: Option<&PriceQuery>, usage: &Usage) -> Cost {
    let nameless;
    let q = match q {
        Some(q) => q,
        None => {
            nameless = PriceQuery {
                provider: "anthropic",
                model: "",
                region: None,
                at: chrono::Utc::now(),
            };
            &nameless
        }
    };
    let p = quote(book, q, usage);
    if usage.is_empty() && p.provisional {
        return Cost {
            price_table_version: book.version().to_owned(),
            source: None,
            family: None,
            tier: Some("no_usage".to_owned()),
            lines: Some(CostLines::default()),
            basis: None,
            notes: Vec::new(),
        };
    }
    Cost {
        price_table_version: book.version().to_owned(),
        source: None,
        family: Some(p.entry.family.clone()),
        tier: Some(p.tier.to_owned()),
        basis: Some(p.basis().to_owned()),
        notes: p.notes.clone(),
        lines: Some(p.lines),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, Utc};

    fn at(day: &str) -> chrono::DateTime<Utc> {
        NaiveDate::parse_from_str(day, "%Y-%m-%d")
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap()
            .and_utc()
    }

    fn q<'a>(model: &'a str, day: &str) -> PriceQuery<'a> {
        PriceQuery {
            provider: "anthropic",
            model,
            region: None,
            at: at(day),
        }
    }

    fn input(n: u64) -> Usage {
        Usage {
            input_tokens: n,
            ..Usage::default()
        }
    }

    #[test]
    fn unknown_model_takes_its_lines_latest_release_not_its_latest_price_change() {
        // On 2026-05-01 Sonnet 4.5's newest entry (2026-04-30, end of long
        // context) starts after Sonnet 4.6's (2026-02-17), but 4.6 is the
        // later release.
        let book = PriceBook::embedded();
        let p = quote(&book, &q("claude-sonnet-4-9", "2026-05-01"), &input(1000));
        assert!(p.provisional);
        assert_eq!(p.entry.family, "claude-sonnet-4-6");
    }

    #[test]
    fn configured_unknown_model_rates_price_a_model_of_no_line() {
        let rates = Rates {
            input: Decimal::new(7, 0),
            output: Decimal::new(70, 0),
            cache_write_5m: Decimal::new(875, 2),
            cache_write_1h: Decimal::new(14, 0),
            cache_read: Decimal::new(7, 1),
        };
        let book = PriceBook::embedded().with_unknown_model_rates(Some(rates));
        assert_ne!(book.version(), PriceBook::embedded().version());
        let p = quote(&book, &q("gpt-9", "2026-11-22"), &input(1000));
        // 1000 × $7/M = 0.007.
        assert_eq!(p.lines.total_usd.normalize().to_string(), "0.007");
        assert_eq!(p.basis(), BASIS_PROVISIONAL);
        assert_eq!(p.entry.family, "unknown_model_rates");
    }

    #[test]
    fn an_event_with_usage_is_never_free_and_says_why() {
        let book = PriceBook::embedded();
        let cost = price_facts(&book, Some(&q("claude-opus-9", "2026-11-22")), &input(1000));
        // Latest Opus is 5.5: 1000 × $4/M = 0.004.
        let lines = cost.lines.unwrap();
        assert_eq!(lines.total_usd.normalize().to_string(), "0.004");
        assert_eq!(cost.basis.as_deref(), Some(BASIS_PROVISIONAL));
        assert!(
            cost.notes[0].contains("claude-opus-5-5"),
            "{:?}",
            cost.notes
        );
        let nothing = price_facts(
            &book,
            Some(&q("claude-opus-9", "2026-11-22")),
            &Usage::default(),
        );
        assert_eq!(nothing.tier.as_deref(), Some("no_usage"));
        assert_eq!(nothing.basis, None, "nothing counted: not provisional");
    }

    #[test]
    fn an_iteration_of_an_unknown_model_makes_the_request_provisional() {
        let book = PriceBook::embedded();
        let usage = Usage::from_anthropic_json(&serde_json::json!({
            "input_tokens": 10, "iterations": [
                {"type": "advisor_message", "model": "claude-opus-9", "input_tokens": 1000},
                {"type": "message", "input_tokens": 10}
            ]
        }));
        let p = quote(&book, &q("claude-sonnet-5", "2026-11-22"), &usage);
        assert!(p.provisional);
        assert_eq!(p.tier, "iterations");
        // 1000 × $4/M (Opus 5.5) + 10 × $2/M (Sonnet 5) = 0.00402.
        assert_eq!(p.lines.total_usd.normalize().to_string(), "0.00402");
        assert!(price(&book, &q("claude-sonnet-5", "2026-11-22"), &usage).is_none());
    }
}
