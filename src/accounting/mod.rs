//! Accounting: prices each event from versioned tables (`pricing/`).
//!
//! Facts first, derivations second: events carry raw usage, and the cost
//! here is derived from it, so it can always be recomputed.

pub mod accountant;
pub mod cost;
pub mod pricing;
