//! One backoff policy for every retry loop in tollgate: a wait that
//! doubles from a first delay up to a cap, with optional jitter. The bus
//! publisher and forwarder, the roles waiting for Kafka, the notifier and
//! the gateway's upstream retries all wait through it, so a change to how
//! tollgate backs off is one edit.

use std::time::Duration;

use rand::Rng;

/// A doubling wait between tries.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    next: Duration,
    max: Duration,
    /// Up to this fraction is added at random, so many waiters spread out.
    jitter: f64,
}

impl Backoff {
    /// Waits `first`, then twice that, … up to `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            next: first.min(max),
            max,
            jitter: 0.0,
        }
    }

    /// Adds up to `fraction` of each wait at random.
    pub fn with_jitter(mut self, fraction: f64) -> Backoff {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// The wait before the next try, without jitter (for logs).
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// The wait before the next try; the one after it doubles.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.jittered(self.next);
        self.next = self.next.saturating_mul(2).min(self.max);
        wait
    }

    /// The wait before try `n` (1-based) of a fresh policy.
    pub fn nth(&self, n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(32);
        let base = self
            .first
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max);
        self.jittered(base)
    }

    /// Starts over from the first wait (after a success).
    pub fn reset(&mut self) {
        self.next = self.first.min(self.max);
    }

    fn jittered(&self, wait: Duration) -> Duration {
        if self.jitter == 0.0 {
            return wait;
        }
        // The cap holds with the jitter too: no wait is ever past `max`.
        wait.mul_f64(1.0 + rand::thread_rng().gen_range(0.0..self.jitter))
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_start_over_on_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let waits: Vec<u128> = (0..5).map(|_| b.next_wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(100));
        assert_eq!(b.nth(3), Duration::from_millis(400));
        assert_eq!(b.nth(u32::MAX), Duration::from_millis(500));
    }

    #[test]
    fn jitter_adds_at_most_its_fraction() {
        let b = Backoff::new(Duration::from_millis(1000), Duration::from_secs(8)).with_jitter(0.25);
        for _ in 0..100 {
            let w = b.nth(1);
            assert!(
                w >= Duration::from_millis(1000) && w <= Duration::from_millis(1250),
                "{w:?}"
            );
        }
    }
}
