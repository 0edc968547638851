//! Integration tests against real parts: the real `tollgate` binary, the
//! project's mock provider, and (in `claude_code`) real Claude Code.
//! One test binary with modules, so DataFusion is linked once.

mod support;

mod abuse;
mod budgets;
mod claude_code;
mod compose;
mod dashboards;
mod kafka;
mod lake_s3;
mod passthrough;
mod properties;
mod pricing;
mod providers;
mod query;
mod spine;
