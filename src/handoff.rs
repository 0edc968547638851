//! The bounded queue between the gateway and the bus.
//!
//! The gateway may not wait on the pipeline and may not know which bus is
//! behind it, so it holds only this sending end: a non-blocking push of a
//! finished `LlmEvent`. Whatever drains the queue (the bus publisher) lives
//! downstream and owns the receiving end.
//!
//! When the queue is full, an event waits for room in a task of its own,
//! but only as many as the queue holds (the overflow room): past that the
//! event is counted as lost, so a stalled pipeline costs bounded memory and
//! a bounded number of tasks, never one task per request.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

use crate::event::LlmEvent;
use crate::metrics::METRICS;

/// The gateway's side of the queue; cheap to clone, one per request path.
#[derive(Clone, Debug)]
pub struct EventHandoff {
    tx: mpsc::Sender<LlmEvent>,
    /// One permit per event allowed to wait for room in the queue.
    overflow: Arc<Semaphore>,
}

/// The bus's side of the queue.
pub type EventQueue = mpsc::Receiver<LlmEvent>;

/// What became of one handed-over event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handed {
    /// In the queue.
    Queued,
    /// Waiting for room (in the overflow).
    Waiting,
    /// Queue and overflow full, or the pipeline stopped: counted as lost.
    Lost,
}

/// Creates the queue with room for `capacity` events, and as many again
/// waiting for room.
pub fn channel(capacity: usize) -> (EventHandoff, EventQueue) {
    let (tx, rx) = mpsc::channel(capacity);
    let overflow = Arc::new(Semaphore::new(capacity));
    (EventHandoff { tx, overflow }, rx)
}

impl EventHandoff {
    /// Hands an event over without waiting.
    ///
    /// When the queue is full the event waits for room in a task (counted
    /// in `tollgate_events_handoff_overflow_total`) while overflow room
    /// lasts, so the request still never waits on the pipeline; beyond it
    /// the event is lost and counted.
    pub fn send(&self, event: LlmEvent) -> Handed {
        match self.tx.try_send(event) {
            Ok(()) => Handed::Queued,
            Err(mpsc::error::TrySendError::Full(event)) => self.overflow(event),
            Err(mpsc::error::TrySendError::Closed(event)) => {
                METRICS.events_lost.inc();
                tracing::error!(event_id = %event.event_id, trace_id = %event.trace_id,
                    "event queue closed (pipeline stopped): event lost");
                Handed::Lost
            }
        }
    }

    /// Parks an event that found the queue full, if overflow room is left.
    fn overflow(&self, event: LlmEvent) -> Handed {
        let Ok(permit) = self.overflow.clone().try_acquire_owned() else {
            METRICS.events_lost.inc();
            METRICS.handoff_overflow_lost.inc();
            tracing::error!(event_id = %event.event_id, trace_id = %event.trace_id,
                "event queue and its overflow are full (the bus is not keeping up): event lost");
            return Handed::Lost;
        };
        METRICS.handoff_overflow.inc();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if tx.send(event).await.is_err() {
                METRICS.events_lost.inc();
                tracing::error!("event queue closed while an event waited for room: event lost");
            }
        });
        Handed::Waiting
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid event.
    pub(crate) fn event() -> LlmEvent {
        serde_json::from_value(serde_json::json!({
            "event_id": uuid::Uuid::now_v7(), "schema_version": 1, "trace_id": "t",
            "session_id": null, "request_id": null,
            "started_at": "2026-01-01T00:00:00Z", "ended_at": "2026-01-01T00:00:00Z",
            "ttft_ms": null, "latency_ms": 0, "workspace": "w", "team": "t", "user": "u",
            "key_id": "k", "metadata": {}, "endpoint": "messages", "provider": "", "target": "",
            "region": null, "model_requested": null, "model_served": null, "stream": false,
            "status": 200, "error_type": null, "stop_reason": null, "attempts": [],
            "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_5m_tokens": 0,
                "cache_creation_1h_tokens": 0, "cache_read_tokens": 0,
                "web_search_requests": 0, "web_fetch_requests": 0},
            "downgrades": [], "client": null
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_stalled_queue_parks_a_bounded_number_of_events_and_counts_the_rest_lost() {
        let (handoff, mut queue) = channel(4);
        let outcomes: Vec<Handed> = (0..1000).map(|_| handoff.send(event())).collect();
        let count = |h: Handed| outcomes.iter().filter(|o| **o == h).count();
        assert_eq!(count(Handed::Queued), 4);
        assert_eq!(count(Handed::Waiting), 4);
        assert_eq!(count(Handed::Lost), 992);
        // Tasks alive: this test's own plus at most the overflow room.
        let alive = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        assert!(alive <= 4, "{alive} tasks wait for room");
        // The parked events arrive once room is made.
        let mut received = 0;
        while received < 8 {
            tokio::time::timeout(std::time::Duration::from_secs(10), queue.recv())
                .await
                .expect("parked events arrive")
                .expect("queue open");
            received += 1;
        }
    }
}
