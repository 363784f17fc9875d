#!/usr/bin/env python3
"""Issue 18's load test, bounded in time and on loopback only: while `coldtrail serve` holds

- 200 TCP connections to the PostgreSQL port that never log in,
- 50 unauthenticated POSTs to `/ingest` announcing 60 MB bodies each (sent slowly, never finished),
- 20 runaway analyst queries (`SELECT count(*) FROM generate_series(1, 50000000000)`, psql),

and, before them, 4 analysts fetching 5,000,000-row results over HTTP at once (Arrow IPC; HTTP streams
results, so the server's RSS does not grow with them),

an admin's `SELECT 1` is asked every 0.5 s over both protocols (psql opens a new connection each time,
so the login is measured too, and HTTP with the admin's token). Prints the slowest answers and the
server's peak RSS as JSON, and exits 1 when an answer took 1 s or more, failed, or the RSS passed the
bound (`--rss-mb`, 1024 by default).

    python3 bench/security_load.py [--coldtrail PATH] [--seconds 15] [--rss-mb 1024]
"""

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_binary():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(__file__), "..", "target"))
    for profile in ("release", "debug"):
        path = os.path.join(target, profile, "coldtrail")
        if os.path.exists(path):
            return path
    sys.exit("no coldtrail binary: build it or pass --coldtrail")


def rss_kb(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--coldtrail", default=None)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rss-mb", type=float, default=1024.0)
    args = parser.parse_args()
    binary = args.coldtrail or default_binary()

    work = tempfile.mkdtemp(prefix="coldtrail-load-")
    pg, http, ingest = free_port(), free_port(), free_port()
    admin_password, admin_token = "admin-password-load", "admin-token-0123456789-load"
    analyst_password = "analyst-password-load"
    config = os.path.join(work, "coldtrail.toml")
    with open(config, "w") as f:
        f.write(
            f"""[query]
pg_listen = "127.0.0.1:{pg}"
http_listen = "127.0.0.1:{http}"
statement_timeout_secs = 60
max_result_rows = 10000000

[[query.users]]
name = "admin"
role = "admin"
password = "{admin_password}"
token = "{admin_token}"

[[query.users]]
name = "analyst"
role = "analyst"
password = "{analyst_password}"

[[sources]]
name = "http"
kind = "http"
listen = "127.0.0.1:{ingest}"
token = "ingest-token-0123456789-load"
"""
        )
    log = open(os.path.join(work, "serve.log"), "w")
    server = subprocess.Popen(
        [binary, "--data", os.path.join(work, "data"), "serve", "--config", config], stdout=log, stderr=log
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", pg), timeout=1).close()
                socket.create_connection(("127.0.0.1", http), timeout=1).close()
                socket.create_connection(("127.0.0.1", ingest), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    sys.exit(f"serve did not start; see {work}/serve.log")
                time.sleep(0.2)
        rss_before = rss_kb(server.pid)
        stop = threading.Event()
        peak = {"rss_kb": rss_before}

        def sample_rss():
            while not stop.is_set():
                peak["rss_kb"] = max(peak["rss_kb"], rss_kb(server.pid))
                time.sleep(0.1)

        threading.Thread(target=sample_rss, daemon=True).start()

        # 4 big results at once, read as fast as the client can.
        big = {"bytes": [], "errors": []}

        def big_result():
            request = urllib.request.Request(
                f"http://127.0.0.1:{http}/api/v1/sql?format=arrow",
                data=b"SELECT v, v * 2 AS w FROM generate_series(1, 5000000) t(v)", method="POST",
                headers={"Authorization": "Basic " + base64.b64encode(f"analyst:{analyst_password}".encode()).decode()})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    total = 0
                    while chunk := response.read(1 << 20):
                        total += len(chunk)
                    big["bytes"].append(total)
            except Exception as e:  # noqa: BLE001 - any failure is a finding of the load test
                big["errors"].append(str(e))

        rss_before_big = peak["rss_kb"]
        fetchers = [threading.Thread(target=big_result) for _ in range(4)]
        for t in fetchers:
            t.start()
        for t in fetchers:
            t.join()
        rss_after_big = peak["rss_kb"]

        # 200 connections that never log in.
        idle = []
        for _ in range(200):
            try:
                idle.append(socket.create_connection(("127.0.0.1", pg), timeout=2))
            except OSError:
                pass

        # 50 oversized unauthenticated POSTs, sent slowly.
        refused = {"answered": 0}

        def oversized():
            try:
                s = socket.create_connection(("127.0.0.1", ingest), timeout=5)
                s.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 62914560\r\n\r\n")
                s.settimeout(0.2)
                while not stop.is_set():
                    try:
                        s.sendall(b"x" * 65536)
                    except OSError:
                        break
                    try:
                        if s.recv(1024):
                            refused["answered"] += 1
                            break
                    except socket.timeout:
                        pass
                s.close()
            except OSError:
                pass

        for _ in range(50):
            threading.Thread(target=oversized, daemon=True).start()

        # 20 runaway analyst queries.
        env = dict(os.environ, PGPASSWORD=analyst_password, PGCONNECT_TIMEOUT="10")
        runaways = [
            subprocess.Popen(
                ["psql", f"host=127.0.0.1 port={pg} user=analyst dbname=coldtrail sslmode=disable", "-XAtc",
                 "SELECT count(*) FROM generate_series(1, 50000000000)"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(20)
        ]
        time.sleep(2)

        admin_env = dict(os.environ, PGPASSWORD=admin_password, PGCONNECT_TIMEOUT="10")
        pg_times, http_times, failures = [], [], []
        end = time.time() + args.seconds
        while time.time() < end:
            started = time.time()
            out = subprocess.run(
                ["psql", f"host=127.0.0.1 port={pg} user=admin dbname=coldtrail sslmode=disable", "-XAtc", "SELECT 1"],
                env=admin_env, capture_output=True, text=True, timeout=30)
            pg_times.append(time.time() - started)
            if out.stdout.strip() != "1":
                failures.append(f"pg: {out.stderr.strip()}")
            started = time.time()
            request = urllib.request.Request(
                f"http://127.0.0.1:{http}/api/v1/sql", data=b"SELECT 1 AS one", method="POST",
                headers={"Authorization": f"Bearer {admin_token}"})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    body = json.loads(response.read())
                    if body.get("rows") != [{"one": 1}]:
                        failures.append(f"http: {body}")
            except Exception as e:  # noqa: BLE001 - any failure is a finding of the load test
                failures.append(f"http: {e}")
            http_times.append(time.time() - started)
            time.sleep(0.5)
        still_running = sum(1 for r in runaways if r.poll() is None)
        stop.set()
        for r in runaways:
            r.kill()
        for s in idle:
            s.close()
        result = {
            "binary": binary,
            "seconds": args.seconds,
            "idle_connections_held": len(idle),
            "oversized_posts_answered": refused["answered"],
            "runaway_queries_running_at_end": still_running,
            "admin_select_1_pg_max_s": round(max(pg_times), 3),
            "admin_select_1_pg_median_s": round(sorted(pg_times)[len(pg_times) // 2], 3),
            "admin_select_1_http_max_s": round(max(http_times), 3),
            "admin_select_1_http_median_s": round(sorted(http_times)[len(http_times) // 2], 3),
            "samples": len(pg_times),
            "big_results_mb": [round(b / 1e6, 1) for b in big["bytes"]],
            "big_results_errors": big["errors"][:2],
            "rss_peak_during_big_results_mb": round(rss_after_big / 1024, 1),
            "rss_growth_by_big_results_mb": round((rss_after_big - rss_before_big) / 1024, 1),
            "rss_before_mb": round(rss_before / 1024, 1),
            "rss_peak_mb": round(peak["rss_kb"] / 1024, 1),
            "rss_bound_mb": args.rss_mb,
            "failures": failures[:5],
        }
        print(json.dumps(result, indent=1))
        ok = (not failures and not big["errors"] and len(big["bytes"]) == 4 and result["admin_select_1_pg_max_s"] < 1.0 and result["admin_select_1_http_max_s"] < 1.0
              and result["rss_peak_mb"] < args.rss_mb)
        sys.exit(0 if ok else 1)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
