//! The cost of one request, line by line.
//!
//! `(input·P_in + w5m·P_5m + w1h·P_1h + read·P_read + out·P_out) / 1e6 × multiplier
//!  + searches · P_search / 1000`, with the whole request at long-context
//! prices when input + cache writes + cache reads exceed the entry's
//! threshold.

use std::fmt::Write;

use rust_decimal::Decimal;

use super::{PriceBook, PriceEntry, PriceQuery, Rates};
use crate::event::{Cost, CostLines, LlmEvent, Usage};

/// A priced request: which entry and tier, and the lines.
#[derive(Debug, Clone)]
pub struct Priced<'a> {
    pub entry: &'a PriceEntry,
    pub long_context: bool,
    pub lines: CostLines,
}

const MILLION: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);
const THOUSAND: Decimal = Decimal::from_parts(1_000, 0, 0, false, 0);

/// Prices `usage` with the entry in force for the query, if any.
pub fn price<'a>(book: &'a PriceBook, q: &PriceQuery, usage: &Usage) -> Option<Priced<'a>> {
    let entry = book.find(q)?;
    let prompt = usage.input_tokens
        + usage.cache_creation_5m_tokens
        + usage.cache_creation_1h_tokens
        + usage.cache_read_tokens;
    let long = entry
        .long_context
        .as_ref()
        .filter(|lc| prompt > lc.above_input_tokens);
    let rates: &Rates = long.map(|lc| &lc.rates).unwrap_or(&entry.rates);
    let tokens =
        |n: u64, per_million: Decimal| Decimal::from(n) * per_million / MILLION * entry.multiplier;
    let mut lines = CostLines {
        input_usd: tokens(usage.input_tokens, rates.input),
        output_usd: tokens(usage.output_tokens, rates.output),
        cache_write_5m_usd: tokens(usage.cache_creation_5m_tokens, rates.cache_write_5m),
        cache_write_1h_usd: tokens(usage.cache_creation_1h_tokens, rates.cache_write_1h),
        cache_read_usd: tokens(usage.cache_read_tokens, rates.cache_read),
        web_search_usd: Decimal::from(usage.web_search_requests) * entry.web_search_per_1k
            / THOUSAND,
        total_usd: Decimal::ZERO,
        cache_savings_usd: tokens(usage.cache_read_tokens, rates.input)
            - tokens(usage.cache_read_tokens, rates.cache_read),
    };
    lines.total_usd = lines.input_usd
        + lines.output_usd
        + lines.cache_write_5m_usd
        + lines.cache_write_1h_usd
        + lines.cache_read_usd
        + lines.web_search_usd;
    Some(Priced {
        entry,
        long_context: long.is_some(),
        lines,
    })
}

impl Priced<'_> {
    /// The tier's name as stored on events.
    pub fn tier(&self) -> &'static str {
        if self.long_context {
            "long_context"
        } else {
            "standard"
        }
    }

    /// The price explained line by line, as `tollgate price` prints it.
    pub fn explain(&self, usage: &Usage) -> String {
        let e = self.entry;
        let rates = match (&e.long_context, self.long_context) {
            (Some(lc), true) => &lc.rates,
            _ => &e.rates,
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "entry     {} ({}:{}), effective from {}, {} tier",
            e.family,
            e.file,
            e.line,
            e.effective_from,
            self.tier()
        );
        if e.multiplier != Decimal::ONE {
            let _ = writeln!(out, "endpoint  token prices × {}", e.multiplier);
        }
        let l = &self.lines;
        for (name, n, rate, usd) in [
            ("input", usage.input_tokens, rates.input, l.input_usd),
            ("output", usage.output_tokens, rates.output, l.output_usd),
            (
                "cache write 5m",
                usage.cache_creation_5m_tokens,
                rates.cache_write_5m,
                l.cache_write_5m_usd,
            ),
            (
                "cache write 1h",
                usage.cache_creation_1h_tokens,
                rates.cache_write_1h,
                l.cache_write_1h_usd,
            ),
            (
                "cache read",
                usage.cache_read_tokens,
                rates.cache_read,
                l.cache_read_usd,
            ),
        ] {
            let _ = writeln!(
                out,
                "{name:<15} {n:>10} tok × ${rate}/M = ${}",
                usd.normalize()
            );
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
        let _ = write!(out, "source    {}", e.source);
        out
    }
}

/// The model an event is priced by: what the provider served, or else
/// what was asked for.
fn event_model(e: &LlmEvent) -> Option<&str> {
    e.model_served.as_deref().or(e.model_requested.as_deref())
}

/// Prices one event. An event with no usage at all (refused, or failed
/// before the provider counted anything) costs $0 whatever its model; an
/// event with usage whose model no table matches is unpriced.
pub fn price_event(book: &PriceBook, e: &LlmEvent) -> Cost {
    let q = event_model(e).map(|model| PriceQuery {
        provider: &e.provider,
        model,
        region: e.region.as_deref(),
        at: e.started_at,
    });
    price_facts(book, q.as_ref(), &e.usage)
}

/// Prices usage for a query (no query: the model is unknown).
pub fn price_facts(book: &PriceBook, q: Option<&PriceQuery>, usage: &Usage) -> Cost {
    let priced = q.and_then(|q| price(book, q, usage));
    let no_usage = *usage == Usage::default();
    Cost {
        price_table_version: book.version().to_owned(),
        source: None,
        family: priced.as_ref().map(|p| p.entry.family.clone()),
        tier: match &priced {
            Some(p) => Some(p.tier().to_owned()),
            None if no_usage => Some("no_usage".to_owned()),
            None => None,
        },
        lines: match priced {
            Some(p) => Some(p.lines),
            None if no_usage => Some(CostLines::default()),
            None => None,
        },
    }
}
