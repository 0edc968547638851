//! Query-string parameters shared by the endpoints: the event filters,
//! validated with errors that name the parameter.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};

use super::ApiError;
use crate::lake::query::{LogFilter, Scope};

/// The filter parameters every listing endpoint accepts (plus any
/// `metadata.<key>`).
pub const FILTER_PARAMS: &[&str] = &[
    "trace_id",
    "session_id",
    "team",
    "user",
    "key",
    "model",
    "provider",
    "status",
    "from",
    "to",
];

/// An invalid-parameter error.
pub fn bad(name: &str, reason: &str) -> ApiError {
    ApiError::BadParam {
        name: name.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The query string, checked against the endpoint's known parameters.
pub struct Params<'a> {
    map: &'a HashMap<String, String>,
}

impl<'a> Params<'a> {
    /// Refuses any parameter that is neither a filter, a `metadata.<key>`
    /// nor one of `extra`: a typo must not silently widen a query.
    pub fn new(map: &'a HashMap<String, String>, extra: &[&str]) -> Result<Params<'a>, ApiError> {
        if let Some(unknown) = map.keys().find(|k| {
            !FILTER_PARAMS.contains(&k.as_str())
                && !extra.contains(&k.as_str())
                && !k.starts_with("metadata.")
        }) {
            let mut known: Vec<&str> = FILTER_PARAMS.iter().chain(extra).copied().collect();
            known.push("metadata.<key>");
            return Err(bad(
                unknown,
                &format!("unknown parameter; known: {}", known.join(", ")),
            ));
        }
        Ok(Params { map })
    }

    /// A non-empty text parameter.
    pub fn text(&self, name: &str) -> Option<String> {
        self.map.get(name).filter(|v| !v.is_empty()).cloned()
    }

    /// An integer parameter within `min..=max`, or `default`.
    pub fn int(
        &self,
        name: &str,
        min: usize,
        max: usize,
        default: usize,
    ) -> Result<usize, ApiError> {
        match self.map.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| bad(name, &format!("must be an integer from {min} to {max}"))),
        }
    }

    /// The event filter, narrowed to what `scope` may read.
    pub fn filter(&self, scope: &Scope) -> Result<LogFilter, ApiError> {
        let status = match self.map.get("status") {
            Some(s) => Some(
                s.parse::<u16>()
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                    .ok_or_else(|| bad("status", "must be an HTTP status code (100-599)"))?,
            ),
            None => None,
        };
        let mut metadata: Vec<(String, String)> = self
            .map
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("metadata.")?.to_owned(), v.clone())))
            .collect();
        if let Some((k, _)) = metadata.iter().find(|(k, _)| k.is_empty()) {
            return Err(bad(
                &format!("metadata.{k}"),
                "needs a key after `metadata.`",
            ));
        }
        metadata.sort();
        let team = match (scope, self.text("team")) {
            (Scope::Team(own), Some(asked)) if asked != *own => {
                return Err(ApiError::Forbidden(format!(
                    "this token reads team {own} only, not team {asked}"
                )));
            }
            (Scope::Team(own), _) => Some(own.clone()),
            (Scope::All, asked) => asked,
        };
        let filter = LogFilter {
            trace_id: self.text("trace_id"),
            session_id: self.text("session_id"),
            team,
            user: self.text("user"),
            key_id: self.text("key"),
            model: self.text("model"),
            provider: self.text("provider"),
            status,
            metadata,
            from: self.time("from")?,
            to: self.time("to")?,
        };
        if let (Some(from), Some(to)) = (filter.from, filter.to) {
            if from > to {
                return Err(bad("from", "must not be after `to`"));
            }
        }
        Ok(filter)
    }

    /// RFC 3339 time or a plain date (midnight UTC).
    fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        let Some(v) = self.map.get(name) else {
            return Ok(None);
        };
        if let Ok(t) = DateTime::parse_from_rfc3339(v) {
            return Ok(Some(t.with_timezone(&Utc)));
        }
        if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
            return Ok(d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()));
        }
        if let Ok(ms) = v.parse::<i64>() {
            // Grafana's `${__from}` is epoch milliseconds.
            return Ok(DateTime::from_timestamp_millis(ms));
        }
        Err(bad(
            name,
            "must be an RFC 3339 time (2026-11-22T10:00:00Z), a date (2026-11-22) or epoch milliseconds",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn bad_parameters_are_named() {
        for (p, v) in [
            ("status", "abc"),
            ("from", "yesterday"),
            ("trace", "t"),
            ("metadata.", "x"),
        ] {
            let map = params(&[(p, v)]);
            let err = Params::new(&map, &[])
                .and_then(|p| p.filter(&Scope::All))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(p), "{p}: {err}");
        }
    }

    #[test]
    fn dates_times_and_epoch_millis_are_accepted() {
        let map = params(&[("from", "2026-11-01"), ("to", "1795000000000")]);
        let f = Params::new(&map, &[]).unwrap().filter(&Scope::All).unwrap();
        assert!(f.from.unwrap() < f.to.unwrap());
    }

    #[test]
    fn a_team_token_is_pinned_to_its_team_and_refused_others() {
        let scope = Scope::Team("eng".into());
        let none = params(&[]);
        let f = Params::new(&none, &[]).unwrap().filter(&scope).unwrap();
        assert_eq!(f.team.as_deref(), Some("eng"));
        let other = params(&[("team", "sales")]);
        let err = Params::new(&other, &[])
            .unwrap()
            .filter(&scope)
            .unwrap_err();
        assert!(matches!(err, ApiError::Forbidden(_)), "{err}");
    }

    #[test]
    fn metadata_filters_are_read_from_prefixed_parameters() {
        let map = params(&[("metadata.repo", "tollgate")]);
        let f = Params::new(&map, &[]).unwrap().filter(&Scope::All).unwrap();
        assert_eq!(f.metadata, vec![("repo".into(), "tollgate".into())]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any query string is a filter or an error naming a parameter;
        /// never a panic, and a team token never reads another team.
        #[test]
        fn any_query_string_is_a_filter_or_a_named_refusal(
            pairs in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "status", "from", "to", "team", "trace_id", "metadata.k",
                        "metadata.", "limit", "bogus",
                    ]),
                    "\\PC{0,40}|[0-9]{1,25}|-?[0-9]{1,4}-[0-9]{1,2}-[0-9]{1,2}",
                ),
                0..6,
            ),
        ) {
            let map: HashMap<String, String> =
                pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let scope = Scope::Team("eng".into());
            match Params::new(&map, &["limit"]).and_then(|p| {
                p.int("limit", 1, 1000, 100)?;
                p.filter(&scope)
            }) {
                Ok(f) => proptest::prop_assert_eq!(f.team.as_deref(), Some("eng")),
                Err(e) => proptest::prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}
