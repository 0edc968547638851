//! Observed output: what a key's requests to a model really produced
//! recently, for budgets with `output_estimate = "observed"`.
//!
//! Claude Code asks for `max_tokens` of 32,000–64,000 and usually gets a
//! few thousand. Reserving all of it ($1.60 for an Opus request at
//! $25/MTok) refuses a $5 session cap with $3.40 unspent. An observed
//! budget reserves instead the 99th percentile of the last
//! [`WINDOW`] outputs of the same key and model (never more than the
//! request's `max_tokens`), and all of `max_tokens` until there are
//! [`MIN_SAMPLES`] of them. What this can overshoot is stated in the README
//! ("Output estimates").
//!
//! Bounded: [`MAX_SERIES`] (key, model) series of [`WINDOW`] samples each;
//! a client sending invented model names evicts only its own series' peers
//! from a cache, never grows memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Samples kept per (key, model).
pub const WINDOW: usize = 256;
/// Samples needed before the percentile replaces `max_tokens`.
pub const MIN_SAMPLES: usize = 20;
/// The percentile reserved.
pub const PERCENTILE: f64 = 0.99;
/// Most (key, model) series kept.
const MAX_SERIES: u64 = 4096;

/// One series: the latest outputs, oldest first.
type Series = Arc<Mutex<VecDeque<u64>>>;

/// Recent outputs per (key, model).
pub struct ObservedOutputs {
    series: moka::sync::Cache<(String, String), Series>,
}

impl Default for ObservedOutputs {
    fn default() -> Self {
        ObservedOutputs {
            series: moka::sync::Cache::new(MAX_SERIES),
        }
    }
}

impl ObservedOutputs {
    /// Records the output tokens one request of `key` to `model` produced.
    pub fn record(&self, key: &str, model: &str, output_tokens: u64) {
        let series = self
            .series
            .get_with((key.to_owned(), model.to_owned()), Series::default);
        let mut s = series.lock().unwrap_or_else(|p| p.into_inner());
        if s.len() == WINDOW {
            s.pop_front();
        }
        s.push_back(output_tokens);
    }

    /// The output to reserve for a request of `key` to `model` asking for
    /// `max_tokens`: the observed percentile, capped by `max_tokens`, or
    /// `max_tokens` itself while samples are too few.
    pub fn estimate(&self, key: &str, model: &str, max_tokens: u64) -> u64 {
        let Some(series) = self.series.get(&(key.to_owned(), model.to_owned())) else {
            return max_tokens;
        };
        let mut samples: Vec<u64> = {
            let s = series.lock().unwrap_or_else(|p| p.into_inner());
            if s.len() < MIN_SAMPLES {
                return max_tokens;
            }
            s.iter().copied().collect()
        };
        samples.sort_unstable();
        let rank = (PERCENTILE * samples.len() as f64).ceil() as usize;
        let p = samples[rank.clamp(1, samples.len()) - 1];
        p.min(max_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_tokens_until_enough_samples_then_the_high_percentile_capped_by_max_tokens() {
        let o = ObservedOutputs::default();
        assert_eq!(o.estimate("k", "m", 64_000), 64_000, "no samples");
        for _ in 0..MIN_SAMPLES - 1 {
            o.record("k", "m", 2_000);
        }
        assert_eq!(o.estimate("k", "m", 64_000), 64_000, "too few samples");
        o.record("k", "m", 9_000);
        assert_eq!(
            o.estimate("k", "m", 64_000),
            9_000,
            "p99 of 20 samples is the largest"
        );
        assert_eq!(o.estimate("k", "m", 4_000), 4_000, "capped by max_tokens");
        assert_eq!(o.estimate("k", "other", 64_000), 64_000, "per model");
        assert_eq!(o.estimate("k2", "m", 64_000), 64_000, "per key");
        for _ in 0..WINDOW {
            o.record("k", "m", 1_000);
        }
        assert_eq!(
            o.estimate("k", "m", 64_000),
            1_000,
            "only the last {WINDOW} count"
        );
    }
}
