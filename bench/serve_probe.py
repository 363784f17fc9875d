"""Wall time and CPU time of statements through `coldtrail serve`, one after another: how many cores one
statement keeps busy, which bounds what several analysts at once can get from the machine.

Starts `coldtrail serve` on DATA_DIR (HTTP with the admin token, as `bench/query_duckdb.py` does), waits
until its detectors have stopped reading, then runs each SQL file once to warm caches and RUNS times
(environment, default 7), once the server has read its id filters (its resident memory is printed then).
For each: the median wall time, the median CPU time of the server process
(`/proc/<pid>/stat`, user and system, read before and after each statement) and their ratio over all runs.
Run two binaries one after the other, and again, to compare them interleaved.

Usage: python3 bench/serve_probe.py COLDTRAIL_BINARY DATA_DIR SQL_FILE..."""
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

import pyarrow as pa

binary, directory, sql_files = sys.argv[1], sys.argv[2], sys.argv[3:]
runs = int(os.environ.get("RUNS", "7"))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


port = free_port()
log = open(os.path.join(directory, "probe-serve.log"), "w")
server = subprocess.Popen([binary, "--data", directory, "serve", "--http-listen", f"127.0.0.1:{port}",
                           "--pg-listen", f"127.0.0.1:{free_port()}"], stdout=log, stderr=subprocess.STDOUT)
try:
    while "http listening" not in open(log.name).read():
        if server.poll() is not None:
            sys.exit(f"coldtrail serve exited: {open(log.name).read()}")
        time.sleep(0.2)
    token = json.load(open(os.path.join(directory, "credentials.json")))["token"]

    def request(path, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST" if body else "GET",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=600) as response:
            return response.read()

    def cpu_seconds():
        fields = open(f"/proc/{server.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def detected():
        for line in request("/metrics").decode().splitlines():
            if line.startswith("detect_invocations_total "):
                return float(line.split()[1])
        return 0.0

    counts = [-1.0]
    while len(counts) < 6 or len(set(counts[-6:])) > 1:
        time.sleep(2)
        counts.append(detected())
    # And once it has read the segments' id filters into memory, in the background at start.
    while "id filters" not in open(log.name).read():
        time.sleep(0.5)
    status = dict(line.split(":", 1) for line in open(f"/proc/{server.pid}/status").read().splitlines() if ":" in line)
    print(f"ready: resident {status['VmRSS'].strip()}, peak {status['VmHWM'].strip()}; "
          + next(line for line in open(log.name).read().splitlines() if "id filters" in line).strip(), flush=True)
    for name in sql_files:
        sql = open(name).read().encode()
        pa.ipc.open_stream(request("/api/v1/sql?format=arrow", sql)).read_all()
        walls, cpus = [], []
        for _ in range(runs):
            cpu, start = cpu_seconds(), time.perf_counter()
            pa.ipc.open_stream(request("/api/v1/sql?format=arrow", sql)).read_all()
            walls.append(time.perf_counter() - start)
            cpus.append(cpu_seconds() - cpu)
        print(f"{name}: wall median {statistics.median(walls) * 1000:.1f} ms (min {min(walls) * 1000:.1f}), "
              f"CPU median {statistics.median(cpus) * 1000:.0f} ms, cores busy {sum(cpus) / sum(walls):.2f}",
              flush=True)
finally:
    server.terminate()
    server.wait()
