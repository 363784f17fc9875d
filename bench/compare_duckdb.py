"""Ingest speed, coldtrail against DuckDB, on the same NDJSON input: Lambda logs in the JSON log format
(platform events and application lines), loaded into Parquet.

coldtrail: `coldtrail ingest FILE` parses every line, assembles invocations, writes the WAL (fsync) and
seals zstd Parquet segments under the signed ledger. DuckDB: `COPY (SELECT * FROM read_json(FILE)) TO
'out.parquet'`, with one thread and with all threads. Both are timed end to end in this process.

Usage: python3 bench/compare_duckdb.py [LINES] [COLDTRAIL_BINARY]"""
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import duckdb

lines = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
binary = sys.argv[2] if len(sys.argv) > 2 else os.path.expanduser("~/.cache/coldtrail-target/release/coldtrail")
work = tempfile.mkdtemp()
path = os.path.join(work, "lambda.ndjson")

with open(path, "w") as out:
    written = 0
    invocation = 0
    while written < lines:
        rid = f"8f507cfc-1a2b-4697-b07a-{invocation:012x}"
        base = 1709632800 + invocation * 0.02
        ts = lambda dt: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + dt)) + f".{int(((base + dt) % 1) * 1000):03d}Z"
        rows = [{"time": ts(0), "type": "platform.start", "record": {"requestId": rid, "version": "$LATEST"}}]
        for k in range(4):
            rows.append({"timestamp": ts(0.001 * k), "level": "INFO", "message": f"processed order {invocation}-{k} for customer c-{invocation % 9973} in 12 ms", "requestId": rid})
        rows.append({"time": ts(0.05), "type": "platform.runtimeDone", "record": {"requestId": rid, "status": "success", "metrics": {"durationMs": 52.4}}})
        rows.append({"time": ts(0.051), "type": "platform.report", "record": {"requestId": rid, "status": "success", "metrics": {"durationMs": 52.41, "billedDurationMs": 53, "memorySizeMB": 256, "maxMemoryUsedMB": 81}}})
        for row in rows[: lines - written]:
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
            written += 1
        invocation += 1
size_mb = os.path.getsize(path) / 1e6


def run_coldtrail():
    data = tempfile.mkdtemp(dir=work)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([binary, "--data", data, "ingest", path], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def run_duckdb(threads):
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {threads}")
    target = os.path.join(work, f"duckdb-{threads}.parquet")
    start = time.perf_counter()
    con.execute(f"COPY (SELECT * FROM read_json('{path}', format = 'newline_delimited')) TO '{target}' (FORMAT parquet, COMPRESSION zstd)")
    wall = time.perf_counter() - start
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{target}')").fetchall()[0][0]
    assert rows == lines, rows
    return wall


runs = 3
coldtrail = min((run_coldtrail() for _ in range(runs)), key=lambda r: r[0])
duck_one = min(run_duckdb(1) for _ in range(runs))
duck_all = min(run_duckdb(0) for _ in range(runs))
print(f"input: {lines} NDJSON lines, {size_mb:.1f} MB; best of {runs} runs")
print(f"coldtrail ingest      : {coldtrail[0]:.2f} s wall, {coldtrail[1]:.2f} s cpu, {lines / coldtrail[0]:,.0f} lines/s, {lines / coldtrail[1]:,.0f} lines/s per cpu-second")
print(f"duckdb, 1 thread      : {duck_one:.2f} s wall, {lines / duck_one:,.0f} lines/s; coldtrail is {duck_one / coldtrail[0]:.2f}x as fast")
print(f"duckdb, {os.cpu_count()} threads     : {duck_all:.2f} s wall, {lines / duck_all:,.0f} lines/s; coldtrail is {duck_all / coldtrail[0]:.2f}x as fast")
