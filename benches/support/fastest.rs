//! Timing a small operation on a shared machine: the fastest of several
//! passes is the one least disturbed by whatever else ran.

use std::time::Instant;

/// Fastest of `passes` passes of `calls` calls of `f`, in ns per call.
pub fn ns_per_call(passes: u32, calls: u32, mut f: impl FnMut()) -> f64 {
    (0..passes)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..calls {
                f();
            }
            started.elapsed().as_nanos() as f64 / f64::from(calls)
        })
        .fold(f64::INFINITY, f64::min)
}
