//! Moves events from the gateway's hand-off queue onto the bus.
//!
//! It takes whatever has queued up since its last append (up to a batch),
//! lingering a few milliseconds for more when the batch is not full, so one
//! durable append covers many events (group commit). While one batch's
//! append (its write and fsync) is in flight, the next batch is taken and
//! encoded, so the encoding's CPU time overlaps the disk's; appends still
//! land one after another, in order.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::embedded::MAX_RECORD_BYTES;
use super::oversize::{self, Fitted};
use super::records::RecordBuf;
use super::{Decoded, Log};
use crate::backoff::Backoff;
use crate::event::LlmEvent;
use crate::handoff::EventQueue;
use crate::metrics::METRICS;

/// Most events appended in one call.
const BATCH: usize = 2048;
/// How long a batch that is not full waits for more events before its
/// append: each append is a durable write (an fsync on the embedded log),
/// so at moderate load events arriving a few ms apart share one instead of
/// paying one each. Only the pipeline waits; the request never does.
const LINGER: Duration = Duration::from_millis(5);

/// Runs until the queue is empty and closed: closed when every
/// `EventHandoff` is dropped, or when `stop` is cancelled.
///
/// Shutdown cancels `stop` after the HTTP servers have finished (or their
/// grace ran out). Closing the queue then, rather than waiting for the last
/// sender to go, matters: a sender can outlive the servers (a connection
/// task a client keeps open, an overflow task), and waiting on it would
/// keep everything already queued in memory past the grace period, lost.
/// After the close, late sends are refused and counted as lost; what was
/// queued is appended.
pub async fn run(mut queue: EventQueue, log: Arc<dyn Log>, topic: &str, stop: CancellationToken) {
    let mut events: Vec<LlmEvent> = Vec::with_capacity(BATCH);
    let mut buf = RecordBuf::new();
    let mut in_flight: Option<JoinHandle<()>> = None;
    let topic: Arc<str> = topic.into();
    // The error series exists (at 0) before the first error.
    METRICS.bus_append_errors.with_label_values(&[&topic]);
    while next_batch(&mut queue, &mut events, &stop).await > 0 {
        if events.len() < BATCH {
            tokio::time::sleep(LINGER).await;
            while events.len() < BATCH {
                match queue.try_recv() {
                    Ok(event) => events.push(event),
                    Err(_) => break,
                }
            }
        }
        METRICS.handoff_queue_depth.set(queue.len() as i64);
        let (records, decoded): (Vec<(Bytes, Bytes)>, Vec<Option<Decoded>>) = events
            .drain(..)
            .filter_map(|e| encode(&mut buf, e, &topic))
            .unzip();
        finish(in_flight.take()).await;
        let (log, topic) = (log.clone(), topic.clone());
        in_flight = Some(tokio::spawn(async move {
            append_until_done(log.as_ref(), &topic, records, decoded).await
        }));
    }
    finish(in_flight).await;
    tracing::info!(%topic, "event publisher drained its queue and stopped");
}

/// Waits for the next events (up to a batch); 0 once the queue is closed
/// and empty. `recv_many` is cancel-safe, so racing it against `stop`
/// loses nothing.
async fn next_batch(
    queue: &mut EventQueue,
    events: &mut Vec<LlmEvent>,
    stop: &CancellationToken,
) -> usize {
    if !stop.is_cancelled() {
        tokio::select! {
            got = queue.recv_many(events, BATCH) => return got,
            () = stop.cancelled() => {}
        }
    }
    if !queue.is_closed() {
        tracing::info!(
            queued = queue.len(),
            "event publisher: closing the queue and appending what it holds"
        );
        queue.close();
    }
    queue.recv_many(events, BATCH).await
}

/// Waits for the append in flight, if any: the next may start only after
/// it, so batches land in the order they were taken.
async fn finish(in_flight: Option<JoinHandle<()>>) {
    if let Some(append) = in_flight
        && let Err(e) = append.await
    {
        METRICS.events_lost.inc();
        tracing::error!(error = %e, "bus append task failed: its batch may be lost");
    }
}

/// Serialises one event into `buf`, cut down if it is over the embedded
/// log's record limit (an append holding it would fail forever); a failure
/// is a bug worth shouting about, and the event is counted as lost rather
/// than dropped silently.
fn encode(
    buf: &mut RecordBuf,
    event: LlmEvent,
    topic: &str,
) -> Option<((Bytes, Bytes), Option<Decoded>)> {
    match buf.json(&event) {
        Ok(json) => {
            let key = buf.bytes(event.bus_key());
            match oversize::fit(topic, &key, &json, MAX_RECORD_BYTES) {
                // The event is handed over as it is only where the record
                // holds all of it.
                Fitted::AsIs => Some(((key, json), Some(Decoded::new(event)))),
                Fitted::Shrunk(small) => Some(((key, small), None)),
                Fitted::Lost => None,
            }
        }
        Err(e) => {
            METRICS.events_lost.inc();
            tracing::error!(event_id = %event.event_id, error = %e, "event could not be encoded: lost");
            None
        }
    }
}

/// Retries an append with capped backoff until it lands: the queue in
/// front stays bounded meanwhile, so nothing grows without limit here.
async fn append_until_done(
    log: &dyn Log,
    topic: &str,
    records: Vec<(Bytes, Bytes)>,
    decoded: Vec<Option<Decoded>>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    // Handed over with the first try only: after a failure the consumer
    // decodes the bytes, as any reader can.
    let mut decoded = Some(decoded);
    loop {
        let tried = match decoded.take() {
            Some(d) => log.append_decoded(topic, None, records.clone(), d).await,
            None => log.append(topic, records.clone()).await,
        };
        match tried {
            Ok(()) => return,
            Err(e) => {
                METRICS.bus_append_errors.with_label_values(&[topic]).inc();
                tracing::error!(topic, error = %e, retry_in_ms = backoff.peek().as_millis() as u64,
                    "bus append failed; retrying");
                tokio::time::sleep(backoff.next_wait()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::local::LocalBus;
    use crate::handoff::{self, Handed};

    #[tokio::test]
    async fn stopping_appends_what_is_queued_even_while_a_sender_lives_on() {
        let dir = tempfile::tempdir().unwrap();
        let bus = LocalBus::open(&dir.path().join("log")).unwrap();
        let log: Arc<dyn Log> = bus.clone();
        let (handoff, queue) = handoff::channel(64);
        for _ in 0..5 {
            assert_eq!(handoff.send(handoff::tests::event()), Handed::Queued);
        }
        let stop = CancellationToken::new();
        stop.cancel();
        // `handoff` stays alive, as a client's open connection keeps it.
        tokio::time::timeout(Duration::from_secs(10), run(queue, log.clone(), "t", stop))
            .await
            .expect("the publisher stops although a sender is alive");
        assert_eq!(
            handoff.send(handoff::tests::event()),
            Handed::Lost,
            "refused after the close"
        );
        let mut sub = log.subscribe("g", "t").await.unwrap();
        let mut got = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while got < 5 && tokio::time::Instant::now() < deadline {
            got += sub
                .poll(100, Duration::from_millis(100))
                .await
                .unwrap()
                .len();
        }
        assert_eq!(got, 5, "every queued event was appended");
    }

    /// A consumer in this process that takes handed-over values gets each
    /// event as published, equal to its record's bytes decoded; another
    /// group on the same topic decodes the bytes; a record cut down to fit
    /// is not handed over (its bytes no longer hold the whole event).
    #[tokio::test]
    async fn published_events_are_handed_to_a_decoded_subscriber_as_their_bytes_read() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Log> = LocalBus::open(&dir.path().join("log")).unwrap();
        let mut taker = log.subscribe_decoded("taker", "t").await.unwrap();
        let mut other = log.subscribe("other", "t").await.unwrap();
        let (handoff, queue) = handoff::channel(64);
        let mut huge = handoff::tests::event();
        huge.metadata
            .insert("big".into(), "x".repeat(MAX_RECORD_BYTES));
        let sent = [handoff::tests::event(), huge, handoff::tests::event()];
        for e in &sent {
            assert_eq!(handoff.send(e.clone()), Handed::Queued);
        }
        let stop = CancellationToken::new();
        stop.cancel();
        run(queue, log.clone(), "t", stop).await;
        let mut records = taker.poll(10, Duration::from_secs(5)).await.unwrap();
        assert_eq!(records.len(), 3);
        let handed: Vec<bool> = records.iter().map(|r| r.decoded.is_some()).collect();
        assert_eq!(
            handed,
            [true, false, true],
            "the cut-down record is not handed"
        );
        for (record, sent) in records.iter_mut().zip(&sent) {
            let bytes = LlmEvent::from_json(&record.payload).unwrap();
            let event = record.event().unwrap();
            assert_eq!(event, bytes);
            if record.offset != 1 {
                assert_eq!(&event, sent);
            }
        }
        let plain = other.poll(10, Duration::from_secs(5)).await.unwrap();
        assert!(plain.iter().all(|r| r.decoded.is_none()));
    }
}
