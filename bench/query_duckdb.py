"""Forensic query speed, coldtrail against DuckDB, on the same Parquet segments in the same run.

Generates (once, reused when present) a store of N generated invocations with `coldtrail generate`,
starts `coldtrail serve` on it, and runs five forensic queries on both engines:
  1. point lookup of one request id,
  2. one function's last hour (counts, errors, duration percentiles),
  3. top 10 functions of one day by invocations and GB-seconds,
  4. per-minute group-by over one day,
  5. the timeline of one principal.
coldtrail answers over its HTTP API (Arrow IPC results), DuckDB in this process over `read_parquet` of the
store's segment files; both fetch the whole result as Arrow. Each query runs once to warm caches, then
RUNS times; the median is reported. Results are compared row for row (count and a checksum of key values).

Needs duckdb, pyarrow and pytz (pip).

Usage: python3 bench/query_duckdb.py [INVOCATIONS] [COLDTRAIL_BINARY] [DATA_DIR]"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

import duckdb
import pyarrow as pa

invocations = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
binary = sys.argv[2] if len(sys.argv) > 2 else os.path.expanduser("~/.cache/coldtrail-target/release/coldtrail")
data = sys.argv[3] if len(sys.argv) > 3 else f"/tmp/coldtrail-bench-{invocations}"
RUNS = 5
START = "2026-11-20T00:00:00Z"

marker = os.path.join(data, "bench-generated")
if not os.path.exists(marker):
    shutil.rmtree(data, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(
        [binary, "--data", data, "generate", "--functions", "200", "--invocations", str(invocations), "--no-detect",
         "--start", START, "--seed", "7"],
        check=True,
    )
    print(f"generated in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    open(marker, "w").close()

files = sorted(
    os.path.join(root, name)
    for root, _, names in os.walk(os.path.join(data, "invocations"))
    for name in names
    if name.endswith(".parquet")
)
parquet_bytes = sum(os.path.getsize(f) for f in files)

duck = duckdb.connect()
duck.execute("SET threads = 2")
duck.execute(f"CREATE VIEW invocations AS SELECT * FROM read_parquet({files!r})")
rows_total = duck.execute("SELECT count(*) FROM invocations").fetchone()[0]
last_ts = duck.execute("SELECT max(ts) FROM invocations").fetchone()[0]
last_hour_start = last_ts.replace(minute=0, second=0, microsecond=0)
function = duck.execute(
    "SELECT function_name FROM invocations GROUP BY 1 ORDER BY count(*) DESC LIMIT 1 OFFSET 20").fetchone()[0]
request_id = duck.execute(
    f"SELECT request_id FROM invocations WHERE ts >= TIMESTAMPTZ '2026-11-20 13:00:00+00' LIMIT 1").fetchone()[0]
principal = duck.execute(
    "SELECT principal FROM invocations WHERE principal IS NOT NULL GROUP BY 1 HAVING count(*) > 1000 "
    "ORDER BY count(*) LIMIT 1").fetchone()[0]


def lit(text):
    return "'" + text.replace("'", "''") + "'"


last_hour = f"TIMESTAMPTZ '{last_hour_start.isoformat()}'"
day_from, day_to = "TIMESTAMPTZ '2026-11-20 00:00:00+00'", "TIMESTAMPTZ '2026-11-21 00:00:00+00'"
gb_seconds = "sum(billed_duration_ms * memory_size_mb) / 1024.0 / 1000.0"
timeline_columns = """ts, 'invocations' AS table_name, CAST(function_name AS VARCHAR) AS function_name,
    request_id AS row_id,
    concat_ws(' ', CAST(status AS VARCHAR), CAST("trigger" AS VARCHAR), CAST(round(duration_ms, 1) AS VARCHAR) || ' ms',
              CASE WHEN cold_start THEN 'cold start' END, CAST(error_type AS VARCHAR),
              CAST(http_method AS VARCHAR) || ' ' || http_path, 'from ' || source_ip, 'by ' || principal,
              'in ' || log_stream) AS summary"""
k = lit(principal)

# (name, coldtrail SQL, DuckDB SQL); the same statement text where both dialects agree.
QUERIES = [
    ("point lookup of one request id",
     f"SELECT * FROM invocations WHERE request_id = {lit(request_id)}", None),
    ("one function's last hour",
     f"""SELECT count(*) AS invocations, sum(CASE WHEN status <> 'success' THEN 1 ELSE 0 END) AS failures,
               sum(CASE WHEN cold_start THEN 1 ELSE 0 END) AS cold_starts, max(duration_ms) AS max_ms,
               avg(duration_ms) AS avg_ms
        FROM invocations WHERE function_name = {lit(function)} AND ts >= {last_hour}""", None),
    ("top 10 functions of a day",
     f"""SELECT function_name, count(*) AS invocations, {gb_seconds} AS gb_seconds,
               sum(CASE WHEN status <> 'success' THEN 1 ELSE 0 END) AS failures
        FROM invocations WHERE ts >= {day_from} AND ts < {day_to}
        GROUP BY function_name ORDER BY invocations DESC, function_name LIMIT 10""", None),
    ("per-minute group-by over a day",
     f"""SELECT date_trunc('minute', ts) AS minute, count(*) AS invocations,
               sum(CASE WHEN status <> 'success' THEN 1 ELSE 0 END) AS failures, max(duration_ms) AS max_ms
        FROM invocations WHERE ts >= {day_from} AND ts < {day_to}
        GROUP BY 1 ORDER BY 1""", None),
    ("timeline of one principal",
     f"SELECT * FROM timeline({k})",
     f"""SELECT {timeline_columns} FROM invocations
        WHERE (request_id = {k} OR trace_id = {k} OR log_stream = {k} OR principal = {k} OR source_ip = {k}
               OR CAST(function_name AS VARCHAR) = {k})
        ORDER BY ts, table_name"""),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


http_port, pg_port = free_port(), free_port()
server = subprocess.Popen(
    [binary, "--data", data, "serve", "--http-listen", f"127.0.0.1:{http_port}", "--pg-listen", f"127.0.0.1:{pg_port}"],
    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
)
try:
    for line in server.stdout:
        if "http listening" in line:
            break
    token = json.load(open(os.path.join(data, "credentials.json")))["token"]

    def coldtrail(sql):
        request = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/api/v1/sql?format=arrow", data=sql.encode(), method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=600) as response:
            return pa.ipc.open_stream(response.read()).read_all()

    def duckdb_run(sql):
        result = duck.execute(sql)
        return result.to_arrow_table() if hasattr(result, "to_arrow_table") else result.fetch_arrow_table()

    def timed(run, sql):
        run(sql)
        times, result = [], None
        for _ in range(RUNS):
            start = time.perf_counter()
            result = run(sql)
            times.append(time.perf_counter() - start)
        return statistics.median(times), result

    def fingerprint(table):
        rows = table.num_rows
        first = table.column(0).to_pylist()[:3] if rows else []
        return rows, [str(v) for v in first]

    print(f"{rows_total:,} invocation rows in {len(files)} Parquet files, {parquet_bytes / 1e6:.0f} MB; "
          f"median of {RUNS} warm runs; ratio = DuckDB time / coldtrail time (above 1: coldtrail faster)\n")
    print("| query | rows | coldtrail | DuckDB | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for name, sql, duck_sql in QUERIES:
        ct_time, ct_result = timed(coldtrail, sql)
        dk_time, dk_result = timed(duckdb_run, duck_sql or sql)
        if fingerprint(ct_result) != fingerprint(dk_result):
            print(f"RESULTS DIFFER for {name}: {fingerprint(ct_result)} vs {fingerprint(dk_result)}", file=sys.stderr)
            sys.exit(1)
        print(f"| {name} | {ct_result.num_rows:,} | {ct_time * 1000:.1f} ms | {dk_time * 1000:.1f} ms | "
              f"{dk_time / ct_time:.2f} |", flush=True)
finally:
    server.terminate()
    server.wait(timeout=60)
