//! A whole topic read to its end, then followed: what the control state,
//! the webhook credentials and the gateway's view of budget state are
//! each folded from.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{BusError, BusRecord, Log, Subscription};
use crate::backoff::Backoff;

/// A reader of one topic from its first record (outside any consumer
/// group, see [`Log::read_all`]).
pub struct TopicReader {
    log: Arc<dyn Log>,
    topic: &'static str,
    /// Taken out while it is read (the lock is never held across an
    /// await), and for good by the follower's run loop.
    subscription: Mutex<Option<Box<dyn Subscription>>>,
}

impl TopicReader {
    /// Opens a reader of `topic`, named `reader` in the lag metric.
    pub async fn open(
        log: Arc<dyn Log>,
        topic: &'static str,
        reader: &str,
    ) -> Result<TopicReader, BusError> {
        let subscription = log.read_all(topic, reader).await?;
        Ok(TopicReader {
            log,
            topic,
            subscription: Mutex::new(Some(subscription)),
        })
    }

    /// The subscription, taken out of its slot (`None` if it was taken
    /// for good already).
    fn take(&self) -> Option<Box<dyn Subscription>> {
        self.subscription
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Hands records to `fold` until the record that is last now has been
    /// folded (or `stop`).
    pub async fn catch_up(
        &self,
        stop: &CancellationToken,
        mut fold: impl FnMut(Vec<BusRecord>),
    ) -> Result<(), BusError> {
        let Some(last) = self.last_offset(stop).await? else {
            return Ok(());
        };
        let Some(mut subscription) = self.take() else {
            return Ok(());
        };
        let result = loop {
            let records = match subscription.poll(10_000, Duration::from_millis(250)).await {
                Ok(records) => records,
                Err(e) => break Err(e),
            };
            let done = records.last().is_some_and(|r| r.offset >= last);
            fold(records);
            if done || stop.is_cancelled() {
                break Ok(());
            }
        };
        *self.subscription.lock().unwrap_or_else(|p| p.into_inner()) = Some(subscription);
        result
    }

    /// Hands every new record to `fold` until `stop`, after
    /// [`TopicReader::catch_up`]: the reader's run loop (it keeps the
    /// subscription, so it runs once).
    pub async fn follow(
        &self,
        stop: &CancellationToken,
        mut fold: impl FnMut(Vec<BusRecord>),
    ) -> Result<(), BusError> {
        let Some(mut subscription) = self.take() else {
            return Ok(());
        };
        while !stop.is_cancelled() {
            let records = tokio::select! {
                r = subscription.poll(1_000, Duration::from_millis(250)) => r?,
                _ = stop.cancelled() => break,
            };
            fold(records);
        }
        Ok(())
    }

    /// The offset of the topic's last record, retrying (logged) while the
    /// bus cannot tell, until `stop`.
    async fn last_offset(&self, stop: &CancellationToken) -> Result<Option<u64>, BusError> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            match self.log.last_offset(self.topic, 0).await {
                Ok(last) => return Ok(last),
                Err(e) if stop.is_cancelled() => return Err(e),
                Err(e) => {
                    tracing::error!(topic = self.topic, error = %e, "cannot read the topic's end yet; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_wait()) => {}
                        _ = stop.cancelled() => return Err(e),
                    }
                }
            }
        }
    }
}
