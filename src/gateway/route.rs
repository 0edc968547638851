//! Routing configs: which targets a request tries, in what order, and how
//! often. Written in tollgate.toml (`[routes.NAME]`) or sent per request
//! as `x-tollgate-config` (a route's name, or Portkey's config JSON as the
//! seed guides write it); `x-tollgate-provider` names one target.
//!
//! A config never acts after the first byte of an answer went to the
//! client: every decision here is made on the answer's status alone.
//! Owned by the gateway, which runs routes; `config` reads the `[routes]`
//! and `[routing]` sections from here (the config beside its stage).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use http::HeaderMap;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The named routes (`[routes.NAME]`), by name.
pub type Routes = BTreeMap<String, RouteConfig>;

/// How a route picks among its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The first target only.
    #[default]
    Single,
    /// Targets in order, the next on a listed status or a connection error.
    Fallback,
    /// One target chosen by weight.
    Loadbalance,
    /// The target named by the first matching condition (on the model or
    /// a metadata value), else `default`.
    Conditional,
}

/// One rule of a conditional route: `query` maps `model` or
/// `metadata.KEY` to a value, `{"$eq": v}`, `{"$ne": v}` or `{"$in": [..]}`;
/// all must hold.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Condition {
    pub query: Map<String, Value>,
    pub then: String,
}

/// What conditions look at.
pub struct Facts<'a> {
    pub model: Option<&'a str>,
    pub metadata: &'a BTreeMap<String, String>,
}

impl Condition {
    fn holds(&self, facts: &Facts<'_>) -> bool {
        self.query.iter().all(|(field, test)| {
            let actual = if field == "model" {
                facts.model
            } else {
                field
                    .strip_prefix("metadata.")
                    .and_then(|k| facts.metadata.get(k))
                    .map(String::as_str)
            };
            match test {
                Value::Object(ops) => ops.iter().all(|(op, v)| match op.as_str() {
                    "$eq" => actual == v.as_str(),
                    "$ne" => actual != v.as_str(),
                    "$in" => v
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x.as_str() == actual)),
                    "$nin" => v
                        .as_array()
                        .is_some_and(|a| !a.iter().any(|x| x.as_str() == actual)),
                    _ => false,
                }),
                other => actual == other.as_str(),
            }
        })
    }
}

/// One target of a route.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Target {
    /// The target's name in a conditional route (defaults to `provider`).
    #[serde(default)]
    pub name: Option<String>,
    /// A `[providers.NAME]` (Portkey's `virtual_key` is accepted too).
    #[serde(alias = "virtual_key")]
    pub provider: String,
    #[serde(default = "one")]
    pub weight: f64,
    /// Body fields replaced before sending (e.g. `model`).
    #[serde(default)]
    pub override_params: Map<String, Value>,
}

fn one() -> f64 {
    1.0
}

/// A weight as the draw uses it: negative or absurd weights (a client's
/// `1e308` twice would sum to infinity, which no range can draw from)
/// are clamped to 0..=1e9.
fn usable_weight(w: f64) -> f64 {
    if w.is_finite() {
        w.clamp(0.0, 1e9)
    } else {
        0.0
    }
}

/// Retries of one target.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Retry {
    pub attempts: u32,
    #[serde(default = "default_retry_codes")]
    pub on_status_codes: Vec<u16>,
}

fn default_retry_codes() -> Vec<u16> {
    vec![429, 500, 502, 503, 504, 529]
}

/// A route, in tollgate's TOML form.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub strategy: Mode,
    pub targets: Vec<Target>,
    /// Statuses that move a fallback to its next target.
    #[serde(default = "default_retry_codes")]
    pub on_status_codes: Vec<u16>,
    #[serde(default)]
    pub retry: Option<Retry>,
    /// Client headers forwarded even though tollgate would drop them.
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// Conditional routes: rules in order, and the target when none holds.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub default: Option<String>,
    /// Exact-match response cache.
    #[serde(default)]
    pub cache: Option<CacheConfig>,
    /// Subscription passthrough for every key whose `route` names this
    /// one (see `KeyConfig::passthrough`); Anthropic targets only. A
    /// per-request `x-tollgate-config` cannot switch a request to it: who
    /// pays is decided by the key.
    #[serde(default)]
    pub passthrough: bool,
}

/// `cache = { mode = "simple", max_age = 3600 }` (Portkey's shape).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CacheConfig {
    pub mode: String,
    /// Seconds an answer stays fresh.
    #[serde(default = "default_max_age")]
    pub max_age: u64,
}

fn default_max_age() -> u64 {
    3600
}

impl CacheConfig {
    /// Whether this is a cache tollgate serves (`simple`).
    pub fn enabled(&self) -> bool {
        self.mode == "simple"
    }
}

/// Portkey's config JSON (`strategy.mode`, `targets`, `retry`, …).
#[derive(Debug, Deserialize)]
struct PortkeyConfig {
    #[serde(default)]
    strategy: Option<PortkeyStrategy>,
    #[serde(default)]
    targets: Vec<Target>,
    #[serde(default, alias = "virtual_key")]
    provider: Option<String>,
    #[serde(default)]
    retry: Option<Retry>,
    #[serde(default)]
    override_params: Map<String, Value>,
    #[serde(default)]
    forward_headers: Vec<String>,
    #[serde(default)]
    cache: Option<CacheConfig>,
}

#[derive(Debug, Deserialize)]
struct PortkeyStrategy {
    mode: Mode,
    #[serde(default)]
    on_status_codes: Option<Vec<u16>>,
    #[serde(default)]
    conditions: Vec<Condition>,
    #[serde(default)]
    default: Option<String>,
}

impl RouteConfig {
    /// One target, no retries: a key's plain `provider`.
    pub fn single(provider: &str) -> RouteConfig {
        RouteConfig {
            strategy: Mode::Single,
            targets: vec![Target {
                name: None,
                provider: provider.to_owned(),
                weight: 1.0,
                override_params: Map::new(),
            }],
            on_status_codes: default_retry_codes(),
            retry: None,
            forward_headers: Vec::new(),
            conditions: Vec::new(),
            default: None,
            cache: None,
            passthrough: false,
        }
    }

    /// Parses Portkey's JSON config.
    pub fn from_portkey_json(text: &str) -> Result<RouteConfig, String> {
        let p: PortkeyConfig = serde_json::from_str(text)
            .map_err(|e| format!("not a route name nor valid config JSON: {e}"))?;
        let mut targets = p.targets;
        if targets.is_empty() {
            let provider = p
                .provider
                .ok_or("config has neither targets nor provider")?;
            targets.push(Target {
                name: None,
                provider,
                weight: 1.0,
                override_params: p.override_params,
            });
        }
        let (strategy, codes, conditions, default) = match p.strategy {
            Some(s) => (s.mode, s.on_status_codes, s.conditions, s.default),
            None => (Mode::Single, None, Vec::new(), None),
        };
        Ok(RouteConfig {
            strategy,
            targets,
            on_status_codes: codes.unwrap_or_else(default_retry_codes),
            retry: p.retry,
            forward_headers: p.forward_headers,
            conditions,
            default,
            cache: p.cache,
            passthrough: false,
        })
    }

    /// The targets to try, in order (a load balance draws one, a
    /// conditional route picks by `facts`).
    pub fn plan(&self, facts: &Facts<'_>) -> Vec<&Target> {
        match self.strategy {
            Mode::Conditional => {
                let wanted = self
                    .conditions
                    .iter()
                    .find(|c| c.holds(facts))
                    .map(|c| c.then.as_str())
                    .or(self.default.as_deref());
                let named =
                    |t: &&Target| t.name.as_deref().unwrap_or(&t.provider) == wanted.unwrap_or("");
                self.targets
                    .iter()
                    .find(named)
                    .or(self.targets.first())
                    .into_iter()
                    .collect()
            }
            Mode::Single => self.targets.iter().take(1).collect(),
            Mode::Fallback => self.targets.iter().collect(),
            Mode::Loadbalance => {
                let total: f64 = self.targets.iter().map(|t| usable_weight(t.weight)).sum();
                let mut pick = rand::thread_rng().gen_range(0.0..total.max(f64::MIN_POSITIVE));
                for t in &self.targets {
                    pick -= usable_weight(t.weight);
                    if pick < 0.0 {
                        return vec![t];
                    }
                }
                self.targets.iter().take(1).collect()
            }
        }
    }

    /// Whether a status sends a fallback to its next target.
    pub fn falls_back_on(&self, status: u16) -> bool {
        self.strategy == Mode::Fallback
            && !is_answer(status)
            && self.on_status_codes.contains(&status)
    }

    /// Whether a status sends the same target another try.
    pub fn retries_on(&self, status: u16) -> bool {
        !is_answer(status)
            && self
                .retry
                .as_ref()
                .is_some_and(|r| r.on_status_codes.contains(&status))
    }

    /// Tries of each target the route asks for (at least one).
    pub fn tries_per_target(&self) -> u32 {
        self.retry.as_ref().map_or(1, |r| r.attempts.max(1))
    }

    /// Refuses what no route may ask: moving on after a success (the
    /// provider bills every answered call) or a config with no target.
    pub fn validated(&self) -> Result<(), String> {
        self.check_fields().map_err(|(_, reason)| reason)
    }

    /// [`RouteConfig::validated`] naming the field at fault (`targets`,
    /// `retry.on_status_codes`, `conditions[0].query.model`), for the
    /// admin API's 400s.
    pub fn check_fields(&self) -> Result<(), (String, String)> {
        if self.targets.is_empty() {
            return Err(("targets".into(), "config has no targets".into()));
        }
        let answer = |field: &str, codes: &[u16]| match codes.iter().find(|s| is_answer(**s)) {
            Some(s) => Err((
                field.to_owned(),
                format!(
                    "on_status_codes lists {s}: a 2xx answer is billed and final, never retried or fallen back from"
                ),
            )),
            None => Ok(()),
        };
        answer("on_status_codes", &self.on_status_codes)?;
        if let Some(r) = &self.retry {
            answer("retry.on_status_codes", &r.on_status_codes)?;
        }
        for (i, c) in self.conditions.iter().enumerate() {
            check_condition(c)
                .map_err(|(field, reason)| (format!("conditions[{i}].query.{field}"), reason))?;
        }
        Ok(())
    }
}

/// A condition that can hold: it tests `model` or `metadata.KEY` with
/// a value or one of `$eq`, `$ne`, `$in`, `$nin` (anything else would
/// silently never match).
fn check_condition(c: &Condition) -> Result<(), (String, String)> {
    for (field, test) in &c.query {
        if field != "model" && !field.starts_with("metadata.") {
            return Err((
                field.clone(),
                "conditions test `model` or `metadata.KEY`".into(),
            ));
        }
        let Value::Object(ops) = test else { continue };
        if let Some(op) = ops
            .keys()
            .find(|op| !matches!(op.as_str(), "$eq" | "$ne" | "$in" | "$nin"))
        {
            return Err((
                field.clone(),
                format!("unknown operator {op:?} (use $eq, $ne, $in or $nin)"),
            ));
        }
    }
    Ok(())
}

/// A 2xx: the provider answered (and billed); no route moves past it.
fn is_answer(status: u16) -> bool {
    (200..300).contains(&status)
}

/// The text of the first of `names` present.
fn first_of<'a>(headers: &'a HeaderMap, names: &[&'static str]) -> Option<&'a str> {
    crate::http_headers::first_of(headers, names).and_then(|(_, v)| v.to_str().ok())
}

/// What a key lets its requests say about their own routing. A client
/// config can multiply upstream calls, pick any provider and rewrite the
/// body, so it is a permission each key is given, never a default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientRouting {
    /// `allow_client_config`: JSON configs and `x-tollgate-provider`.
    pub allow_config: bool,
    /// `client_routes`: the `[routes.NAME]` the key may name.
    pub routes: Vec<String>,
}

/// Why a request's routing headers were not followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The header is well formed but the key may not use it.
    #[error("{header} is not allowed for this key: {reason}")]
    Forbidden {
        header: &'static str,
        reason: String,
    },
    /// The header could not be used as a route.
    #[error("{header} is invalid: {reason}")]
    Invalid {
        header: &'static str,
        reason: String,
    },
}

/// The route of one request: the per-request headers win over the key's
/// where the key allows them. An error names the header, and for a
/// refusal the key setting that would allow it. The key's route or a named
/// one is borrowed, not copied: only a route the headers make is built.
pub fn resolve<'a>(
    headers: &HeaderMap,
    key_route: &'a RouteConfig,
    routes: &'a BTreeMap<String, RouteConfig>,
    allowed: &ClientRouting,
) -> Result<Cow<'a, RouteConfig>, RouteError> {
    if let Some(provider) = first_of(headers, &["x-tollgate-provider", "x-portkey-provider"]) {
        if !allowed.allow_config {
            return Err(forbidden(
                "x-tollgate-provider",
                "choosing a provider per request needs `allow_client_config = true` on the key",
            ));
        }
        return Ok(Cow::Owned(RouteConfig::single(provider.trim())));
    }
    match first_of(headers, &["x-tollgate-config", "x-portkey-config"]) {
        None => Ok(Cow::Borrowed(key_route)),
        Some(v) if !v.trim_start().starts_with('{') => {
            named_route(v.trim(), routes, allowed).map(Cow::Borrowed)
        }
        Some(_) if !allowed.allow_config => Err(forbidden(
            "x-tollgate-config",
            "a routing config sent with the request needs `allow_client_config = true` on the key",
        )),
        Some(v) => RouteConfig::from_portkey_json(v)
            .and_then(|r| r.validated().map(|()| Cow::Owned(r)))
            .map_err(|reason| RouteError::Invalid {
                header: "x-tollgate-config",
                reason,
            }),
    }
}

/// A route the request names, if the key lists it in `client_routes`.
fn named_route<'a>(
    name: &str,
    routes: &'a BTreeMap<String, RouteConfig>,
    allowed: &ClientRouting,
) -> Result<&'a RouteConfig, RouteError> {
    if !allowed.routes.iter().any(|r| r == name) {
        return Err(forbidden(
            "x-tollgate-config",
            &format!("route {name:?} is not in the key's `client_routes`"),
        ));
    }
    routes.get(name).ok_or_else(|| RouteError::Invalid {
        header: "x-tollgate-config",
        reason: format!("no route named {name:?}"),
    })
}

fn forbidden(header: &'static str, reason: &str) -> RouteError {
    RouteError::Forbidden {
        header,
        reason: reason.to_owned(),
    }
}

/// Gateway-wide bounds on what any route may make tollgate do for one
/// request (`[routing]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Upstream calls per request, retries and fallbacks together.
    pub max_attempts: u32,
    /// Longest any cached answer is served, whatever a route asks.
    pub cache_max_age_secs: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            max_attempts: 5,
            cache_max_age_secs: 24 * 3600,
        }
    }
}

/// How long to wait before retry `n` (1-based): the answer's
/// `retry-after` when it gives a usable number of seconds (up to 60 s),
/// else exponential backoff from 250 ms with up to 25 % jitter.
pub fn backoff(n: u32, retry_after: Option<&str>) -> Duration {
    if let Some(wait) = retry_after.and_then(retry_after_secs) {
        return wait;
    }
    crate::backoff::Backoff::new(Duration::from_millis(250), Duration::from_secs(8))
        .with_jitter(0.25)
        .nth(n)
}

/// A `retry-after` in seconds, capped at 60; `None` for anything that is
/// not a finite, non-negative number (`nan`, `inf`, `-1`, an HTTP date):
/// an upstream header must never decide a panic or an endless wait.
fn retry_after_secs(value: &str) -> Option<Duration> {
    let secs = value.trim().parse::<f64>().ok()?;
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::try_from_secs_f64(secs.min(60.0)).ok())
        .flatten()
}

/// The body with `override_params` applied (unchanged if none).
pub fn apply_overrides(body: &bytes::Bytes, overrides: &Map<String, Value>) -> bytes::Bytes {
    if overrides.is_empty() {
        return body.clone();
    }
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(body) else {
        return body.clone();
    };
    for (k, v) in overrides {
        map.insert(k.clone(), v.clone());
    }
    serde_json::to_vec(&Value::Object(map))
        .map(bytes::Bytes::from)
        .unwrap_or_else(|_| body.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portkey_fallback_config_as_the_guides_write_it_parses() {
        let c = RouteConfig::from_portkey_json(
            r#"{"strategy":{"mode":"fallback","on_status_codes":[529]},"targets":[{"virtual_key":"anthropic"},{"provider":"bedrock","override_params":{"model":"claude-sonnet-4-5"}}],"retry":{"attempts":2}}"#,
        )
        .unwrap();
        assert_eq!(c.strategy, Mode::Fallback);
        assert_eq!(
            c.plan(&facts())
                .iter()
                .map(|t| t.provider.as_str())
                .collect::<Vec<_>>(),
            ["anthropic", "bedrock"]
        );
        assert!(c.falls_back_on(529) && !c.falls_back_on(429));
        assert_eq!(c.retry.unwrap().attempts, 2);
    }

    #[test]
    fn loadbalance_follows_weights_within_tolerance() {
        let c = RouteConfig::from_portkey_json(r#"{"strategy":{"mode":"loadbalance"},"targets":[{"provider":"a","weight":0.75},{"provider":"b","weight":0.25}]}"#).unwrap();
        let a = (0..10_000)
            .filter(|_| c.plan(&facts())[0].provider == "a")
            .count();
        assert!((7_200..7_800).contains(&a), "{a} of 10000 to a");
    }

    fn facts() -> Facts<'static> {
        static EMPTY: std::sync::LazyLock<BTreeMap<String, String>> =
            std::sync::LazyLock::new(BTreeMap::new);
        Facts {
            model: Some("claude-sonnet-4-5"),
            metadata: &EMPTY,
        }
    }

    #[test]
    fn conditional_route_picks_by_metadata_then_model_then_default() {
        let c = RouteConfig::from_portkey_json(
            r#"{"strategy":{"mode":"conditional","conditions":[
                {"query":{"metadata.tier":{"$eq":"pro"}},"then":"fast"},
                {"query":{"model":{"$in":["claude-haiku-4-5"]}},"then":"cheap"}],"default":"cheap"},
              "targets":[{"name":"fast","provider":"anthropic"},{"name":"cheap","provider":"bedrock"}]}"#,
        )
        .unwrap();
        let mut md = BTreeMap::new();
        md.insert("tier".to_owned(), "pro".to_owned());
        assert_eq!(
            c.plan(&Facts {
                model: Some("x"),
                metadata: &md
            })[0]
                .provider,
            "anthropic"
        );
        let none = BTreeMap::new();
        assert_eq!(
            c.plan(&Facts {
                model: Some("claude-haiku-4-5"),
                metadata: &none
            })[0]
                .provider,
            "bedrock"
        );
        assert_eq!(
            c.plan(&Facts {
                model: Some("other"),
                metadata: &none
            })[0]
                .provider,
            "bedrock"
        );
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        assert_eq!(backoff(1, Some("2")), Duration::from_secs(2));
        assert_eq!(backoff(1, Some("600")), Duration::from_secs(60));
        let b = backoff(3, None);
        assert!(
            b >= Duration::from_millis(1000) && b <= Duration::from_millis(1250),
            "{b:?}"
        );
    }

    #[test]
    fn retry_after_that_is_not_a_finite_number_falls_back_to_backoff() {
        for hostile in [
            "nan",
            "NaN",
            "inf",
            "-inf",
            "-1",
            "1e400",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "",
        ] {
            let b = backoff(1, Some(hostile));
            assert!(b <= Duration::from_millis(313), "{hostile:?} gave {b:?}");
        }
        assert_eq!(backoff(1, Some("0.5")), Duration::from_millis(500));
        assert!(backoff(u32::MAX, None) <= Duration::from_secs(8));
    }

    fn with(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    }

    #[test]
    fn client_routing_headers_need_the_keys_permission() {
        let key_route = RouteConfig::single("anthropic");
        let mut routes = BTreeMap::new();
        routes.insert("cheap".to_owned(), RouteConfig::single("bedrock"));
        let none = ClientRouting::default();
        for (name, value) in [
            ("x-tollgate-provider", "bedrock"),
            ("x-portkey-provider", "bedrock"),
            ("x-tollgate-config", r#"{"provider":"bedrock"}"#),
            ("x-portkey-config", r#"{"provider":"bedrock"}"#),
            ("x-tollgate-config", "cheap"),
        ] {
            let err = resolve(&with(name, value), &key_route, &routes, &none).unwrap_err();
            assert!(matches!(err, RouteError::Forbidden { .. }), "{name}: {err}");
            let text = err.to_string();
            assert!(
                text.contains("allow_client_config") || text.contains("client_routes"),
                "{text}"
            );
        }
        let listed = ClientRouting {
            allow_config: false,
            routes: vec!["cheap".into()],
        };
        let r = resolve(
            &with("x-tollgate-config", "cheap"),
            &key_route,
            &routes,
            &listed,
        )
        .unwrap();
        assert_eq!(r.targets[0].provider, "bedrock");
        let r = resolve(&HeaderMap::new(), &key_route, &routes, &none).unwrap();
        assert_eq!(r.targets[0].provider, "anthropic");
    }

    #[test]
    fn no_config_may_retry_or_fall_back_on_a_success() {
        let allowed = ClientRouting {
            allow_config: true,
            routes: Vec::new(),
        };
        for config in [
            r#"{"strategy":{"mode":"fallback","on_status_codes":[200]},"targets":[{"provider":"a"},{"provider":"a"}]}"#,
            r#"{"provider":"a","retry":{"attempts":30,"on_status_codes":[201,529]}}"#,
        ] {
            let err = resolve(
                &with("x-tollgate-config", config),
                &RouteConfig::single("a"),
                &BTreeMap::new(),
                &allowed,
            )
            .unwrap_err();
            assert!(err.to_string().contains("2xx"), "{err}");
        }
        // A TOML route that lists 200 still never moves on from one.
        let mut c = RouteConfig::single("a");
        c.strategy = Mode::Fallback;
        c.on_status_codes = vec![200, 529];
        assert!(!c.falls_back_on(200) && c.falls_back_on(529));
    }

    #[test]
    fn loadbalance_survives_weights_that_sum_to_infinity() {
        let c = RouteConfig::from_portkey_json(r#"{"strategy":{"mode":"loadbalance"},"targets":[{"provider":"a","weight":1e308},{"provider":"b","weight":1e308},{"provider":"c","weight":-5}]}"#).unwrap();
        for _ in 0..100 {
            assert_ne!(c.plan(&facts())[0].provider, "c");
        }
    }

    #[test]
    fn overrides_replace_body_fields() {
        let out = apply_overrides(
            &bytes::Bytes::from_static(br#"{"model":"a","max_tokens":1}"#),
            &serde_json::from_str(r#"{"model":"b"}"#).unwrap(),
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "b");
        assert_eq!(v["max_tokens"], 1);
    }
}
