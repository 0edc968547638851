//! Counting a request's tokens for admission, in time linear in its size
//! and with a bounded number of counts running at once.
//!
//! tiktoken's byte-pair merge is quadratic in the length of one
//! pre-tokenizer piece, and a run of one character (a megabyte of `a`, of
//! spaces, of `=`) is one piece: counting it took seconds of CPU on a
//! blocking thread nobody could cancel. Text is therefore counted in chunks
//! of at most [`MAX_CHUNK_BYTES`], cut where the pre-tokenizer would cut
//! anyway (before the single space that starts a word) when such a place
//! exists, so ordinary text counts the same as whole, and a long run costs
//! `O(len × MAX_CHUNK_BYTES)`. Cutting inside a run only keeps tokens from
//! merging across the cut, so the count stays an upper bound in practice;
//! admission multiplies it by its safety factor in any case.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tokio::sync::Semaphore;

/// Largest chunk handed to the tokenizer: bounds one byte-pair merge to
/// `MAX_CHUNK_BYTES²` steps.
pub const MAX_CHUNK_BYTES: usize = 256;

/// Splits `text` into consecutive chunks of at most `max` bytes (at least
/// one character each), preferring to cut just before a single space that
/// follows a non-space and precedes a word, where tiktoken's pre-tokenizer
/// splits too. Concatenated, the chunks are `text`.
pub fn chunks(text: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = cut_point(rest, max);
        let (chunk, tail) = rest.split_at(cut);
        rest = tail;
        Some(chunk)
    })
}

/// Where the first chunk of `text` ends (a char boundary, > 0).
fn cut_point(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    let b = text.as_bytes();
    // A single space between a non-space and a non-space: cut before it.
    let natural = (1..=max.min(b.len() - 2))
        .rev()
        .find(|&i| b[i] == b' ' && !b[i - 1].is_ascii_whitespace() && is_word_start(b[i + 1]));
    match natural {
        Some(i) => i,
        None => hard_cut(text, max),
    }
}

/// Whether a byte can start a word piece after a space (not whitespace).
fn is_word_start(b: u8) -> bool {
    !b.is_ascii_whitespace()
}

/// The largest char boundary at or below `max`, but past the first char.
fn hard_cut(text: &str, max: usize) -> usize {
    let mut i = max;
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    if i == 0 {
        text.chars().next().map_or(text.len(), char::len_utf8)
    } else {
        i
    }
}

/// The cl100k token count of `text`, chunk by chunk; `None` once `cancel`
/// is set (the request went away, so the answer is no longer wanted).
pub fn count(text: &str, cancel: &AtomicBool) -> Option<u64> {
    let bpe = tiktoken_rs::cl100k_base_singleton();
    let mut n = 0u64;
    for chunk in chunks(text, MAX_CHUNK_BYTES) {
        if cancel.load(Ordering::Relaxed) {
            return None;
        }
        n += bpe.encode_ordinary(chunk).len() as u64;
    }
    Some(n)
}

/// Counts request bodies on blocking threads, at most `concurrency` at a
/// time; when all are busy a request is not counted (its caller keeps the
/// byte-count upper bound), so a burst of huge bodies cannot take every
/// core.
pub struct TokenCounter {
    permits: Arc<Semaphore>,
    factor: f64,
}

impl TokenCounter {
    /// `factor` multiplies the count (tiktoken is not Claude's tokenizer).
    pub fn new(concurrency: usize, factor: f64) -> TokenCounter {
        TokenCounter {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            factor,
        }
    }

    /// The default concurrency: half the cores, at least one, so counting
    /// never holds every core.
    pub fn default_concurrency() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get().div_ceil(2))
            .unwrap_or(1)
    }

    /// The safety-factored token count of `body`, or `None` when every
    /// counter is busy or the count failed. Dropping the future stops the
    /// count at its next chunk.
    pub async fn upper_bound(&self, body: &Bytes) -> Option<u64> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            tracing::debug!(
                bytes = body.len(),
                "token counters busy; admitting on the byte bound"
            );
            return None;
        };
        let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let flag = cancel.0.clone();
        let text = body.clone();
        let factor = self.factor;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let n = count(&String::from_utf8_lossy(&text), &flag)?;
            Some((n as f64 * factor).ceil() as u64)
        })
        .await
        .ok()
        .flatten()
    }
}

/// Tells a running count to stop when the admitting future is dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(text: &str) -> u64 {
        tiktoken_rs::cl100k_base_singleton()
            .encode_ordinary(text)
            .len() as u64
    }

    #[test]
    fn a_megabyte_run_of_one_character_is_cut_into_bounded_chunks() {
        for run in [
            "a".repeat(1 << 20),
            " ".repeat(1 << 20),
            "é".repeat(1 << 19),
        ] {
            let pieces: Vec<&str> = chunks(&run, MAX_CHUNK_BYTES).collect();
            assert!(
                pieces
                    .iter()
                    .all(|p| !p.is_empty() && p.len() <= MAX_CHUNK_BYTES)
            );
            assert_eq!(pieces.concat(), run);
            assert!(pieces.len() <= run.len() / (MAX_CHUNK_BYTES - 1) + 1);
        }
    }

    #[test]
    fn ordinary_text_counts_the_same_in_chunks_as_whole() {
        let text =
            "The quick brown fox jumps over the lazy dog, twice.\n  Then: {\"a\": [1, 22, 333]} "
                .repeat(200);
        let cancel = AtomicBool::new(false);
        assert!(chunks(&text, MAX_CHUNK_BYTES).count() > 50);
        assert_eq!(count(&text, &cancel), Some(whole(&text)));
    }

    #[test]
    fn a_long_run_counts_at_least_its_true_count_and_within_the_safety_factor() {
        // Small enough for the whole-run count (quadratic) to be the reference.
        for run in ["a".repeat(8192), "=".repeat(8192), " ".repeat(8192)] {
            let exact = whole(&run);
            let chunked = count(&run, &AtomicBool::new(false)).unwrap();
            assert!(chunked >= exact, "{chunked} < {exact}");
            assert!(
                (chunked as f64) <= exact as f64 * 1.3,
                "{chunked} vs {exact}"
            );
        }
    }

    #[test]
    fn a_cancelled_count_stops() {
        let cancel = AtomicBool::new(true);
        assert_eq!(count(&"a".repeat(1 << 20), &cancel), None);
    }

    #[tokio::test]
    async fn a_saturated_counter_falls_back_to_the_byte_bound() {
        let counter = TokenCounter::new(1, 1.3);
        let held = counter.permits.clone().try_acquire_owned().unwrap();
        assert_eq!(
            counter
                .upper_bound(&Bytes::from_static(b"hello world"))
                .await,
            None
        );
        drop(held);
        assert_eq!(
            counter
                .upper_bound(&Bytes::from_static(b"hello world"))
                .await,
            Some(3)
        );
    }
}
