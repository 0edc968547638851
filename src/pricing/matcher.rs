//! The price entries' `match` regexes, compiled together.
//!
//! The tables write digits as `\d`, which the regex crate reads as every
//! Unicode decimal digit: `\d{8}` alone compiles to thousands of automaton
//! states, and the 116 built-in patterns took ~19 MiB of a process's
//! resident memory. Model IDs are ASCII, and on an ASCII name `\d` and
//! `[0-9]` match exactly the same characters; so the patterns are compiled
//! with `[0-9]` for ASCII names, and as written only if a non-ASCII name
//! ever comes along, which keeps every answer the pattern's own.
//!
//! All patterns are one automaton ([`PatternSet`]), built lean: a price
//! lookup asks only which entries' patterns accept a name, never where.
//! Built one by one, the 116 patterns took 9–10.5 ms to compile and 0.4 ms
//! to ask on a new name; together, 3.2–3.5 ms and 0.04 ms (a scaling
//! gateway waits for them before it serves), and the book's own checks
//! (each entry's examples against every other entry) ask once per example
//! instead of once per example and entry.

use std::sync::OnceLock;

use regex::Regex;
use regex_automata::nfa::thompson::WhichCaptures;
use regex_automata::{Input, MatchKind, PatternSet as Matched, meta};

/// One entry's `match` pattern, checked; compiled with every other in a
/// [`PatternSet`].
#[derive(Debug, Clone)]
pub struct Matcher {
    pattern: String,
}

impl Matcher {
    /// Checks `pattern`'s syntax (no compile); fails with the regex
    /// crate's message when it is not a valid regex.
    pub fn new(pattern: &str) -> Result<Matcher, regex::Error> {
        if regex_automata::util::syntax::parse(pattern).is_err() {
            // The regex crate's own message, which names the problem and
            // points at it (the parser is the same, so this fails too).
            Regex::new(pattern)?;
        }
        Ok(Matcher {
            pattern: pattern.to_owned(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

/// Every entry's patterns as one automaton.
#[derive(Debug, Clone)]
pub struct PatternSet {
    /// Pattern ID → index of the entry it belongs to.
    owners: Vec<u32>,
    /// The patterns as written, for a non-ASCII name.
    written: Vec<String>,
    /// For ASCII names: `\d` outside a class read as `[0-9]`.
    ascii: meta::Regex,
    /// The patterns as written, compiled on first use by a non-ASCII name.
    unicode: OnceLock<Unicode>,
}

/// The patterns as written (Unicode `\d`), for non-ASCII names.
#[derive(Debug, Clone)]
enum Unicode {
    /// All of them in one automaton.
    Together(meta::Regex),
    /// Too large together: each on its own, as written where that
    /// compiles, else in its ASCII form (as a lone pattern always was).
    OneByOne(Vec<meta::Regex>),
}

/// The lean build of `patterns`: every pattern that matches is reported,
/// no capture groups, none of the engines that find where.
fn lean(patterns: &[impl AsRef<str>]) -> Result<meta::Regex, Box<meta::BuildError>> {
    let config = meta::Config::new()
        .match_kind(MatchKind::All)
        .which_captures(WhichCaptures::None)
        .onepass(false)
        .backtrack(false);
    meta::Regex::builder()
        .configure(config)
        .build_many(patterns)
        .map_err(Box::new)
}

/// Why patterns did not compile, in words: the meta regex's own message
/// says only "error building NFA".
pub fn why(e: &meta::BuildError) -> String {
    match e.size_limit() {
        Some(limit) => format!("it compiles to more than {limit} bytes, the regex size limit"),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

impl PatternSet {
    /// Compiles `patterns`, each with the index of the entry it belongs
    /// to; fails when they are too large to compile together.
    pub fn new<'a>(
        patterns: impl IntoIterator<Item = (u32, &'a Matcher)>,
    ) -> Result<PatternSet, Box<meta::BuildError>> {
        let (owners, written): (Vec<u32>, Vec<String>) = patterns
            .into_iter()
            .map(|(owner, m)| (owner, m.pattern.clone()))
            .unzip();
        let ascii: Vec<String> = written.iter().map(|p| ascii_form(p)).collect();
        Ok(PatternSet {
            ascii: lean(&ascii)?,
            owners,
            written,
            unicode: OnceLock::new(),
        })
    }

    /// Indices (ascending, each once) of the entries with a pattern that
    /// matches `name`.
    pub fn entries_matching(&self, name: &str) -> Vec<u32> {
        let regex = match self.unicode_if_needed(name) {
            None => &self.ascii,
            Some(Unicode::Together(regex)) => regex,
            Some(Unicode::OneByOne(each)) => {
                let matching = each.iter().zip(&self.owners);
                let hits = matching.filter(|(r, _)| r.is_match(name));
                return owners_once(hits.map(|(_, owner)| *owner));
            }
        };
        let mut matched = Matched::new(regex.pattern_len());
        regex.which_overlapping_matches(&Input::new(name), &mut matched);
        owners_once(matched.iter().map(|id| self.owners[id.as_usize()]))
    }

    /// The patterns as written when `name` is not ASCII (compiled on the
    /// first such name), `None` for an ASCII name.
    fn unicode_if_needed(&self, name: &str) -> Option<&Unicode> {
        if name.is_ascii() {
            return None;
        }
        Some(self.unicode.get_or_init(|| match lean(&self.written) {
            Ok(together) => Unicode::Together(together),
            Err(_) => Unicode::OneByOne(self.written.iter().map(|p| lone(p)).collect()),
        }))
    }
}

/// `owners` ascending, each once.
fn owners_once(owners: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut entries: Vec<u32> = owners.collect();
    entries.sort_unstable();
    entries.dedup();
    entries
}

/// `pattern` with ASCII digits for `\d` (itself when it has no `\d`).
fn ascii_form(pattern: &str) -> String {
    ascii_digits(pattern).unwrap_or_else(|| pattern.to_owned())
}

/// `pattern` compiled alone, as written; in its ASCII form if that is too
/// large (the ASCII form compiled with the others, so it compiles alone).
fn lone(pattern: &str) -> meta::Regex {
    lean(&[pattern])
        .or_else(|_| lean(&[ascii_form(pattern)]))
        .expect("the ASCII form compiled in the set")
}

/// `pattern` with each `\d` outside a character class written `[0-9]`,
/// or `None` if it has none.
fn ascii_digits(pattern: &str) -> Option<String> {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars().peekable();
    let (mut depth, mut changed) = (0usize, false);
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('d') if depth == 0 => {
                    out.push_str("[0-9]");
                    changed = true;
                }
                Some(next) => {
                    out.push(c);
                    out.push(next);
                }
                None => out.push(c),
            },
            '[' => {
                depth += 1;
                out.push(c);
                // `^` and a `]` right after the opening are part of the class.
                for literal in ['^', ']'] {
                    if chars.peek() == Some(&literal) {
                        out.push(literal);
                        chars.next();
                    }
                }
            }
            ']' if depth > 0 => {
                depth -= 1;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On ASCII names the compact form answers as the pattern does; on
    /// other names the pattern as written decides (Unicode digits). Each
    /// pattern is its own entry here, so the set's answer for a name is
    /// exactly the patterns that match it.
    #[test]
    fn answers_as_the_written_patterns() {
        let patterns = [
            r"^(arn:aws:bedrock:[a-z0-9-]+:\d*:(inference-profile|foundation-model)/)?global\.anthropic\.claude-opus-4-6(-\d{8})?-v\d+(:\d+)?$",
            r"^claude-sonnet-4-5(-\d{8})?$",
            r"^x[\d-]+\\d$",
            r"^[]\d]+$",
            r"claude",
        ];
        let names = [
            "global.anthropic.claude-opus-4-6-20250101-v1:0",
            "arn:aws:bedrock:us-east-1:123:inference-profile/global.anthropic.claude-opus-4-6-v2",
            "claude-sonnet-4-5",
            "claude-sonnet-4-5-20250929",
            "claude-sonnet-4-5-2025092",
            "claude-sonnet-4-5-２０２５０９２９",
            "claude-sonnet-4-5-٢٠٢٥٠٩٢٩",
            "x1-2\\d",
            "]1]",
            "",
        ];
        let matchers: Vec<Matcher> = patterns.iter().map(|p| Matcher::new(p).unwrap()).collect();
        let set = PatternSet::new((0u32..).zip(&matchers)).unwrap();
        // The same set as if its patterns as written were too large to
        // compile together.
        let one_by_one = PatternSet::new((0u32..).zip(&matchers)).unwrap();
        let each = patterns.iter().map(|p| lone(p)).collect();
        one_by_one.unicode.set(Unicode::OneByOne(each)).unwrap();
        for n in names {
            let expected: Vec<u32> = (0u32..)
                .zip(patterns)
                .filter(|(_, p)| Regex::new(p).unwrap().is_match(n))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(set.entries_matching(n), expected, "{n}");
            assert_eq!(one_by_one.entries_matching(n), expected, "{n}, one by one");
        }
        assert_eq!(matchers[1].as_str(), patterns[1]);
    }

    /// An entry with several patterns is named once, whichever match.
    #[test]
    fn an_entry_is_named_once() {
        let matchers: Vec<Matcher> = ["^claude", "sonnet", "^gpt"]
            .iter()
            .map(|p| Matcher::new(p).unwrap())
            .collect();
        let set =
            PatternSet::new([(0, &matchers[0]), (0, &matchers[1]), (3, &matchers[2])]).unwrap();
        assert_eq!(set.entries_matching("claude-sonnet-4-5"), vec![0]);
        assert_eq!(set.entries_matching("gpt-sonnet"), vec![0, 3]);
        assert!(set.entries_matching("llama").is_empty());
        let none = PatternSet::new(std::iter::empty()).unwrap();
        assert!(none.entries_matching("claude").is_empty());
    }

    #[test]
    fn rewrites_only_digit_escapes_outside_classes() {
        assert_eq!(
            ascii_digits(r"a\d{2}[\d]\\d\D").as_deref(),
            Some(r"a[0-9]{2}[\d]\\d\D")
        );
        assert_eq!(ascii_digits(r"^claude$"), None);
        assert!(
            Matcher::new(r"(unclosed")
                .unwrap_err()
                .to_string()
                .contains("unclosed")
        );
    }
}
