//! Integration tests against real parts: the real `tollgate` binary, the
//! project's mock provider, and (in `claude_code`) real Claude Code.
//! One test binary with modules, so DataFusion is linked once.

mod support;

mod abuse;
mod abuse_sql;
mod budgets;
mod captures;
mod claude_code;
mod compose;
mod control;
mod control_live;
mod dashboards;
mod gateway_protocol;
mod kafka;
mod lake_azure;
mod lake_s3;
mod ops;
mod passthrough;
mod pricing;
mod properties;
mod providers;
mod query;
mod rollups;
mod sessions;
mod spine;
