//! A price entry's `match` regex, compiled small.
//!
//! The tables write digits as `\d`, which the regex crate reads as every
//! Unicode decimal digit: `\d{8}` alone compiles to thousands of automaton
//! states, and the 116 built-in patterns took ~19 MiB of a process's
//! resident memory. Model IDs are ASCII, and on an ASCII name `\d` and
//! `[0-9]` match exactly the same characters; so the pattern is compiled
//! with `[0-9]` for ASCII names (~3 MiB for all of them), and the pattern
//! as written is compiled only if a non-ASCII name ever comes along, which
//! keeps every answer the pattern's own.
//!
//! The ASCII form is also built lean (see [`Compiled::Lean`]): a price
//! lookup asks only whether a name matches. That took the gateway's
//! anonymous memory at idle from 11.5 to 10.0 MiB.

use std::sync::OnceLock;

use regex::Regex;
use regex_automata::meta;
use regex_automata::nfa::thompson::WhichCaptures;

/// One `match` pattern: as written, and compiled for ASCII names.
#[derive(Debug, Clone)]
pub struct Matcher {
    pattern: String,
    /// For ASCII names: `\d` outside a class read as `[0-9]`.
    ascii: Compiled,
    /// The pattern as written, compiled on first use by a non-ASCII name
    /// (`None`: too big to compile with Unicode digits).
    written: OnceLock<Option<Regex>>,
}

/// A compiled pattern that only ever answers "does it match".
#[derive(Debug, Clone)]
enum Compiled {
    /// Built without capture groups and without the engines that find
    /// them (one-pass DFA, backtracker): only whether a name matches is
    /// ever asked, never where.
    Lean(meta::Regex),
    /// A pattern the lean build refused (a limit it hit differently).
    Full(Regex),
}

impl Compiled {
    /// The lean form of `pattern`, if it builds.
    fn lean(pattern: &str) -> Option<Compiled> {
        let config = meta::Config::new()
            .which_captures(WhichCaptures::None)
            .onepass(false)
            .backtrack(false);
        meta::Regex::builder()
            .configure(config)
            .build(pattern)
            .ok()
            .map(Compiled::Lean)
    }

    fn is_match(&self, name: &str) -> bool {
        match self {
            Compiled::Lean(r) => r.is_match(name),
            Compiled::Full(r) => r.is_match(name),
        }
    }
}

impl Matcher {
    /// Compiles `pattern`; fails with the regex crate's message (for the
    /// pattern as written) when it is not a valid regex.
    pub fn new(pattern: &str) -> Result<Matcher, regex::Error> {
        let ascii = ascii_digits(pattern);
        let ascii = ascii.as_deref().and_then(Compiled::lean);
        let ascii = match ascii.or_else(|| Compiled::lean(pattern)) {
            Some(lean) => lean,
            None => Compiled::Full(Regex::new(pattern)?),
        };
        Ok(Matcher {
            pattern: pattern.to_owned(),
            ascii,
            written: OnceLock::new(),
        })
    }

    /// Whether the pattern matches `name`.
    pub fn is_match(&self, name: &str) -> bool {
        if name.is_ascii() {
            return self.ascii.is_match(name);
        }
        // A pattern too big to compile with Unicode digits (the ASCII form
        // compiled) keeps its ASCII form.
        match self.written.get_or_init(|| Regex::new(&self.pattern).ok()) {
            Some(written) => written.is_match(name),
            None => self.ascii.is_match(name),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
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
    /// other names the pattern as written decides (Unicode digits).
    #[test]
    fn answers_as_the_written_pattern() {
        let patterns = [
            r"^(arn:aws:bedrock:[a-z0-9-]+:\d*:(inference-profile|foundation-model)/)?global\.anthropic\.claude-opus-4-6(-\d{8})?-v\d+(:\d+)?$",
            r"^claude-sonnet-4-5(-\d{8})?$",
            r"^x[\d-]+\\d$",
            r"^[]\d]+$",
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
        for p in patterns {
            let written = Regex::new(p).unwrap();
            let m = Matcher::new(p).unwrap();
            assert_eq!(m.as_str(), p);
            for n in names {
                assert_eq!(m.is_match(n), written.is_match(n), "{p} on {n}");
            }
        }
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
