//! Small readers of request headers that several stages share: the first
//! of a header's aliases (`x-tollgate-*` / `x-portkey-*`), and the token
//! of an `Authorization: Bearer` header. One home each, so the gateway's
//! key lookup, passthrough fingerprints, routing and the query API read
//! them the same way.

use http::{HeaderMap, HeaderValue, header};

/// The first of `names` present, with the name it was found under.
pub fn first_of<'h>(
    headers: &'h HeaderMap,
    names: &[&'static str],
) -> Option<(&'static str, &'h HeaderValue)> {
    names.iter().find_map(|n| headers.get(*n).map(|v| (*n, v)))
}

/// The token of `Authorization: Bearer <token>`: the scheme is matched
/// without regard to case (RFC 9110 §11.1); `None` when the header is
/// absent, another scheme, or the token is empty.
pub fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    (scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_other_schemes_are_not_tokens() {
        assert_eq!(bearer_token(&with_auth("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer_token(&with_auth("bEaReR abc")), Some(&b"abc"[..]));
        assert_eq!(bearer_token(&with_auth("Basic abc")), None);
        assert_eq!(bearer_token(&with_auth("Bearer ")), None);
        assert_eq!(bearer_token(&with_auth("Bear")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn first_of_prefers_the_earlier_alias() {
        let mut h = HeaderMap::new();
        h.insert("x-portkey-trace-id", HeaderValue::from_static("p"));
        h.insert("x-tollgate-trace-id", HeaderValue::from_static("t"));
        let (name, v) = first_of(&h, &["x-tollgate-trace-id", "x-portkey-trace-id"]).unwrap();
        assert_eq!((name, v.as_bytes()), ("x-tollgate-trace-id", &b"t"[..]));
    }
}
