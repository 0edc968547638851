//! Makes every operator of a user query give its thread back regularly.
//!
//! A task is only stopped (aborted, or timed out by `tokio::time::timeout`)
//! when it yields. DataFusion's own `EnsureCooperative` rule makes the
//! plan's leaves spend tokio's cooperative budget per batch, but an
//! operator that multiplies rows (a cross join of ten-row `VALUES` twelve
//! times, a join on a repeated key) produces unlimited output from leaves
//! that finished long ago: such a query never returns `Pending`, so its
//! time limit answered the client while the work went on, taking memory,
//! until the process died. Wrapping every operator that does not spend
//! budget itself in a `CooperativeExec` makes each batch it produces spend
//! budget, so the query yields every few dozen batches and a cancellation
//! lands within one batch's work.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::execution::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::SchedulingType;

/// The physical optimizer rule (runs after DataFusion's own rules).
#[derive(Debug)]
pub struct YieldBetweenBatches;

impl PhysicalOptimizerRule for YieldBetweenBatches {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if node.properties().scheduling_type == SchedulingType::Cooperative {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(Arc::new(CooperativeExec::new(node)) as _))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "yield_between_batches"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A session state like `SessionContext::new_with_config_rt` builds, with
/// [`YieldBetweenBatches`] added.
pub fn yielding_state(
    config: datafusion::prelude::SessionConfig,
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
) -> SessionState {
    SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(YieldBetweenBatches))
        .build()
}
