//! tollgate: a gateway and event-sourced cost-accounting pipeline for
//! Claude Code and other Anthropic Messages API clients.
//!
//! The modules read as the data path: `gateway` → `bus` → `accounting` →
//! `lake` → `api`.
//! One `event::LlmEvent` flows one way through them; a module never imports
//! one downstream of it. `roles` wires them into processes.

pub mod backoff;
pub mod budget;
pub mod config;
pub mod control;
pub mod event;
pub mod field_caps;
pub mod handoff;
pub mod http_headers;
pub mod http_server;
pub mod metrics;
pub mod pricing;
pub mod private_fs;

pub mod accounting;
#[cfg(feature = "lake")]
pub mod api;
pub mod bus;
pub mod gateway;
pub mod lake;
pub mod providers;

pub mod live;
pub mod roles;
