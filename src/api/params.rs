//! Query-string parameters: the event filters every listing endpoint
//! accepts ([`Filters`]) and the extractor ([`Filtered`]) that reads them
//! with an endpoint's own parameters, refusing unknown ones by name.
//!
//! Each endpoint's parameters are a struct deriving `IntoParams`, so the
//! OpenAPI document lists what the code reads (`params(Filters,
//! LogsParams)`), and the known names in a refusal come from the same
//! structs. Values stay text until the helpers here check them, so every
//! bad value is a 400 naming its parameter.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Query};
use axum::http::Uri;
use axum::http::request::Parts;
use chrono::{DateTime, NaiveDate, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use utoipa::IntoParams;

use super::ApiError;
use crate::lake::query::{LogFilter, Scope};

/// The name `metadata.<key>` filters are documented under.
const METADATA_PARAM: &str = "metadata.<key>";

/// The filter parameters every listing endpoint accepts.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Filters {
    /// Events of one trace
    pub trace_id: Option<String>,
    /// Events of one Claude Code session
    pub session_id: Option<String>,
    /// Team (a team token may only name its own)
    pub team: Option<String>,
    /// User
    pub user: Option<String>,
    /// Key id
    pub key: Option<String>,
    /// Model asked for or served
    pub model: Option<String>,
    /// anthropic, bedrock, vertex or cache
    pub provider: Option<String>,
    /// HTTP status answered (100-599)
    #[param(value_type = Option<u16>)]
    pub status: Option<String>,
    /// Start, inclusive: RFC 3339, a date, or epoch ms
    pub from: Option<String>,
    /// End, exclusive
    pub to: Option<String>,
    /// Metadata key = value, e.g. `metadata.repo=tollgate` (any number)
    #[serde(rename = "metadata.<key>", default, deserialize_with = "filled_later")]
    #[param(value_type = Option<String>)]
    pub metadata: Vec<(String, String)>,
}

/// Leaves a field to be filled after deserialization (the `metadata.*`
/// pairs, which serde cannot name in advance).
fn filled_later<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    serde::de::IgnoredAny::deserialize(d)?;
    Ok(Vec::new())
}

/// An endpoint's own query parameters `T` and the event filters, read from
/// one query string (auth runs first: put it after the `Reader`).
pub struct Filtered<T> {
    /// The endpoint's own parameters.
    pub params: T,
    /// The event filters, `metadata.<key>` pairs included.
    pub filters: Filters,
}

impl<S: Send + Sync, T: DeserializeOwned + IntoParams + Send> FromRequestParts<S> for Filtered<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Filtered::read(&parts.uri)
    }
}

impl<T: DeserializeOwned + IntoParams> Filtered<T> {
    /// Reads the query string of `uri`: unknown parameters are refused
    /// first, then each struct takes the parameters it names from the same
    /// map (a repeated parameter: the last one, as before). `T`'s fields
    /// are text (`Option<String>`) checked by the helpers here; none is
    /// flattened into another, since serde's `flatten` cannot read
    /// numbers from a query string.
    pub fn read(uri: &Uri) -> Result<Self, ApiError> {
        let Query(map) = Query::<HashMap<String, String>>::try_from_uri(uri)
            .map_err(|e| bad("query", &e.body_text()))?;
        refuse_unknown::<T>(&map)?;
        let object: serde_json::Map<String, serde_json::Value> = map
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let params = from_text(object.clone())?;
        let mut filters: Filters = from_text(object)?;
        filters.metadata = metadata(&map);
        Ok(Filtered { params, filters })
    }
}

/// A parameter struct from the query's text values.
fn from_text<P: DeserializeOwned>(
    object: serde_json::Map<String, serde_json::Value>,
) -> Result<P, ApiError> {
    serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|e| bad("query", &e.to_string()))
}

/// The names of a parameter struct, as documented.
fn names<T: IntoParams>() -> impl Iterator<Item = String> {
    T::into_params(|| None).into_iter().map(|p| p.name)
}

/// Refuses any parameter that is neither a filter, a `metadata.<key>` nor
/// one of `T`'s: a typo must not silently widen a query.
fn refuse_unknown<T: IntoParams>(map: &HashMap<String, String>) -> Result<(), ApiError> {
    let mut known: Vec<String> = names::<Filters>()
        .filter(|n| n != METADATA_PARAM)
        .chain(names::<T>())
        .collect();
    let unknown = map
        .keys()
        .find(|k| !known.contains(k) && !k.starts_with("metadata."));
    let Some(unknown) = unknown else {
        return Ok(());
    };
    known.push(METADATA_PARAM.to_owned());
    Err(bad(
        unknown,
        &format!("unknown parameter; known: {}", known.join(", ")),
    ))
}

/// The `metadata.<key>` filters, sorted by key ([`Filters::filter`]
/// refuses an empty key).
fn metadata(map: &HashMap<String, String>) -> Vec<(String, String)> {
    let mut metadata: Vec<(String, String)> = map
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("metadata.")?.to_owned(), v.clone())))
        .collect();
    metadata.sort();
    metadata
}

/// An invalid-parameter error.
pub fn bad(name: &str, reason: &str) -> ApiError {
    ApiError::BadParam {
        name: name.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A text parameter, absent when empty.
pub fn text(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.is_empty())
}

/// An integer parameter within `min..=max`, or `default` when absent.
pub fn int(
    name: &str,
    value: &Option<String>,
    min: usize,
    max: usize,
    default: usize,
) -> Result<usize, ApiError> {
    match value {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| bad(name, &format!("must be an integer from {min} to {max}"))),
    }
}

impl Filters {
    /// The event filter, narrowed to what `scope` may read.
    pub fn filter(&self, scope: &Scope) -> Result<LogFilter, ApiError> {
        let status = match &self.status {
            Some(s) => Some(
                s.parse::<u16>()
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                    .ok_or_else(|| bad("status", "must be an HTTP status code (100-599)"))?,
            ),
            None => None,
        };
        if self.metadata.iter().any(|(k, _)| k.is_empty()) {
            return Err(bad("metadata.", "needs a key after `metadata.`"));
        }
        let filter = LogFilter {
            trace_id: text(&self.trace_id),
            session_id: text(&self.session_id),
            team: self.team(scope)?,
            user: text(&self.user),
            key_id: text(&self.key),
            model: text(&self.model),
            provider: text(&self.provider),
            status,
            metadata: self.metadata.clone(),
            from: time("from", &self.from)?,
            to: time("to", &self.to)?,
        };
        if let (Some(from), Some(to)) = (filter.from, filter.to)
            && from > to
        {
            return Err(bad("from", "must not be after `to`"));
        }
        Ok(filter)
    }

    /// The team to read: a team token's own (refusing any other it
    /// names), or the one an admin token asked for.
    fn team(&self, scope: &Scope) -> Result<Option<String>, ApiError> {
        match (scope, text(&self.team)) {
            (Scope::Team(own), Some(asked)) if asked != *own => Err(ApiError::Forbidden(format!(
                "this token reads team {own} only, not team {asked}"
            ))),
            (Scope::Team(own), _) => Ok(Some(own.clone())),
            (Scope::All, asked) => Ok(asked),
        }
    }
}

/// RFC 3339 time, a plain date (midnight UTC) or epoch milliseconds.
fn time(name: &str, value: &Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(v) = value else {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An endpoint with one parameter of its own, as `/v1/spend` has.
    #[derive(Debug, Deserialize, IntoParams)]
    #[into_params(parameter_in = Query)]
    struct Limited {
        limit: Option<String>,
    }

    /// An endpoint with no parameter of its own.
    #[derive(Debug, Deserialize, IntoParams)]
    #[into_params(parameter_in = Query)]
    struct Bare {}

    /// The query string of `pairs`, every byte percent-encoded.
    fn uri(pairs: &[(&str, &str)]) -> Uri {
        let enc = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
        let query: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        format!("/v1/logs?{}", query.join("&")).parse().unwrap()
    }

    /// The filter of a query string for `scope`, or the refusal.
    fn filter(pairs: &[(&str, &str)], scope: &Scope) -> Result<LogFilter, ApiError> {
        Filtered::<Bare>::read(&uri(pairs))?.filters.filter(scope)
    }

    #[test]
    fn bad_parameters_are_named() {
        for (p, v) in [
            ("status", "abc"),
            ("from", "yesterday"),
            ("trace", "t"),
            ("metadata.", "x"),
        ] {
            let err = filter(&[(p, v)], &Scope::All)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(p), "{p}: {err}");
        }
    }

    #[test]
    fn an_unknown_parameter_is_refused_with_the_known_ones_in_order() {
        let err = Filtered::<Limited>::read(&uri(&[("stauts", "200")]))
            .err()
            .unwrap()
            .to_string();
        let known = "trace_id, session_id, team, user, key, model, provider, status, from, to, \
                     limit, metadata.<key>";
        assert!(err.contains("stauts"), "{err}");
        assert!(
            err.contains(&format!("unknown parameter; known: {known}")),
            "{err}"
        );
    }

    #[test]
    fn a_repeated_parameter_counts_once_with_its_last_value() {
        let f = filter(&[("user", "ann"), ("user", "bob")], &Scope::All).unwrap();
        assert_eq!(f.user.as_deref(), Some("bob"));
    }

    #[test]
    fn dates_times_and_epoch_millis_are_accepted() {
        let f = filter(
            &[("from", "2026-11-01"), ("to", "1795000000000")],
            &Scope::All,
        )
        .unwrap();
        assert!(f.from.unwrap() < f.to.unwrap());
    }

    #[test]
    fn a_team_token_is_pinned_to_its_team_and_refused_others() {
        let scope = Scope::Team("eng".into());
        let f = filter(&[], &scope).unwrap();
        assert_eq!(f.team.as_deref(), Some("eng"));
        let err = filter(&[("team", "sales")], &scope).unwrap_err();
        assert!(matches!(err, ApiError::Forbidden(_)), "{err}");
    }

    #[test]
    fn metadata_filters_are_read_from_prefixed_parameters() {
        let f = filter(
            &[("metadata.repo", "tollgate"), ("metadata.env", "ci")],
            &Scope::All,
        )
        .unwrap();
        assert_eq!(
            f.metadata,
            vec![
                ("env".into(), "ci".into()),
                ("repo".into(), "tollgate".into())
            ]
        );
    }

    #[test]
    fn the_documented_filters_are_the_read_ones_and_metadata_is_listed_once() {
        let names: Vec<String> = names::<Filters>().collect();
        assert_eq!(
            names,
            [
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
                METADATA_PARAM
            ]
        );
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
            let map: HashMap<&str, String> = pairs.into_iter().collect();
            let pairs: Vec<(&str, &str)> = map.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let scope = Scope::Team("eng".into());
            match Filtered::<Limited>::read(&uri(&pairs)).and_then(|p| {
                int("limit", &p.params.limit, 1, 1000, 100)?;
                p.filters.filter(&scope)
            }) {
                Ok(f) => proptest::prop_assert_eq!(f.team.as_deref(), Some("eng")),
                Err(e) => proptest::prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}
