//! Accounting: prices each event and folds its cost into budget ledgers.
//!
//! Facts first, derivations second: events carry raw usage, and the cost
//! here is derived from it (with the shared `pricing` tables), so it can
//! always be recomputed.

pub mod accountant;
mod costed;
pub mod guards;
pub mod ledger;
pub mod notify;
pub mod replay;
