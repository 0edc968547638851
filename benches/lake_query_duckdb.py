"""DuckDB side of benches/lake_query.rs: the same queries on the same files.

Usage: lake_query_duckdb.py <events dir> <lookup-ids.json>
Prints progress, then one JSON line of {query name: milliseconds}.
"""
import json
import sys
import time

import duckdb

events_dir, ids_path = sys.argv[1], sys.argv[2]
ids = json.load(open(ids_path))
con = duckdb.connect()
con.execute(
    f"CREATE VIEW events AS SELECT * FROM read_parquet('{events_dir}/*/*.parquet', hive_partitioning = true)"
)


def timed(sql, params=()):
    t = time.perf_counter()
    rows = con.execute(sql, params).fetchall()
    return (time.perf_counter() - t) * 1000.0, rows


def pct(samples, p):
    s = sorted(samples)
    return s[round((len(s) - 1) * p)]


timed("SELECT * FROM events WHERE trace_id = ? ORDER BY started_at", [ids["traces"][0]])
trace = []
for t in ids["traces"]:
    ms, rows = timed("SELECT * FROM events WHERE trace_id = ? ORDER BY started_at, event_id", [t])
    assert len(rows) == 5, (t, len(rows))
    trace.append(ms)
session = []
for s in ids["sessions"][:50]:
    ms, rows = timed(
        "SELECT * FROM events WHERE session_id = ? ORDER BY started_at DESC, event_id DESC LIMIT 101", [s]
    )
    assert len(rows) == 50, (s, len(rows))
    session.append(ms)
spend = []
for _ in range(5):
    ms, rows = timed(
        # The same aggregates as tollgate's /v1/spend: spend lines of
        # API-billed events, subscription value apart, tokens per class.
        """SELECT team, count(*) AS requests,
                  sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END),
                  sum(input_tokens), sum(output_tokens), sum(cache_creation_5m_tokens),
                  sum(cache_creation_1h_tokens), sum(cache_read_tokens), sum(web_search_requests),
                  sum(web_fetch_requests),
                  sum(input_tokens + output_tokens + cache_creation_5m_tokens + cache_creation_1h_tokens + cache_read_tokens),
                  sum(CASE WHEN billed_by = 'subscription' THEN NULL ELSE cost_usd END) AS spend_usd,
                  sum(CASE WHEN billed_by = 'subscription' THEN NULL ELSE cost_input_usd END),
                  sum(CASE WHEN billed_by = 'subscription' THEN NULL ELSE cost_output_usd END),
                  sum(CASE WHEN billed_by = 'subscription' THEN NULL ELSE cost_cache_write_5m_usd END),
                  sum(CASE WHEN billed_by = 'subscription' THEN NULL ELSE cost_cache_write_1h_usd END),
                  sum(CASE WHEN billed_by = 'subscription' THEN NULL ELSE cost_cache_read_usd END),
                  sum(CASE WHEN billed_by = 'subscription' THEN NULL ELSE cost_web_search_usd END),
                  sum(CASE WHEN billed_by = 'subscription' THEN cost_usd ELSE NULL END),
                  sum(CASE WHEN billed_by = 'subscription' THEN NULL ELSE cost_cache_savings_usd END),
                  sum(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END)
           FROM events GROUP BY team ORDER BY spend_usd DESC, requests DESC"""
    )
    assert len(rows) == 20
    spend.append(ms)
print(
    json.dumps(
        {
            "trace lookup p50": pct(trace, 0.5),
            "trace lookup p99": pct(trace, 0.99),
            "session logs p50": pct(session, 0.5),
            "team spend group-by (all 30 days), median of 5": pct(spend, 0.5),
        }
    )
)
