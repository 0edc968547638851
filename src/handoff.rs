//! The bounded queue between the gateway and the bus.
//!
//! The gateway may not wait on the pipeline and may not know which bus is
//! behind it, so it holds only this sending end: a non-blocking push of a
//! finished `LlmEvent`. Whatever drains the queue (the bus publisher) lives
//! downstream and owns the receiving end.

use tokio::sync::mpsc;

use crate::event::LlmEvent;
use crate::metrics::METRICS;

/// The gateway's side of the queue; cheap to clone, one per request path.
#[derive(Clone, Debug)]
pub struct EventHandoff {
    tx: mpsc::Sender<LlmEvent>,
}

/// The bus's side of the queue.
pub type EventQueue = mpsc::Receiver<LlmEvent>;

/// Creates the queue with room for `capacity` events.
pub fn channel(capacity: usize) -> (EventHandoff, EventQueue) {
    let (tx, rx) = mpsc::channel(capacity);
    (EventHandoff { tx }, rx)
}

impl EventHandoff {
    /// Hands an event over without waiting.
    ///
    /// When the queue is full the event is not dropped: a task waits for
    /// room on its behalf (counted in `tollgate_events_handoff_overflow_total`)
    /// so the request still never waits on the pipeline.
    pub fn send(&self, event: LlmEvent) {
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) => {
                METRICS.handoff_overflow.inc();
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    if tx.send(event).await.is_err() {
                        METRICS.events_lost.inc();
                        tracing::error!(
                            "event queue closed while an event waited for room: event lost"
                        );
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(event)) => {
                METRICS.events_lost.inc();
                tracing::error!(event_id = %event.event_id, trace_id = %event.trace_id,
                    "event queue closed (pipeline stopped): event lost");
            }
        }
    }
}
