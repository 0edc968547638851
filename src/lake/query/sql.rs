//! Read-only SQL over `events` for power users.
//!
//! One statement, a query and nothing else, run in a session whose only
//! table is `events` as the caller's scope sees it, calling only the
//! functions of [`super::allowlist`], with a row cap, a time limit and
//! small batches. Every refusal says what was refused.

use std::time::Duration;

use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;
use serde::Serialize;

use super::allowlist::{vet_plan, vet_statement};
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

/// Why a statement is not run, or `Ok` when it is one plain query that
/// reads only `events` with short literals (the functions it calls are
/// checked on its plan).
fn refusal(sql: &str) -> Result<(), String> {
    let statements =
        DFParser::parse_sql(sql).map_err(|e| format!("the SQL does not parse: {e}"))?;
    match statements.len() {
        0 => return Err("no SQL statement was given".into()),
        1 => {}
        n => return Err(format!("one statement per request, got {n}")),
    }
    match &statements[0] {
        DfStatement::Statement(s) if matches!(**s, Statement::Query(_)) => {
            vet_statement(sql, s).map_err(|r| r.to_string())
        }
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
        vet_plan(df.logical_plan()).map_err(|r| LakeError::Refused(r.to_string()))?;
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
    use std::time::Instant;

    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::lake::files::LakeLayout;

    /// An empty lake and its directory.
    async fn empty_lake() -> (tempfile::TempDir, Lake) {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(&LakeLayout::new(dir.path())).await.unwrap();
        (dir, lake)
    }

    /// Generous limits: the statements here are refused or plan at once.
    fn limits() -> SqlLimits {
        SqlLimits {
            max_rows: 100,
            timeout: Duration::from_secs(30),
        }
    }

    #[tokio::test]
    async fn functions_that_can_allocate_without_bound_are_refused_by_name() {
        let (_dir, lake) = empty_lake().await;
        let long_literal = format!("SELECT '{}'", "a".repeat(2000));
        let long_sql = format!("SELECT 1{}", " + 1".repeat(20_000));
        for (sql, says) in [
            (
                "SELECT length(repeat(arrow_cast('aaaaaaaaaaaaaaaa','LargeUtf8'), 300000000))",
                "function \"repeat\" is not allowed in /v1/sql; allowed: ",
            ),
            ("SELECT arrow_cast(1, 'Int64')", "function \"arrow_cast\""),
            (
                "SELECT count(*) FROM range(0, 3000000000)",
                "table function \"range\"",
            ),
            (
                "SELECT * FROM generate_series(1, 10)",
                "table function \"generate_series\"",
            ),
            ("SELECT lpad('a', 100000000)", "function \"lpad\""),
            (
                "SELECT rpad(team, 100000000) FROM events",
                "function \"rpad\"",
            ),
            (
                "SELECT replace(team, 'a', 'aaaa') FROM events",
                "function \"replace\"",
            ),
            (
                "SELECT regexp_replace(team, 'a', 'bb') FROM events",
                "function \"regexp_replace\"",
            ),
            (
                "SELECT concat(team, team) FROM events",
                "function \"concat\"",
            ),
            ("SELECT team || team FROM events", "operator ||"),
            (
                "SELECT string_agg(team, ',') FROM events",
                "function \"string_agg\"",
            ),
            (
                "SELECT array_agg(team) FROM events",
                "function \"array_agg\"",
            ),
            (
                "SELECT array_agg(team) OVER () FROM events",
                "function \"array_agg\"",
            ),
            ("SELECT make_array(1, 2)", "function \"make_array\""),
            ("SELECT [1, 2, 3]", "function \"make_array\""),
            ("SELECT unnest(downgrades) FROM events", "UNNEST"),
            ("SELECT * FROM unnest(downgrades)", "UNNEST"),
            (
                "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT count(*) FROM t",
                "WITH RECURSIVE",
            ),
            (
                "SELECT team FROM events WHERE team IN (SELECT repeat(team, 3) FROM events)",
                "function \"repeat\"",
            ),
            (
                "SELECT (SELECT max(length(lpad('a', 9)))) FROM events",
                "function \"lpad\"",
            ),
            ("SELECT CAST(team AS VARCHAR[]) FROM events", "CAST to List"),
            (long_literal.as_str(), "literal of 2002 bytes"),
            (long_sql.as_str(), "/v1/sql takes at most 65536"),
        ] {
            match lake.sql(&Scope::All, sql, limits()).await {
                Err(LakeError::Refused(message)) => {
                    assert!(message.contains(says), "{sql}: {message}")
                }
                other => panic!("{sql}: not refused: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn ordinary_spend_queries_pass_the_allowlist() {
        let (_dir, lake) = empty_lake().await;
        for sql in [
            "SELECT model_served, avg(ttft_ms) FROM events GROUP BY 1",
            "SELECT team, count(*) AS n, sum(cost_usd) AS usd FROM events GROUP BY team ORDER BY team",
            "SELECT date_trunc('day', started_at) AS d, sum(cost_usd) FROM events \
             WHERE started_at > now() - INTERVAL '7 days' GROUP BY 1 ORDER BY 1",
            "SELECT EXTRACT(hour FROM started_at) AS h, count(DISTINCT session_id) FROM events GROUP BY 1",
            "SELECT user, approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) FROM events GROUP BY user",
            "SELECT median(latency_ms), stddev(latency_ms), var(latency_ms), approx_distinct(user) FROM events",
            "SELECT CASE WHEN status >= 500 THEN 'error' ELSE 'ok' END AS k, count(*) FROM events GROUP BY 1",
            "SELECT lower(model_served), upper(team), substring(event_id FROM 1 FOR 8), substr(event_id, 2), \
             coalesce(region, 'none'), nullif(team, '') FROM events \
             WHERE model_served LIKE 'claude%' AND team ILIKE 'E%' AND NOT stream",
            "SELECT metadata['project'] AS project, sum(cost_usd) FROM events GROUP BY 1",
            "SELECT CAST(cost_usd AS DOUBLE), TRY_CAST(status AS VARCHAR), \
             round(CAST(cost_usd AS DOUBLE), 2), abs(latency_ms - ttft_ms) FROM events",
            "SELECT team, row_number() OVER (PARTITION BY team ORDER BY started_at DESC) FROM events",
            "SELECT team, rank() OVER (ORDER BY cost_usd), sum(cost_usd) OVER (PARTITION BY team) FROM events",
            "WITH t AS (SELECT team, sum(cost_usd) AS usd FROM events GROUP BY team) SELECT * FROM t WHERE usd > 1",
            "SELECT a.team, count(*) FROM events a JOIN events b ON a.trace_id = b.trace_id GROUP BY 1",
            "SELECT to_char(started_at, '%Y-%m'), date_bin(INTERVAL '1 hour', started_at), \
             date_part('dow', started_at) FROM events",
            "SELECT count(*) FROM events WHERE team IN (SELECT team FROM events WHERE status = 429)",
            "SELECT cardinality(attempts), attempts[1]['provider'], array_has(downgrades, 'x') FROM events",
            "SELECT length(team), char_length(user), strpos(model_served, 'sonnet'), \
             split_part(model_served, '-', 2), starts_with(team, 'e'), trim(team), ltrim(team), \
             left(team, 2) FROM events",
            "SELECT bool_and(stream), bool_or(priced), min(started_at), max(ended_at), \
             first_value(model_served ORDER BY started_at) FROM events",
            "SELECT regexp_like(model_served, '^claude-(opus|sonnet)'), model_served ~ 'haiku' FROM events",
            "SELECT team FROM events WHERE cost_usd BETWEEN 0 AND 1 AND status IN (200, 201) \
             AND session_id IS NOT NULL ORDER BY started_at LIMIT 5",
            "SELECT * FROM events",
        ] {
            if let Err(e) = lake.sql(&Scope::All, sql, limits()).await {
                panic!("{sql}: {e}");
            }
        }
    }

    #[tokio::test]
    async fn every_allowlisted_name_is_a_function_datafusion_knows() {
        let state = SessionContext::new().state();
        let unknown = super::super::allowlist::unknown_names(&state);
        assert!(unknown.is_empty(), "not DataFusion functions: {unknown:?}");
    }

    /// A GROUP BY over a ten-way cross join of ten rows: 10^10 groups,
    /// holding pool memory for minutes.
    const ENDLESS_GROUP_BY: &str = "WITH v AS (SELECT * FROM (VALUES (1),(2),(3),(4),(5),(6),(7),(8),(9),(10)) t(x)) \
        SELECT a.x, b.x, c.x, d.x, e.x, f.x, g.x, h.x, i.x, j.x, count(*) \
        FROM v a, v b, v c, v d, v e, v f, v g, v h, v i, v j \
        GROUP BY a.x, b.x, c.x, d.x, e.x, f.x, g.x, h.x, i.x, j.x";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_whose_caller_goes_away_stops_and_frees_its_memory() {
        let (_dir, lake) = empty_lake().await;
        let pool = lake.runtime.memory_pool.clone();
        let mut query = Box::pin(lake.sql(&Scope::All, ENDLESS_GROUP_BY, limits()));
        // The caller stops waiting (a client that disconnected) while the
        // query holds memory; its own 30 s limit is still far away.
        let deadline = Instant::now() + Duration::from_secs(20);
        while pool.reserved() < 1024 * 1024 {
            assert!(Instant::now() < deadline, "the query never reserved memory");
            assert!(
                tokio::time::timeout(Duration::from_millis(50), &mut query)
                    .await
                    .is_err(),
                "the query ended on its own"
            );
        }
        drop(query);
        while pool.reserved() > 0 {
            assert!(
                Instant::now() < deadline,
                "the abandoned query still holds {} bytes",
                pool.reserved()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_past_its_time_limit_stops_and_frees_its_memory() {
        let (_dir, lake) = empty_lake().await;
        let pool = lake.runtime.memory_pool.clone();
        let short = SqlLimits {
            timeout: Duration::from_secs(1),
            ..limits()
        };
        match lake.sql(&Scope::All, ENDLESS_GROUP_BY, short).await {
            Err(LakeError::TimedOut(_)) => {}
            other => panic!("not timed out: {other:?}"),
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while pool.reserved() > 0 {
            assert!(
                Instant::now() < deadline,
                "the timed-out query still holds {} bytes",
                pool.reserved()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
