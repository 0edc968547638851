//! The control plane: keys, budgets, rate limits, webhooks, routes, teams
//! and workspaces as events.
//!
//! Every change is a [`ControlEvent`] on the control topic
//! ([`CONTROL_TOPIC`]); [`ControlState`] is their fold. `tollgate.toml` is
//! the bootstrap: at start-up (and on `tollgate apply`) the difference
//! between the file and the state is written as events ([`diff::plan`]).
//! Every role reads the topic to its end before it serves, then follows it
//! ([`follow`]) and swaps what it uses when the state changes. The topic is
//! also the audit log: each event says who changed what, when, and the
//! value before and after — never a secret (keys are kept as their
//! `sha256:` hash; webhooks by a fingerprint, see [`event::WebhookEntry`],
//! their credentials on a topic of their own, see [`secrets`]).
//!
//! This module imports shared vocabulary (`config`, `budget`, `route`) and
//! the `bus` trait only; roles wire its state into the gateway, accountant
//! and API.

pub mod diff;
pub mod event;
pub mod follow;
pub mod secrets;
pub mod state;

pub use event::{ControlEvent, Kind, Origin};
pub use state::ControlState;

/// The control topic (compacted on Kafka by entity; on the embedded log
/// kept whole: changes arrive at human rate).
pub use crate::bus::CONTROL_TOPIC;

/// Why a control-plane operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
    #[error("control event could not be encoded: {0}")]
    Encode(serde_json::Error),
    #[error(
        "the change was written but not read back within {0}s: this process's control follower is behind"
    )]
    NotReadBack(u64),
}
