"""DuckDB side of benches/lake_query.rs: the same queries on the same files.

Usage: lake_query_duckdb.py <events dir> <events_hourly dir> <lookup-ids.json>
Prints progress, then one JSON line of {query name: milliseconds}.
"""
import json
import os
import sys
import time

import duckdb

events_dir, hourly_dir, ids_path = sys.argv[1], sys.argv[2], sys.argv[3]
ids = json.load(open(ids_path))
con = duckdb.connect()
con.execute(
    f"CREATE VIEW events AS SELECT * FROM read_parquet('{events_dir}/*/*.parquet', hive_partitioning = true)"
)
con.execute(
    f"CREATE VIEW events_hourly AS SELECT * FROM read_parquet('{hourly_dir}/*/*.parquet', hive_partitioning = true)"
)
# The daily rollups beside the hourly ones (what tollgate reads for whole
# days), when the lake has them.
daily_dir = os.path.join(os.path.dirname(os.path.normpath(hourly_dir)), "events_daily")
has_daily = os.path.isdir(daily_dir)
if has_daily:
    con.execute(
        f"CREATE VIEW events_daily AS SELECT * FROM read_parquet('{daily_dir}/*/*.parquet', hive_partitioning = true)"
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
# The same aggregates as tollgate's /v1/spend: spend lines of API-billed
# events, subscription value apart, tokens per class. On raw events each
# row is one request; on rollups each row's sums are summed again.
RAW_AGGREGATES = """count(*) AS requests,
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
      sum(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END)"""
ROLLUP_AGGREGATES = """sum(requests) AS requests, sum(errors),
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
      sum(unpriced_requests)"""
MONTH_RAW = "started_at >= TIMESTAMPTZ '2026-10-01 00:00:00+00' AND started_at < TIMESTAMPTZ '2026-10-31 00:00:00+00'"
MONTH_HOURLY = "hour >= TIMESTAMPTZ '2026-10-01 00:00:00+00' AND hour < TIMESTAMPTZ '2026-10-31 00:00:00+00'"


def median_of_5(sql, rows_expected):
    times = []
    for _ in range(5):
        ms, rows = timed(sql)
        assert len(rows) == rows_expected, (sql, len(rows))
        times.append(ms)
    return pct(times, 0.5)


results = {}
tables = [("events", RAW_AGGREGATES, MONTH_RAW), ("events_hourly", ROLLUP_AGGREGATES, MONTH_HOURLY)]
# TOLLGATE_BENCH_DUCKDB_RAW=0: spend from rollups only (on 100M events the
# raw scans take DuckDB most of an hour and the machine's whole disk).
if os.environ.get("TOLLGATE_BENCH_DUCKDB_RAW") == "0":
    tables = tables[1:]
    results["events"] = {}
if has_daily:
    tables.append(("events_daily", ROLLUP_AGGREGATES, MONTH_HOURLY))
for table, aggs, month in tables:
    results[table] = {
        "team spend by day, 30 days, median of 5": median_of_5(
            f"SELECT team, day, {aggs} FROM {table} WHERE {month} GROUP BY team, day ORDER BY day, team", 600
        ),
        "spend by user x model, one team, 30 days, median of 5": median_of_5(
            f"""SELECT user, coalesce(model_served, model_requested) AS model, {aggs} FROM {table}
                WHERE team = 'team-07' AND {month} GROUP BY 1, 2 ORDER BY spend_usd DESC""",
            40,
        ),
        "team spend, all time, median of 5": median_of_5(
            f"SELECT team, {aggs} FROM {table} GROUP BY team ORDER BY spend_usd DESC, requests DESC", 20
        ),
    }
out = {
    "trace lookup p50": pct(trace, 0.5),
    "trace lookup p99": pct(trace, 0.99),
    "session logs p50": pct(session, 0.5),
}
for name, ms in results["events"].items():
    out[name] = ms
    out[name.replace(", median of 5", ", raw events only (no rollups), median of 5")] = ms
for name, ms in results["events_hourly"].items():
    out[name.replace(", median of 5", ", on events_hourly, median of 5")] = ms
for name, ms in results.get("events_daily", {}).items():
    out[name.replace(", median of 5", ", on events_daily, median of 5")] = ms
print(json.dumps(out))
