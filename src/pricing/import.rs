//! `tollgate pricing import`: Claude prices from a published model-price
//! catalogue (LiteLLM's `model_prices_and_context_window.json`, Portkey's
//! models repository `pricing/*.json`), compared with the tables.
//!
//! Catalogues lag Anthropic's page and carry known errors, so an import
//! never overwrites: a model the tables lack is added as a new entry, a
//! price equal to the entry in force is left alone, and a price that
//! contradicts it is only written — as a new entry from the import's
//! effective date, the old one kept for the past — when the caller accepts
//! changes. Every outcome is listed in the diff.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{NaiveDate, Utc};
use rust_decimal::Decimal;

use super::{PriceBook, PriceQuery, Rates};

/// Why a catalogue could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the catalogue is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "the catalogue is neither LiteLLM's format (models with input_cost_per_token) nor Portkey's (models with pricing_config)"
    )]
    UnknownFormat,
    #[error(
        "a Portkey file prices one provider; name it with --provider (anthropic, bedrock or vertex), none follows from {0:?}"
    )]
    PortkeyProvider(String),
}

/// Which catalogue format a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    LiteLlm,
    Portkey,
}

/// One Claude model's prices as a catalogue states them (USD per million).
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub provider: String,
    pub model: String,
    pub rates: Rates,
    /// Classes the catalogue did not state, filled with the standard
    /// multipliers of input (5m write 1.25×, 1h write 2×, read 0.1×).
    pub derived: Vec<&'static str>,
}

const MILLION: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);
/// Portkey prices are in cents per token: × 10,000 gives USD per million.
const CENTS_PER_TOKEN_TO_USD_PER_MILLION: Decimal = Decimal::from_parts(10_000, 0, 0, false, 0);

/// A JSON number as an exact decimal (catalogues write `3e-06`).
fn decimal(v: Option<&serde_json::Value>) -> Option<Decimal> {
    let n = v?.as_f64()?;
    Decimal::from_scientific(&format!("{n:e}"))
        .ok()
        .map(|d| d.normalize())
}

/// Which format `catalogue` is in, by its entries' fields.
pub fn detect(catalogue: &serde_json::Value) -> Result<Format, ImportError> {
    let entries = catalogue.as_object().ok_or(ImportError::UnknownFormat)?;
    for v in entries.values() {
        if v.get("input_cost_per_token").is_some() {
            return Ok(Format::LiteLlm);
        }
        if v.get("pricing_config").is_some() {
            return Ok(Format::Portkey);
        }
    }
    Err(ImportError::UnknownFormat)
}

/// Fills classes the catalogue left out with the standard multipliers.
fn complete(
    input: Decimal,
    output: Decimal,
    w5: Option<Decimal>,
    w1: Option<Decimal>,
    read: Option<Decimal>,
) -> (Rates, Vec<&'static str>) {
    let mut derived = Vec::new();
    let mut or = |v: Option<Decimal>, name: &'static str, factor: Decimal| {
        v.unwrap_or_else(|| {
            derived.push(name);
            (input * factor).normalize()
        })
    };
    let rates = Rates {
        input,
        output,
        cache_write_5m: or(w5, "cache_write_5m", Decimal::new(125, 2)),
        cache_write_1h: or(w1, "cache_write_1h", Decimal::TWO),
        cache_read: or(read, "cache_read", Decimal::new(1, 1)),
    };
    (rates, derived)
}

/// LiteLLM's provider names for Claude, as tollgate's providers; the
/// model ID without LiteLLM's routing prefix.
fn litellm_target(key: &str, provider: &str) -> Option<(&'static str, String)> {
    let provider = match provider {
        "anthropic" => "anthropic",
        "bedrock" | "bedrock_converse" => "bedrock",
        p if p.starts_with("vertex_ai") => "vertex",
        _ => return None,
    };
    let model = key.rsplit_once('/').map_or(key, |(_, m)| m);
    Some((provider, model.to_owned()))
}

/// The Claude models of a LiteLLM catalogue.
fn litellm(catalogue: &serde_json::Value) -> Vec<Offer> {
    let mut out = Vec::new();
    for (key, v) in catalogue.as_object().into_iter().flatten() {
        let provider = v
            .get("litellm_provider")
            .and_then(|p| p.as_str())
            .unwrap_or("");
        let Some((provider, model)) = litellm_target(key, provider) else {
            continue;
        };
        if !model.contains("claude") {
            continue;
        }
        let per_m = |name: &str| decimal(v.get(name)).map(|d| (d * MILLION).normalize());
        let (Some(input), Some(output)) = (
            per_m("input_cost_per_token"),
            per_m("output_cost_per_token"),
        ) else {
            continue;
        };
        let (rates, derived) = complete(
            input,
            output,
            per_m("cache_creation_input_token_cost"),
            per_m("cache_creation_input_token_cost_above_1hr"),
            per_m("cache_read_input_token_cost"),
        );
        out.push(Offer {
            provider: provider.to_owned(),
            model,
            rates,
            derived,
        });
    }
    out
}

/// The Claude models of one Portkey `pricing/<provider>.json`.
fn portkey(catalogue: &serde_json::Value, provider: &str) -> Vec<Offer> {
    let mut out = Vec::new();
    for (model, v) in catalogue.as_object().into_iter().flatten() {
        if !model.contains("claude") {
            continue;
        }
        let Some(payg) = v.pointer("/pricing_config/pay_as_you_go") else {
            continue;
        };
        let per_m = |path: &str| {
            decimal(payg.pointer(path))
                .map(|d| (d * CENTS_PER_TOKEN_TO_USD_PER_MILLION).normalize())
        };
        let (Some(input), Some(output)) = (
            per_m("/request_token/price"),
            per_m("/response_token/price"),
        ) else {
            continue;
        };
        let (rates, derived) = complete(
            input,
            output,
            per_m("/cache_write_input_token/price"),
            per_m("/additional_units/cache_write_1h/price"),
            per_m("/cache_read_input_token/price"),
        );
        out.push(Offer {
            provider: provider.to_owned(),
            model: model.clone(),
            rates,
            derived,
        });
    }
    out
}

/// The provider a Portkey file is for, from its name (`bedrock.json`,
/// `vertex-ai.json`, `anthropic.json`).
pub fn portkey_provider(file_name: &str) -> Result<&'static str, ImportError> {
    let stem = file_name.rsplit('/').next().unwrap_or(file_name);
    match stem.trim_end_matches(".json") {
        "anthropic" => Ok("anthropic"),
        "bedrock" => Ok("bedrock"),
        "vertex-ai" | "vertex" => Ok("vertex"),
        other => Err(ImportError::PortkeyProvider(other.to_owned())),
    }
}

/// Reads a catalogue's Claude offers (`provider` only matters for Portkey).
pub fn read_offers(
    text: &str,
    file_name: &str,
    provider: Option<&str>,
) -> Result<(Format, Vec<Offer>), ImportError> {
    let catalogue: serde_json::Value = serde_json::from_str(text)?;
    let format = detect(&catalogue)?;
    let offers = match format {
        Format::LiteLlm => litellm(&catalogue),
        Format::Portkey => {
            let provider = match provider {
                Some(p) => p,
                None => portkey_provider(file_name)?,
            };
            portkey(&catalogue, provider)
        }
    };
    Ok((format, offers))
}

/// What an import found for one model.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// No entry prices it: a new entry.
    Added(Offer),
    /// The entry in force says the same.
    Unchanged(Offer),
    /// The entry in force (family, its rates × endpoint multiplier) says
    /// otherwise.
    Changed {
        offer: Offer,
        family: String,
        current: Rates,
    },
}

/// The offers compared with the tables in force on `day`.
pub fn compare(book: &PriceBook, offers: &[Offer], day: NaiveDate) -> Vec<Change> {
    let at = day.and_hms_opt(12, 0, 0).unwrap_or_default().and_utc();
    let mut out = Vec::new();
    for offer in offers {
        let q = PriceQuery {
            provider: &offer.provider,
            model: &offer.model,
            region: None,
            at,
        };
        let Some(e) = book.find(&q) else {
            out.push(Change::Added(offer.clone()));
            continue;
        };
        let m = e.multiplier;
        let current = Rates {
            input: (e.rates.input * m).normalize(),
            output: (e.rates.output * m).normalize(),
            cache_write_5m: (e.rates.cache_write_5m * m).normalize(),
            cache_write_1h: (e.rates.cache_write_1h * m).normalize(),
            cache_read: (e.rates.cache_read * m).normalize(),
        };
        if same_stated(&current, offer) {
            out.push(Change::Unchanged(offer.clone()));
        } else {
            out.push(Change::Changed {
                offer: offer.clone(),
                family: e.family.clone(),
                current,
            });
        }
    }
    out
}

/// Whether the classes the catalogue states agree with `current`.
fn same_stated(current: &Rates, offer: &Offer) -> bool {
    let o = &offer.rates;
    let stated = |name: &str| !offer.derived.contains(&name);
    current.input == o.input
        && current.output == o.output
        && (!stated("cache_write_5m") || current.cache_write_5m == o.cache_write_5m)
        && (!stated("cache_write_1h") || current.cache_write_1h == o.cache_write_1h)
        && (!stated("cache_read") || current.cache_read == o.cache_read)
}

/// One line per class: `input $3/M -> $6/M`.
fn rate_diff(a: &Rates, b: &Rates) -> String {
    let mut parts = Vec::new();
    for (name, x, y) in [
        ("input", a.input, b.input),
        ("output", a.output, b.output),
        ("cache_write_5m", a.cache_write_5m, b.cache_write_5m),
        ("cache_write_1h", a.cache_write_1h, b.cache_write_1h),
        ("cache_read", a.cache_read, b.cache_read),
    ] {
        if x != y {
            parts.push(format!("{name} ${x}/M -> ${y}/M"));
        }
    }
    parts.join(", ")
}

/// The diff as printed: added, changed (with the effective date they
/// would take), and how many agree.
pub fn render_diff(changes: &[Change], effective_from: NaiveDate) -> String {
    let mut out = String::new();
    let mut unchanged = 0;
    for c in changes {
        match c {
            Change::Added(o) => {
                let _ = writeln!(
                    out,
                    "+ {} {}: new entry from {effective_from}: input ${}/M, output ${}/M, 5m write ${}/M, 1h write ${}/M, cache read ${}/M{}",
                    o.provider,
                    o.model,
                    o.rates.input,
                    o.rates.output,
                    o.rates.cache_write_5m,
                    o.rates.cache_write_1h,
                    o.rates.cache_read,
                    if o.derived.is_empty() {
                        String::new()
                    } else {
                        format!(" (derived: {})", o.derived.join(", "))
                    }
                );
            }
            Change::Changed {
                offer,
                family,
                current,
            } => {
                let _ = writeln!(
                    out,
                    "~ {} {} (entry {family}): {}; would take effect {effective_from}",
                    offer.provider,
                    offer.model,
                    rate_diff(current, &offer.rates)
                );
            }
            Change::Unchanged(_) => unchanged += 1,
        }
    }
    let _ = write!(out, "= {unchanged} model(s) agree with the tables");
    out
}

/// A regex matching exactly `model` (and, on the Claude API, its
/// `-YYYYMMDD` / `-latest` forms when the ID has no date).
fn matcher(provider: &str, model: &str) -> String {
    let escaped = regex::escape(model);
    if provider == "anthropic" && !model.ends_with(|c: char| c.is_ascii_digit()) {
        format!(r"^{escaped}(-\d{{8}}|-latest)?$")
    } else {
        format!("^{escaped}$")
    }
}

/// The TOML entries to append per provider for the accepted changes:
/// added models, and (when `accept_changes`) changed prices from
/// `effective_from`. `source` names the catalogue.
pub fn new_entries(
    book: &PriceBook,
    changes: &[Change],
    effective_from: NaiveDate,
    source: &str,
    accept_changes: bool,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for c in changes {
        let (offer, family, multiplier, endpoint, patterns) = match c {
            Change::Added(o) => (
                o,
                o.model.clone(),
                Decimal::ONE,
                None,
                vec![matcher(&o.provider, &o.model)],
            ),
            Change::Changed { offer, family, .. } if accept_changes => {
                let at = effective_from
                    .and_hms_opt(12, 0, 0)
                    .unwrap_or_default()
                    .and_utc();
                let q = PriceQuery {
                    provider: &offer.provider,
                    model: &offer.model,
                    region: None,
                    at,
                };
                let e = book.find(&q);
                let m = e.map_or(Decimal::ONE, |e| e.multiplier);
                // The same IDs as the entry it supersedes.
                let patterns = e.map_or_else(
                    || vec![matcher(&offer.provider, &offer.model)],
                    |e| e.patterns().iter().map(|p| (*p).to_owned()).collect(),
                );
                (
                    offer,
                    family.clone(),
                    m,
                    e.and_then(|e| e.endpoint),
                    patterns,
                )
            }
            _ => continue,
        };
        let text = out.entry(offer.provider.clone()).or_default();
        let r = &offer.rates;
        let per = |v: Decimal| (v / multiplier).normalize();
        let _ = write!(
            text,
            "\n[[price]]\nfamily = {family:?}\nmatch = [{}]\nexamples = [{:?}]\neffective_from = {effective_from}\nsource = {:?}\n",
            patterns
                .iter()
                .map(|p| format!("'{p}'"))
                .collect::<Vec<_>>()
                .join(", "),
            offer.model,
            format!("{source} (imported {})", Utc::now().date_naive()),
        );
        if let Some(ep) = endpoint {
            let ep = match ep {
                super::EndpointKind::Global => "global",
                super::EndpointKind::Regional => "regional",
            };
            let _ = writeln!(text, "endpoint = \"{ep}\"");
        }
        if multiplier != Decimal::ONE {
            let _ = writeln!(text, "multiplier = \"{multiplier}\"");
        }
        let _ = writeln!(
            text,
            "input = \"{}\"\noutput = \"{}\"\ncache_write_5m = \"{}\"\ncache_write_1h = \"{}\"\ncache_read = \"{}\"\nweb_search_per_1k = \"10\"",
            per(r.input),
            per(r.output),
            per(r.cache_write_5m),
            per(r.cache_write_1h),
            per(r.cache_read)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn catalogue_numbers_become_exact_prices_per_million() {
        let litellm = serde_json::json!({"claude-x": {"litellm_provider": "anthropic",
            "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05}});
        let offers = super::litellm(&litellm);
        assert_eq!(offers[0].rates.input.to_string(), "3");
        assert_eq!(offers[0].rates.output.to_string(), "15");
        assert_eq!(
            offers[0].rates.cache_read.to_string(),
            "0.3",
            "derived 0.1 x input"
        );
        let portkey = serde_json::json!({"claude-x": {"pricing_config": {"pay_as_you_go": {
            "request_token": {"price": 0.0003}, "response_token": {"price": 0.0015},
            "additional_units": {"cache_write_1h": {"price": 0.0006}}}}}});
        let offers = super::portkey(&portkey, "anthropic");
        assert_eq!(offers[0].rates.input.to_string(), "3");
        assert_eq!(offers[0].rates.cache_write_1h.to_string(), "6");
    }
}
