"""Forensic query speed, coldtrail against DuckDB, on the same Parquet segments in the same run.

Two stores, each made once and reused when present:
- N generated invocations (`coldtrail generate --no-detect`), for the invocation queries:
  1. point lookup of one request id,
  2. one function's last hour (counts, errors, duration percentiles),
  3. top 10 functions of one day by invocations and GB-seconds,
  4. per-minute group-by over one day,
  5. the timeline of one principal;
- N/10 generated invocations rendered as log files (`generate --out`) and ingested, so that it also holds
  their log lines, X-Ray spans and the fleet's CloudTrail, for:
  6. a `LIKE '%...%'` search over a day of `logs.message`,
  7. a join of CloudTrail to invocations: each API call of a function's role session with the function's
     invocations in the five minutes before it (the generated CloudTrail's principals are deployers and
     the functions' role sessions, never the callers of invocations, so the session name is the key),
  8. `environment(log_stream)`: every invocation and log line of one execution environment.
Then four analysts run the timeline query in a loop at once: the p95 of their latencies against one
analyst's median.

coldtrail answers over its HTTP API (Arrow IPC results) from `coldtrail serve`, timed once the server's
detectors have caught up with the stored rows (the stores are made without them), as on a server in its
steady state. DuckDB answers in this process over `read_parquet` of the store's segment files, with 2
threads. Each query runs once to warm caches, then RUNS times; the median is reported. Results are
compared in full: every row and column, floats to 9 significant digits, timestamps as instants.

Needs duckdb, pyarrow and pytz (pip).

Usage: python3 bench/query_duckdb.py [INVOCATIONS] [COLDTRAIL_BINARY] [DATA_DIR]"""
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

import warnings

import duckdb
import pyarrow as pa

invocations = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
binary = sys.argv[2] if len(sys.argv) > 2 else os.path.expanduser("~/.cache/coldtrail-target/release/coldtrail")
data = sys.argv[3] if len(sys.argv) > 3 else f"/tmp/coldtrail-bench-{invocations}"
logs_data = data + "-logs"
# DuckDB warns that Arrow output of a DB-API result copies it: the copy is in its time, as coldtrail's
# decoding of the Arrow stream is in coldtrail's.
warnings.filterwarnings("ignore", message="Arrow output")
RUNS = 5
START = "2026-11-20T00:00:00Z"


def made_once(directory, steps):
    marker = os.path.join(directory, "bench-generated")
    if os.path.exists(marker):
        return
    shutil.rmtree(directory, ignore_errors=True)
    start = time.perf_counter()
    for step in steps:
        subprocess.run(step, check=True, stdout=subprocess.DEVNULL)
    print(f"made {directory} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    open(marker, "w").close()


made_once(data, [[binary, "--data", data, "generate", "--functions", "200", "--invocations", str(invocations),
                  "--no-detect", "--start", START, "--seed", "7"]])
files_dir = logs_data + "-files"
shutil.rmtree(files_dir, ignore_errors=True)
made_once(logs_data, [
    [binary, "generate", "--functions", "200", "--invocations", str(max(invocations // 10, 1000)), "--start", START,
     "--seed", "7", "--xray-sample", "0.01", "--out", files_dir],
    [binary, "--data", logs_data, "ingest", "--no-detect", "--progress", "never", files_dir],
    [binary, "--data", logs_data, "maintain"],
])
shutil.rmtree(files_dir, ignore_errors=True)


def segment_files(directory, table):
    return sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(os.path.join(directory, table))
        for name in names
        if name.endswith(".parquet")
    )


def duck_over(directory, tables):
    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute("SET TimeZone = 'UTC'")
    for table in tables:
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({segment_files(directory, table)!r}, hive_partitioning = false)")
    return con


def lit(text):
    return "'" + text.replace("'", "''") + "'"


duck = duck_over(data, ["invocations"])
files = segment_files(data, "invocations")
parquet_bytes = sum(os.path.getsize(f) for f in files)
rows_total = duck.execute("SELECT count(*) FROM invocations").fetchone()[0]
last_ts = duck.execute("SELECT max(ts) FROM invocations").fetchone()[0]
last_hour_start = last_ts.replace(minute=0, second=0, microsecond=0)
function = duck.execute(
    "SELECT function_name FROM invocations GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1 OFFSET 20").fetchone()[0]
request_id = duck.execute(
    "SELECT request_id FROM invocations WHERE ts >= TIMESTAMPTZ '2026-11-20 13:00:00+00' "
    "ORDER BY ts, request_id LIMIT 1").fetchone()[0]
principal = duck.execute(
    "SELECT principal FROM invocations WHERE principal IS NOT NULL GROUP BY 1 HAVING count(*) > 1000 "
    "ORDER BY count(*), 1 LIMIT 1").fetchone()[0]

last_hour = f"TIMESTAMPTZ '{last_hour_start.isoformat()}'"
day_from, day_to = "TIMESTAMPTZ '2026-11-20 00:00:00+00'", "TIMESTAMPTZ '2026-11-21 00:00:00+00'"
gb_seconds = "sum(billed_duration_ms * memory_size_mb) / 1024.0 / 1000.0"
# The timeline's and environment's rows of an invocation and a log line, as query::forensics writes them.
invocation_row = """ts, 'invocations' AS table_name, CAST(function_name AS VARCHAR) AS function_name,
    request_id AS row_id,
    concat_ws(' ', CAST(status AS VARCHAR), CAST("trigger" AS VARCHAR), CAST(round(duration_ms * 10) / 10 AS VARCHAR) || ' ms',
              CASE WHEN cold_start THEN 'cold start' END, CAST(error_type AS VARCHAR),
              CAST(http_method AS VARCHAR) || ' ' || http_path, 'from ' || source_ip, 'by ' || principal,
              'in ' || log_stream) AS summary"""
log_row = """ts, 'logs', CAST(function_name AS VARCHAR), request_id,
    concat_ws(' ', CAST(level AS VARCHAR), substr(message, 1, 400))"""
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
     f"""SELECT {invocation_row} FROM invocations
        WHERE (request_id = {k} OR trace_id = {k} OR log_stream = {k} OR principal = {k} OR source_ip = {k}
               OR CAST(function_name AS VARCHAR) = {k})
        ORDER BY ts, table_name"""),
]

logs_duck = duck_over(logs_data, ["invocations", "logs", "cloudtrail"])
logs_rows = logs_duck.execute("SELECT count(*) FROM logs").fetchone()[0]
stream = logs_duck.execute(
    "SELECT log_stream FROM invocations GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1").fetchone()[0]
s = lit(stream)
LOGS_QUERIES = [
    ("LIKE '%...%' over a day of log messages",
     f"""SELECT ts, request_id, message FROM logs
        WHERE ts >= {day_from} AND ts < {day_to} AND message LIKE '%ECONNREFUSED%'
        ORDER BY ts, request_id""", None),
    ("CloudTrail joined to invocations in a time range",
     f"""SELECT c.event_time, c.event_name, c.session_name, count(i.request_id) AS invocations
        FROM cloudtrail c JOIN invocations i
          ON CAST(i.function_name AS VARCHAR) = c.session_name
         AND i.ts >= c.event_time - INTERVAL '5 minutes' AND i.ts <= c.event_time
        WHERE c.event_time >= {day_from} AND c.event_time < {day_to}
          AND i.ts >= {day_from} - INTERVAL '5 minutes' AND i.ts < {day_to}
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""", None),
    ("environment(log_stream)",
     f"SELECT * FROM environment({s})",
     f"""SELECT {invocation_row} FROM invocations WHERE log_stream = {s}
        UNION ALL SELECT {log_row} FROM logs WHERE log_stream = {s}
        ORDER BY ts, table_name"""),
]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def normalized(table):
    """Every row of an Arrow table as comparable values: floats to 9 significant digits, timestamps as
    instants, dictionary values as their value."""
    def value(v):
        if isinstance(v, float):
            return None if math.isnan(v) else float(f"{v:.9g}")
        if hasattr(v, "timestamp"):
            return v.timestamp()
        return v
    columns = [c.to_pylist() for c in table.columns]
    return sorted((tuple(value(c[i]) for c in columns) for i in range(table.num_rows)), key=repr)


class Server:
    """`coldtrail serve` on a store, over HTTP with the admin token; ready once its detectors have read
    what they will read."""

    def __init__(self, directory):
        self.http_port = free_port()
        self.log = open(os.path.join(directory, "bench-serve.log"), "w")
        self.process = subprocess.Popen(
            [binary, "--data", directory, "serve", "--http-listen", f"127.0.0.1:{self.http_port}",
             "--pg-listen", f"127.0.0.1:{free_port()}"], stdout=self.log, stderr=subprocess.STDOUT)
        while "http listening" not in open(self.log.name).read():
            if self.process.poll() is not None:
                sys.exit(f"coldtrail serve exited: {open(self.log.name).read()}")
            time.sleep(0.2)
        self.token = json.load(open(os.path.join(directory, "credentials.json")))["token"]
        # Done when the detectors' count of read invocations has stopped moving for 10 s: it does not
        # reach every stored row (the newest minutes wait for the clock to pass their lateness), and a
        # server restored from a checkpoint with nothing left to read stays at 0.
        waited = time.perf_counter()
        counts = [-1.0]
        while len(counts) < 6 or len(set(counts[-6:])) > 1:
            time.sleep(2)
            counts.append(self.detected())
        # And once it has read the segments' id filters into memory ("lookups: the id filters of ..." in its
        # log, or a warning that it could not), in the background at start: at 100M invocations, a minute.
        while "id filters" not in open(self.log.name).read():
            time.sleep(0.5)
        print(f"{directory}: the server's detectors caught up with the stored rows in "
              f"{time.perf_counter() - waited:.0f} s", file=sys.stderr)

    def request(self, path, body=None):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", data=body, method="POST" if body else "GET",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.read()

    def detected(self):
        for line in self.request("/metrics").decode().splitlines():
            if line.startswith("detect_invocations_total "):
                return float(line.split()[1])
        return 0.0

    def sql(self, sql):
        return pa.ipc.open_stream(self.request("/api/v1/sql?format=arrow", sql.encode())).read_all()

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()


def duckdb_runner(con):
    def run(sql):
        result = con.execute(sql)
        return result.to_arrow_table() if hasattr(result, "to_arrow_table") else result.fetch_arrow_table()
    return run


def timed(run, sql):
    run(sql)
    times, result = [], None
    for _ in range(RUNS):
        start = time.perf_counter()
        result = run(sql)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def concurrent(server, name, sql, analysts=4, each=10):
    """`analysts` clients each running `sql` `each` times at once: the p95 of their latencies against
    one client's median."""
    import concurrent.futures
    alone, _ = timed(server.sql, sql)

    def loop(_):
        times = []
        for _ in range(each):
            start = time.perf_counter()
            server.sql(sql)
            times.append(time.perf_counter() - start)
        return times
    with concurrent.futures.ThreadPoolExecutor(analysts) as pool:
        times = sorted(t for ts in pool.map(loop, range(analysts)) for t in ts)
    p95 = times[int(0.95 * (len(times) - 1))]
    print(f"\n{analysts} analysts each running the {name} {each} times at once: p95 {p95 * 1000:.1f} ms, "
          f"{p95 / alone:.2f}x the median of one analyst alone ({alone * 1000:.1f} ms)\n", flush=True)


def compare(directory, con, queries, under_load=None):
    server = Server(directory)
    try:
        for name, sql, duck_sql in queries:
            ct_time, ct_result = timed(server.sql, sql)
            dk_time, dk_result = timed(duckdb_runner(con), duck_sql or sql)
            if normalized(ct_result) != normalized(dk_result):
                ct_rows, dk_rows = normalized(ct_result), normalized(dk_result)
                first = next((i for i, (a, b) in enumerate(zip(ct_rows, dk_rows)) if a != b), min(len(ct_rows), len(dk_rows)))
                print(f"RESULTS DIFFER for {name}: {len(ct_rows)} vs {len(dk_rows)} rows; first difference: "
                      f"{ct_rows[first:first + 1]} vs {dk_rows[first:first + 1]}", file=sys.stderr)
                sys.exit(1)
            print(f"| {name} | {ct_result.num_rows:,} | {ct_time * 1000:.1f} ms | {dk_time * 1000:.1f} ms | "
                  f"{dk_time / ct_time:.2f} |", flush=True)
        if under_load:
            concurrent(server, *under_load)
    finally:
        server.stop()


print(f"{rows_total:,} invocation rows in {len(files)} Parquet files, {parquet_bytes / 1e6:.0f} MB; "
      f"{logs_rows:,} log lines with their invocations and CloudTrail in the second store; "
      f"median of {RUNS} warm runs; ratio = DuckDB time / coldtrail time (above 1: coldtrail faster)\n")
print("| query | rows | coldtrail | DuckDB | ratio |")
print("| --- | --- | --- | --- | --- |")
compare(data, duck, QUERIES, under_load=("timeline of one principal", QUERIES[4][1]))
compare(logs_data, logs_duck, LOGS_QUERIES)
