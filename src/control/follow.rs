//! Reading and following the control topic, and writing to it.
//!
//! [`Control::start`] reads the topic to its end (so a restarted process
//! has the state before it serves), applies the config file's difference,
//! and reads again to the new end. [`Control::run`] then follows the topic:
//! each batch is folded into a new [`ControlState`], swapped in atomically
//! (`arc-swap`: readers never wait), and handed to every registered
//! listener, which swap what they use in turn.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::event::ControlEvent;
use super::state::ControlState;
use super::{CONTROL_TOPIC, ControlError};
use crate::bus::reader::TopicReader;
use crate::bus::{BusRecord, Log};
use crate::config::Config;

/// Most events kept in memory for the audit log; older ones are still on
/// the topic, but `GET /v1/audit` no longer shows them.
const HISTORY_CAP: usize = 100_000;
/// How long a writer waits for its events to come back folded.
const WRITE_WAIT: Duration = Duration::from_secs(10);

/// Called with the new state after every change.
pub type Listener = Box<dyn Fn(&ControlState) + Send + Sync>;

/// Every event read so far, oldest first (bounded), for the audit log.
#[derive(Default)]
struct History {
    events: VecDeque<Arc<ControlEvent>>,
    ids: HashSet<uuid::Uuid>,
}

impl History {
    fn push(&mut self, e: Arc<ControlEvent>) {
        self.ids.insert(e.event_id);
        self.events.push_back(e);
        if self.events.len() > HISTORY_CAP
            && let Some(old) = self.events.pop_front()
        {
            self.ids.remove(&old.event_id);
        }
    }
}

/// The control plane as one process sees it.
pub struct Control {
    log: Arc<dyn Log>,
    state: ArcSwap<ControlState>,
    /// Held only to push or copy, never across an await.
    history: Mutex<History>,
    /// Events folded so far: writers wait on it.
    folded: watch::Sender<u64>,
    listeners: Mutex<Vec<Arc<Listener>>>,
    /// The control topic, read to its end and then followed by
    /// [`Control::run`].
    reader: TopicReader,
}

impl Control {
    /// Reads the topic to its end; with `file`, writes the file's
    /// difference (as `actor`) and reads that back too. Retries (logged)
    /// while the bus cannot be read, until `stop`.
    pub async fn start(
        log: Arc<dyn Log>,
        file: Option<(&Config, &str)>,
        stop: &CancellationToken,
    ) -> Result<Arc<Control>, ControlError> {
        let reader = TopicReader::open(log.clone(), CONTROL_TOPIC, "tollgate-control").await?;
        let control = Arc::new(Control {
            log,
            state: ArcSwap::from_pointee(ControlState::default()),
            history: Mutex::new(History::default()),
            folded: watch::Sender::new(0),
            listeners: Mutex::new(Vec::new()),
            reader,
        });
        control.catch_up(stop).await?;
        if let Some((cfg, actor)) = file {
            let events = super::diff::plan(cfg, &control.current(), actor);
            if !events.is_empty() {
                tracing::info!(
                    changes = events.len(),
                    "control: applying the config file's changes"
                );
                control.append(&events).await?;
                control.catch_up(stop).await?;
            }
        }
        Ok(control)
    }

    /// The log the control topic is on (webhook credentials are written
    /// beside it, see `secrets`).
    pub fn log(&self) -> &Arc<dyn Log> {
        &self.log
    }

    /// The state now.
    pub fn current(&self) -> Arc<ControlState> {
        self.state.load_full()
    }

    /// Registers a listener and calls it once with the current state.
    pub fn listen(&self, listener: Listener) {
        let listener = Arc::new(listener);
        listener(&self.current());
        self.lock_listeners().push(listener);
    }

    fn lock_listeners(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Listener>>> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The events read so far that `keep` selects, oldest first.
    pub fn history(&self, keep: impl Fn(&ControlEvent) -> bool) -> Vec<Arc<ControlEvent>> {
        let history = self.lock_history();
        history.events.iter().filter(|e| keep(e)).cloned().collect()
    }

    /// Reads until the record that is last now has been folded.
    async fn catch_up(&self, stop: &CancellationToken) -> Result<(), ControlError> {
        self.reader
            .catch_up(stop, |records| self.fold(records))
            .await?;
        Ok(())
    }

    /// Folds `records` into a new state, swaps it in, tells the listeners.
    fn fold(&self, records: Vec<BusRecord>) {
        if records.is_empty() {
            return;
        }
        let mut next = ControlState::clone(&self.current());
        for r in records {
            match serde_json::from_slice::<ControlEvent>(&r.payload) {
                Ok(event) => {
                    if let Err(e) = next.fold(&event) {
                        tracing::error!(offset = r.offset, error = %e, "control event skipped");
                    }
                    self.lock_history().push(Arc::new(event));
                }
                Err(e) => {
                    tracing::error!(offset = r.offset, error = %e, "control record unreadable; skipped")
                }
            }
        }
        let folded = next.folded;
        let next = Arc::new(next);
        self.state.store(next.clone());
        let listeners: Vec<Arc<Listener>> = self.lock_listeners().clone();
        for l in listeners {
            l(&next);
        }
        self.folded.send_replace(folded);
    }

    /// Follows the topic until `stop`, folding every new event.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) -> Result<(), ControlError> {
        self.reader
            .follow(&stop, |records| self.fold(records))
            .await?;
        Ok(())
    }

    /// Appends `events` in one batch (one entity each).
    async fn append(&self, events: &[ControlEvent]) -> Result<(), ControlError> {
        let mut records = Vec::with_capacity(events.len());
        for e in events {
            let payload = serde_json::to_vec(e).map_err(ControlError::Encode)?;
            records.push((Bytes::from(e.bus_key()), Bytes::from(payload)));
        }
        self.log.append(CONTROL_TOPIC, records).await?;
        Ok(())
    }

    /// Writes `events` in one batch and waits until this process has folded
    /// them (so the writer's next read sees its change).
    pub async fn write(&self, events: &[ControlEvent]) -> Result<(), ControlError> {
        if events.is_empty() {
            return Ok(());
        }
        self.append(events).await?;
        let mut folded = self.folded.subscribe();
        let all_seen = |c: &Control| {
            let h = c.lock_history();
            events.iter().all(|e| h.ids.contains(&e.event_id))
        };
        let wait = async {
            while !all_seen(self) {
                if folded.changed().await.is_err() {
                    break;
                }
            }
        };
        tokio::time::timeout(WRITE_WAIT, wait)
            .await
            .map_err(|_| ControlError::NotReadBack(WRITE_WAIT.as_secs()))
    }
}

/// Reads the whole control topic once and plans the file's difference:
/// what `tollgate apply` shows (and, without `dry_run`, writes).
pub async fn apply_file(
    log: Arc<dyn Log>,
    cfg: &Config,
    actor: &str,
    dry_run: bool,
) -> Result<Vec<ControlEvent>, ControlError> {
    let stop = CancellationToken::new();
    let control = Control::start(log, None, &stop).await?;
    let events = super::diff::plan(cfg, &control.current(), actor);
    if !dry_run {
        control.append(&events).await?;
    }
    Ok(events)
}
