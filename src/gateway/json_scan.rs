//! A validating JSON skimmer: finds the spans of a few top-level members
//! of an object without building anything for the rest.
//!
//! Claude Code's request bodies are 76–120 KB, almost all of it string
//! content (messages, system prompt, tool descriptions), and the fields
//! the gateway needs (`max_tokens`, `stream`) come after it. serde skips
//! ignored values byte by byte; this skims strings with `memchr` and checks
//! them with loops the compiler vectorises, so the head of a 78 KB body is
//! read several times faster. It accepts exactly what serde_json accepts
//! as far as it goes: whatever it is not sure of (escaped keys, surrogate
//! escapes, nesting past serde's limit, a repeated wanted key) makes it
//! give up, and the caller falls back to serde, whose verdict and error
//! message then stand.

/// Deepest nesting the skimmer follows, well inside serde_json's limit of
/// 128 levels; deeper bodies are left to serde (which may refuse them).
const MAX_DEPTH: usize = 100;

/// Why the skimmer gave up; the caller lets serde decide instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the skimmer cannot vouch for this JSON (serde decides)")]
pub struct GiveUp;

/// The top-level members named in `wanted`: for each, the byte span of
/// its value (`None` if absent). Fails unless `body` is one JSON object,
/// valid throughout, with no wanted key twice.
pub fn members<'a, const N: usize>(
    body: &'a [u8],
    wanted: [&str; N],
) -> Result<[Option<&'a [u8]>; N], GiveUp> {
    std::str::from_utf8(body).map_err(|_| GiveUp)?;
    let mut found = [None; N];
    let mut s = Skimmer { b: body, i: 0 };
    s.ws();
    s.expect(b'{')?;
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            let key = s.key()?;
            s.ws();
            s.expect(b':')?;
            s.ws();
            let start = s.i;
            s.value(0)?;
            if let Some(slot) = wanted.iter().position(|w| w.as_bytes() == key) {
                if found[slot].is_some() {
                    return Err(GiveUp);
                }
                found[slot] = Some(&body[start..s.i]);
            }
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                b'}' => break,
                _ => return Err(GiveUp),
            }
        }
    }
    s.ws();
    if s.i != body.len() {
        return Err(GiveUp);
    }
    Ok(found)
}

/// A cursor over the body.
struct Skimmer<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Skimmer<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Result<u8, GiveUp> {
        let c = self.peek().ok_or(GiveUp)?;
        self.i += 1;
        Ok(c)
    }

    fn expect(&mut self, c: u8) -> Result<(), GiveUp> {
        if self.next()? == c {
            Ok(())
        } else {
            Err(GiveUp)
        }
    }

    /// Skips JSON whitespace.
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// An object key without escapes (an escaped key gives up: serde
    /// would unescape it before matching field names).
    fn key(&mut self) -> Result<&'a [u8], GiveUp> {
        let start = self.i + 1;
        if self.string()? {
            return Err(GiveUp);
        }
        Ok(&self.b[start..self.i - 1])
    }

    /// Skips one string; true if it held an escape.
    fn string(&mut self) -> Result<bool, GiveUp> {
        self.expect(b'"')?;
        let mut escaped = false;
        loop {
            let rest = &self.b[self.i..];
            let at = memchr::memchr2(b'"', b'\\', rest).ok_or(GiveUp)?;
            if has_control(&rest[..at]) {
                return Err(GiveUp);
            }
            self.i += at + 1;
            if rest[at] == b'"' {
                return Ok(escaped);
            }
            escaped = true;
            self.escape()?;
        }
    }

    /// The rest of an escape after its backslash.
    fn escape(&mut self) -> Result<(), GiveUp> {
        match self.next()? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(()),
            b'u' => {
                let hex = self.b.get(self.i..self.i + 4).ok_or(GiveUp)?;
                let hex = std::str::from_utf8(hex).map_err(|_| GiveUp)?;
                let code = u16::from_str_radix(hex, 16).map_err(|_| GiveUp)?;
                if hex.starts_with(['+', '-']) || (0xD800..=0xDFFF).contains(&code) {
                    return Err(GiveUp);
                }
                self.i += 4;
                Ok(())
            }
            _ => Err(GiveUp),
        }
    }

    /// Skips one value nested `depth` levels deep.
    fn value(&mut self, depth: usize) -> Result<(), GiveUp> {
        match self.peek().ok_or(GiveUp)? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' if depth >= MAX_DEPTH => Err(GiveUp),
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(GiveUp),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), GiveUp> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(GiveUp)
        }
    }

    /// A number in JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Result<(), GiveUp> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return Err(GiveUp),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), GiveUp> {
        let start = self.i;
        self.digits();
        if self.i == start { Err(GiveUp) } else { Ok(()) }
    }

    fn object(&mut self, depth: usize) -> Result<(), GiveUp> {
        self.expect(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.string()?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            self.value(depth)?;
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b'}' => return Ok(()),
                _ => return Err(GiveUp),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), GiveUp> {
        self.expect(b'[')?;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.value(depth)?;
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b']' => return Ok(()),
                _ => return Err(GiveUp),
            }
        }
    }
}

/// Whether `s` holds a control character, which JSON strings may not
/// (written without an early exit so it vectorises).
fn has_control(s: &[u8]) -> bool {
    s.iter().fold(false, |any, &c| any | (c < 0x20))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The skimmer's verdict agrees with serde's on every sample: valid
    /// bodies give the spans serde would read, invalid ones give up.
    #[test]
    fn agrees_with_serde_on_valid_and_invalid_json() {
        let cases: &[&str] = &[
            r#"{"model":"m","max_tokens":5,"stream":true}"#,
            r#" { "a" : [1, -2.5e+3, 0, {"b":null}, "x\"y\\z\u00e9"], "model" : "m" } "#,
            r#"{}"#,
            r#"{"a":[]}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":-}"#,
            r#"{"a":tru}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":"\q"}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":"\u12G4"}"#,
            r#"{"a":1} x"#,
            r#"{"a":1"#,
            r#"["model"]"#,
        ];
        for case in cases {
            let serde_ok = serde_json::from_str::<serde::de::IgnoredAny>(case).is_ok()
                && case.trim_start().starts_with('{');
            let skim = members(case.as_bytes(), ["model"]);
            assert_eq!(skim.is_ok(), serde_ok, "{case}");
        }
    }

    #[test]
    fn finds_wanted_members_after_large_values() {
        let big = "x".repeat(100_000);
        let body = format!(
            r#"{{"model":"claude","messages":[{{"content":"{big}"}}],"max_tokens":64,"stream":false}}"#
        );
        let [model, max, stream, absent] =
            members(body.as_bytes(), ["model", "max_tokens", "stream", "speed"]).unwrap();
        assert_eq!(model, Some(&b"\"claude\""[..]));
        assert_eq!(max, Some(&b"64"[..]));
        assert_eq!(stream, Some(&b"false"[..]));
        assert_eq!(absent, None);
    }

    #[test]
    fn gives_up_on_what_serde_must_judge() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(members(deep.as_bytes(), ["a"]), Err(GiveUp));
        let twice = br#"{"model":"a","model":"b"}"#;
        assert_eq!(members(twice, ["model"]), Err(GiveUp));
        let escaped_key = br#"{"mod\u0065l":"a"}"#;
        assert_eq!(members(escaped_key, ["model"]), Err(GiveUp));
        let surrogate = br#"{"a":"\ud800"}"#;
        assert_eq!(members(surrogate, ["model"]), Err(GiveUp));
        assert_eq!(members(b"{\"a\":\"\xff\"}", ["model"]), Err(GiveUp));
    }
}
