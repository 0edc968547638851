//! What `POST /v1/sql` may ask DataFusion to do.
//!
//! The memory pool (`api.query_memory_mb`) only sees what operators
//! reserve: hash tables, sorts, join build sides, aggregate state. The
//! arrays a scalar function or a literal produces are never accounted, and
//! a function evaluated over one batch (or folded as a constant at
//! planning) runs to its end before the time limit can stop it:
//! `repeat('a', 300000000)` allocates gigabytes in one call that no limit
//! interrupts. So this allowlist, not the pool, is the defence against
//! unaccounted memory: only functions whose output is bounded by their
//! input (or fixed in size) can be called, only the tables `events`,
//! `events_hourly` and `audit` can be read (no table functions such as `range`), literals are short, and the
//! statement itself is short. Combined with the session's small batch size
//! that bounds what any one expression can allocate.
//!
//! Two passes: one over the parsed statement, before anything is planned
//! (planning a table function already calls it), and one over the logical
//! plan, where every function appears under its canonical name whatever
//! syntax (`EXTRACT`, `SUBSTRING … FROM`, `||`, `[…]`) produced it.

use std::ops::ControlFlow;

use arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator, WindowFunctionDefinition};
use datafusion::sql::sqlparser::ast::{
    Query, Statement, TableFactor, ValueWithSpan, Visit, Visitor,
};

/// Longest statement `POST /v1/sql` takes, in bytes.
pub const MAX_SQL_BYTES: usize = 64 * 1024;
/// Longest literal, in bytes as written: a literal is repeated on every
/// row of a batch, so its size times the batch size is allocated at once.
pub const MAX_LITERAL_BYTES: usize = 1024;

/// Scalar functions whose output is fixed in size or bounded by their
/// input. Not here on purpose: `repeat`, `lpad`/`rpad`, `replace`,
/// `regexp_replace`, `overlay` (output grows with an argument),
/// `concat`/`concat_ws`/`||` (a chain of CTEs doubles a string at every
/// step), `regexp_match` (nested groups copy the input once per group),
/// `arrow_cast`, `make_array`, `range`/`generate_series`, `string_to_array`
/// and every other array builder.
const SCALAR: &[&str] = &[
    // conditionals
    "coalesce",
    "nullif",
    "nvl",
    "nvl2",
    "greatest",
    "least",
    // numbers
    "abs",
    "round",
    "floor",
    "ceil",
    "trunc",
    "signum",
    "sqrt",
    "ln",
    "log",
    "log2",
    "log10",
    "exp",
    "power",
    "isnan",
    "iszero",
    // dates and times
    "date_trunc",
    "date_part",
    "date_bin",
    "to_timestamp",
    "to_timestamp_seconds",
    "to_timestamp_millis",
    "to_timestamp_micros",
    "to_timestamp_nanos",
    "to_date",
    "to_unixtime",
    "from_unixtime",
    "to_char",
    "make_date",
    "now",
    "current_date",
    "current_time",
    // strings, output no longer than the input
    "lower",
    "upper",
    "initcap",
    "btrim",
    "ltrim",
    "rtrim",
    "substr",
    "left",
    "right",
    "split_part",
    "substr_index",
    "character_length",
    "octet_length",
    "bit_length",
    "starts_with",
    "ends_with",
    "contains",
    "strpos",
    "regexp_like",
    "regexp_count",
    // reading the map and list columns (`metadata['k']`, `attempts[1]`)
    "get_field",
    "array_element",
    "array_length",
    "cardinality",
    "array_has",
    "array_has_any",
    "array_has_all",
    "map_extract",
    "map_keys",
    "map_values",
];

/// Aggregates; their state is reserved from the memory pool. Not here:
/// `array_agg` and `string_agg` (one value holding every row).
const AGGREGATE: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "approx_distinct",
    "approx_percentile_cont",
    "approx_percentile_cont_with_weight",
    "approx_median",
    "median",
    "stddev",
    "stddev_pop",
    "var",
    "var_pop",
    "corr",
    "covar_samp",
    "covar_pop",
    "bool_and",
    "bool_or",
    "first_value",
    "last_value",
];

/// Window functions (aggregates are also allowed as window functions).
const WINDOW: &[&str] = &[
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
];

/// Why a statement is not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the SQL is {0} bytes; /v1/sql takes at most {MAX_SQL_BYTES}")]
    TooLong(usize),
    #[error("a literal of {0} bytes is longer than the {MAX_LITERAL_BYTES} bytes /v1/sql allows")]
    LongLiteral(usize),
    #[error("function \"{0}\" is not allowed in /v1/sql; allowed: {list}", list = allowed_list())]
    Function(String),
    #[error(
        "table function \"{0}\" is not allowed in /v1/sql: only the tables `events`, `events_hourly` and `audit` can be read"
    )]
    TableFunction(String),
    #[error(
        "table \"{0}\" cannot be read in /v1/sql: only the tables `events`, `events_hourly` and `audit` (admin tokens) can"
    )]
    Table(String),
    #[error("CAST to {0} is not allowed in /v1/sql: only to scalar types")]
    Cast(String),
    #[error("{0} is not allowed in /v1/sql")]
    Construct(String),
    #[error("the query plan could not be checked: {0}")]
    Walk(String),
}

/// Every callable function, sorted, for the refusal message.
fn allowed_list() -> String {
    let mut names: Vec<&str> = SCALAR
        .iter()
        .chain(AGGREGATE)
        .chain(WINDOW)
        .copied()
        .collect();
    names.sort_unstable();
    names.dedup();
    names.join(", ")
}

/// The allowlisted names that `state` does not know as functions of
/// their kind: a misspelt entry would silently refuse a function meant
/// to be callable.
#[cfg(test)]
pub fn unknown_names(state: &datafusion::execution::SessionState) -> Vec<&'static str> {
    let scalar = SCALAR
        .iter()
        .filter(|n| !state.scalar_functions().contains_key(**n));
    let aggregate = AGGREGATE
        .iter()
        .filter(|n| !state.aggregate_functions().contains_key(**n));
    let window = WINDOW.iter().filter(|n| {
        !state.window_functions().contains_key(**n)
            && !state.aggregate_functions().contains_key(**n)
    });
    scalar.chain(aggregate).chain(window).copied().collect()
}

/// The first pass, before planning: statement and literal sizes, and the
/// relations in `FROM` (plain tables and subqueries only; no table
/// functions, `UNNEST`, `WITH RECURSIVE` or other table constructs).
pub fn vet_statement(sql: &str, statement: &Statement) -> Result<(), Refusal> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(Refusal::TooLong(sql.len()));
    }
    match statement.visit(&mut AstVetter) {
        ControlFlow::Break(refusal) => Err(refusal),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Visits the parsed statement for [`vet_statement`].
struct AstVetter;

impl Visitor for AstVetter {
    type Break = Refusal;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Refusal> {
        match &query.with {
            Some(with) if with.recursive => {
                ControlFlow::Break(Refusal::Construct("WITH RECURSIVE".into()))
            }
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<Refusal> {
        match relation_refusal(factor) {
            Some(refusal) => ControlFlow::Break(refusal),
            None => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_value(&mut self, value: &ValueWithSpan) -> ControlFlow<Refusal> {
        let len = value.to_string().len();
        if len > MAX_LITERAL_BYTES {
            return ControlFlow::Break(Refusal::LongLiteral(len));
        }
        ControlFlow::Continue(())
    }
}

/// Why a relation in `FROM` is refused, if it is.
fn relation_refusal(factor: &TableFactor) -> Option<Refusal> {
    match factor {
        TableFactor::Table { args: None, .. } => None,
        TableFactor::Table { name, .. } | TableFactor::Function { name, .. } => {
            Some(Refusal::TableFunction(name.to_string()))
        }
        TableFactor::TableFunction { expr, .. } => {
            let text = expr.to_string();
            let name = text.split('(').next().unwrap_or(&text).trim().to_owned();
            Some(Refusal::TableFunction(name))
        }
        TableFactor::Derived { .. } | TableFactor::NestedJoin { .. } => None,
        TableFactor::UNNEST { .. } => Some(Refusal::Construct("UNNEST".into())),
        other => {
            let text = other.to_string();
            let kind = text.split_whitespace().next().unwrap_or("this relation");
            Some(Refusal::Construct(format!(
                "{} in FROM",
                kind.to_uppercase()
            )))
        }
    }
}

/// The second pass, over the logical plan (with its subqueries), before
/// it is optimized or run: plan nodes, the table read, and every
/// expression.
pub fn vet_plan(plan: &LogicalPlan) -> Result<(), Refusal> {
    let mut found = None;
    plan.apply_with_subqueries(|node| {
        if let Err(refusal) = vet_node(node) {
            found = Some(refusal);
            return Ok(TreeNodeRecursion::Stop);
        }
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Err(refusal) = vet_expr(e) {
                    found = Some(refusal);
                }
                Ok(stop_if(found.is_some()))
            })
        })?;
        Ok(stop_if(found.is_some()))
    })
    .map_err(|e| Refusal::Walk(e.to_string()))?;
    found.map_or(Ok(()), Err)
}

/// Stops a walk once a refusal was found.
fn stop_if(refused: bool) -> TreeNodeRecursion {
    if refused {
        TreeNodeRecursion::Stop
    } else {
        TreeNodeRecursion::Continue
    }
}

/// Whether a plan node may appear in a user query.
fn vet_node(node: &LogicalPlan) -> Result<(), Refusal> {
    match node {
        LogicalPlan::TableScan(scan) if super::TABLES.contains(&scan.table_name.table()) => Ok(()),
        LogicalPlan::TableScan(scan) => Err(Refusal::Table(scan.table_name.to_string())),
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Window(_)
        | LogicalPlan::Aggregate(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Join(_)
        | LogicalPlan::Repartition(_)
        | LogicalPlan::Union(_)
        | LogicalPlan::EmptyRelation(_)
        | LogicalPlan::Subquery(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::Values(_)
        | LogicalPlan::Distinct(_) => Ok(()),
        LogicalPlan::Unnest(_) => Err(Refusal::Construct("UNNEST".into())),
        LogicalPlan::RecursiveQuery(_) => Err(Refusal::Construct("WITH RECURSIVE".into())),
        other => Err(Refusal::Construct(format!(
            "a {} plan",
            other
                .display()
                .to_string()
                .split(':')
                .next()
                .unwrap_or("statement")
        ))),
    }
}

/// Whether one expression node may appear in a user query.
fn vet_expr(e: &Expr) -> Result<(), Refusal> {
    match e {
        Expr::ScalarFunction(f) => allowed(SCALAR, f.name()),
        Expr::AggregateFunction(f) => allowed(AGGREGATE, f.func.name()),
        Expr::WindowFunction(w) => match &w.fun {
            WindowFunctionDefinition::AggregateUDF(f) => allowed(AGGREGATE, f.name()),
            WindowFunctionDefinition::WindowUDF(f) => allowed(WINDOW, f.name()),
        },
        Expr::HigherOrderFunction(f) => Err(Refusal::Function(f.name().to_owned())),
        Expr::Lambda(_) | Expr::LambdaVariable(_) => Err(Refusal::Construct("a lambda".into())),
        Expr::Cast(c) => scalar_cast(c.field.data_type()),
        Expr::TryCast(c) => scalar_cast(c.field.data_type()),
        Expr::BinaryExpr(b) => vet_operator(b),
        Expr::Unnest(_) => Err(Refusal::Construct("UNNEST".into())),
        _ => Ok(()),
    }
}

/// `name` is callable if it is on `list`.
fn allowed(list: &[&str], name: &str) -> Result<(), Refusal> {
    if list.contains(&name) {
        Ok(())
    } else {
        Err(Refusal::Function(name.to_owned()))
    }
}

/// Casts to nested types build lists, maps or structs; only scalars pass.
fn scalar_cast(to: &DataType) -> Result<(), Refusal> {
    if to.is_nested() || matches!(to, DataType::Dictionary(..) | DataType::RunEndEncoded(..)) {
        Err(Refusal::Cast(to.to_string()))
    } else {
        Ok(())
    }
}

/// Comparisons, arithmetic, boolean, bitwise and pattern operators pass;
/// `||` (a string that can double at every step) and the array and JSON
/// operators do not.
fn vet_operator(b: &BinaryExpr) -> Result<(), Refusal> {
    use Operator::*;
    match b.op {
        Eq | NotEq | Lt | LtEq | Gt | GtEq | Plus | Minus | Multiply | Divide | Modulo
        | IntegerDivide | And | Or | IsDistinctFrom | IsNotDistinctFrom | RegexMatch
        | RegexIMatch | RegexNotMatch | RegexNotIMatch | LikeMatch | ILikeMatch | NotLikeMatch
        | NotILikeMatch | BitwiseAnd | BitwiseOr | BitwiseXor | BitwiseShiftRight
        | BitwiseShiftLeft => Ok(()),
        op => Err(Refusal::Construct(format!("the operator {op}"))),
    }
}
