//! A finished request's metrics, through handles resolved once per
//! (provider, model, team).
//!
//! Looking a series up by its label values hashes and compares every value
//! under the metric family's lock; a request did that eight times (requests,
//! duration, time to first token, five token classes), about 2% of its
//! instructions. The handles of one (provider, model, team) are looked up
//! once and kept; a request then costs one lookup here.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};
use std::time::Duration;

use prometheus::{Histogram, IntCounter};

use crate::event::LlmEvent;
use crate::metrics::{METRICS, error_label, model_label};

/// Most (provider, model, team) handles kept. The labels are bounded
/// already (configured providers and teams; `model_label` turns unknown
/// models into `other`); this keeps the cache bounded whatever the config.
/// Series past it are looked up by label per request, as before.
const MAX_SERIES: usize = 10_000;

/// `tollgate_tokens_total`'s classes, in [`Series::tokens`]' order.
const TOKEN_CLASSES: [&str; 5] = [
    "input",
    "output",
    "cache_write_5m",
    "cache_write_1h",
    "cache_read",
];

/// The handles of one (provider, model, team).
struct Series {
    /// `tollgate_requests_total` with status 200 (other statuses are
    /// looked up by label: they are rarer and many).
    requests_ok: IntCounter,
    duration: Histogram,
    ttft: Histogram,
    tokens: [IntCounter; 5],
}

/// Handles resolved so far, by [`series_key`].
static SERIES: LazyLock<RwLock<HashMap<String, Arc<Series>>>> = LazyLock::new(Default::default);

/// The key of a (provider, model, team): the three joined by a character
/// none of them holds in practice (a collision would only merge two
/// series' handles, never lose a count).
fn series_key(provider: &str, model: &str, team: &str) -> String {
    format!("{provider}\u{1f}{model}\u{1f}{team}")
}

impl Series {
    /// The handles of `(provider, model, team)`, resolved once.
    fn of(provider: &str, model: &str, team: &str) -> Arc<Series> {
        let key = series_key(provider, model, team);
        let known = SERIES
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        if let Some(series) = known {
            return series;
        }
        let series = Arc::new(Series::resolve(provider, model, team));
        let mut all = SERIES.write().unwrap_or_else(PoisonError::into_inner);
        if all.len() < MAX_SERIES {
            all.insert(key, series.clone());
        }
        series
    }

    fn resolve(provider: &str, model: &str, team: &str) -> Series {
        Series {
            requests_ok: METRICS
                .requests
                .with_label_values(&[provider, model, "200", team]),
            duration: METRICS
                .request_duration
                .with_label_values(&[provider, model]),
            ttft: METRICS.ttft.with_label_values(&[provider, model]),
            tokens: TOKEN_CLASSES
                .map(|class| METRICS.tokens.with_label_values(&[class, team, model])),
        }
    }
}

/// Request, latency and token metrics of one finished event.
pub fn observe(e: &LlmEvent, elapsed: Duration, ttft: Option<Duration>) {
    let model = model_label(e.model_served.as_deref());
    let provider = if e.provider.is_empty() {
        "none"
    } else {
        e.provider.as_str()
    };
    if let Some(error) = &e.error_type {
        METRICS
            .request_errors
            .with_label_values(&[provider, error_label(error)])
            .inc();
    }
    let series = Series::of(provider, model, &e.team);
    if e.status == 200 {
        series.requests_ok.inc();
    } else {
        METRICS
            .requests
            .with_label_values(&[provider, model, &e.status.to_string(), &e.team])
            .inc();
    }
    series.duration.observe(elapsed.as_secs_f64());
    if let Some(t) = ttft {
        series.ttft.observe(t.as_secs_f64());
    }
    let u = &e.usage;
    let counts = [
        u.input_tokens,
        u.output_tokens,
        u.cache_creation_5m_tokens,
        u.cache_creation_1h_tokens,
        u.cache_read_tokens,
    ];
    for (counter, n) in series.tokens.iter().zip(counts) {
        if n > 0 {
            counter.inc_by(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a request counts lands in the same series a label lookup
    /// finds, for a first and a repeated (cached) request, a 200 and not.
    #[test]
    fn counts_land_in_the_series_their_labels_name() {
        let mut e = crate::handoff::tests::event();
        e.provider = "anthropic".into();
        e.team = "request-metrics-test".into();
        e.model_served = None;
        e.usage.input_tokens = 7;
        e.usage.cache_read_tokens = 3;
        let requests = |status: &str| {
            METRICS
                .requests
                .with_label_values(&["anthropic", "other", status, "request-metrics-test"])
                .get()
        };
        let tokens = |class: &str| {
            METRICS
                .tokens
                .with_label_values(&[class, "request-metrics-test", "other"])
                .get()
        };
        let duration = || {
            METRICS
                .request_duration
                .with_label_values(&["anthropic", "other"])
                .get_sample_count()
        };
        let before = (
            requests("200"),
            requests("429"),
            tokens("input"),
            tokens("cache_read"),
            duration(),
        );
        for status in [200, 200, 429] {
            e.status = status;
            observe(&e, Duration::from_millis(5), Some(Duration::from_millis(1)));
        }
        assert_eq!(requests("200") - before.0, 2);
        assert_eq!(requests("429") - before.1, 1);
        assert_eq!(tokens("input") - before.2, 21);
        assert_eq!(tokens("cache_read") - before.3, 9);
        assert!(duration() - before.4 >= 3, "other tests may observe too");
    }
}
