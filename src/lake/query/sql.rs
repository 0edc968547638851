//! Read-only SQL over `events` for power users.
//!
//! One statement, a query and nothing else, run in a session whose only
//! table is `events` as the caller's scope sees it, with a row cap and a
//! time limit. Every refusal says what was refused.

use std::time::Duration;

use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;
use serde::Serialize;

use super::{Lake, LakeError, Scope, collect, rows_as_json};

/// How much one SQL query may return and take.
#[derive(Debug, Clone, Copy)]
pub struct SqlLimits {
    pub max_rows: usize,
    pub timeout: Duration,
}

/// The rows of a SQL query.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SqlResult {
    pub columns: Vec<String>,
    pub rows: Vec<serde_json::Value>,
    /// The query produced more rows than `max_rows`; the rest were cut.
    pub truncated: bool,
}

/// Why a statement is not run, or `None` when it is one plain query.
fn refusal(sql: &str) -> Result<(), String> {
    let statements =
        DFParser::parse_sql(sql).map_err(|e| format!("the SQL does not parse: {e}"))?;
    match statements.len() {
        0 => return Err("no SQL statement was given".into()),
        1 => {}
        n => return Err(format!("one statement per request, got {n}")),
    }
    match &statements[0] {
        DfStatement::Statement(s) if matches!(**s, Statement::Query(_)) => Ok(()),
        DfStatement::Statement(s) => Err(format!(
            "only SELECT queries are allowed, got {}",
            kind(&s.to_string())
        )),
        DfStatement::CreateExternalTable(_) => {
            Err("only SELECT queries are allowed, got CREATE EXTERNAL TABLE".into())
        }
        DfStatement::CopyTo(_) => Err("only SELECT queries are allowed, got COPY".into()),
        DfStatement::Explain(_) => Err("only SELECT queries are allowed, got EXPLAIN".into()),
        DfStatement::Reset(_) => Err("only SELECT queries are allowed, got RESET".into()),
    }
}

/// The leading keywords of a statement, to name it in a refusal.
fn kind(statement: &str) -> String {
    statement
        .split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
}

impl Lake {
    /// Runs one read-only query within `limits` over the rows `scope` sees.
    pub async fn sql(
        &self,
        scope: &Scope,
        sql: &str,
        limits: SqlLimits,
    ) -> Result<SqlResult, LakeError> {
        refusal(sql).map_err(LakeError::Refused)?;
        let ctx = self.scoped_session(scope)?;
        let options = datafusion::prelude::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = ctx
            .sql_with_options(sql, options)
            .await
            .map_err(|e| LakeError::BadSql(e.to_string()))?;
        let columns = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let df = df.limit(0, Some(limits.max_rows + 1))?;
        let batches = match collect(df, Some(limits.timeout)).await {
            Err(LakeError::Query(e)) => return Err(LakeError::BadSql(e.to_string())),
            other => other?,
        };
        let mut rows = rows_as_json(&batches)?;
        let truncated = rows.len() > limits.max_rows;
        rows.truncate(limits.max_rows);
        Ok(SqlResult {
            columns,
            rows: rows.into_iter().map(serde_json::Value::Object).collect(),
            truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_single_select_is_accepted_and_refusals_name_what_was_refused() {
        assert!(refusal("SELECT team, count(*) FROM events GROUP BY team").is_ok());
        assert!(refusal("WITH t AS (SELECT 1) SELECT * FROM t").is_ok());
        for (sql, says) in [
            ("DELETE FROM events", "DELETE"),
            ("DROP TABLE events", "DROP TABLE"),
            ("INSERT INTO events VALUES (1)", "INSERT INTO"),
            ("SELECT 1; SELECT 2", "one statement"),
            ("COPY events TO '/tmp/x' STORED AS CSV", "COPY"),
            (
                "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/'",
                "EXTERNAL",
            ),
            ("SELEC 1", "does not parse"),
            ("", "no SQL statement"),
        ] {
            let err = refusal(sql).unwrap_err();
            assert!(err.contains(says), "{sql}: {err}");
        }
    }
}
