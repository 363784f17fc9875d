"""The CloudWatch Logs API source against moto: `coldtrail serve` with a `cloudwatch` source reads the
Lambda log groups of a prefix (several streams each) through a fault proxy that answers every third
request with a ThrottlingException. Events are written while it runs, a new group appears while it runs,
serve is stopped with SIGTERM in the middle and events are written while it is down; after the restart
every event must be stored exactly once (by event id), every invocation assembled, the group outside the
prefix left alone, and the throttled requests counted in cloudwatch_requests_total.
Usage: cloudwatch_api.py COLDTRAIL WORKDIR"""
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import boto3
from ports import free_port, wait_port

coldtrail, work = sys.argv[1:3]
os.makedirs(work, exist_ok=True)


moto_port, proxy_port = free_port(), free_port()
moto = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(moto_port)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
wait_port(moto_port)

throttled = [0]
requests = [0]


class Proxy(http.server.BaseHTTPRequestHandler):
    """Forwards to moto; every third request is refused as CloudWatch refuses a caller over its rate."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        requests[0] += 1
        if requests[0] % 3 == 0:
            throttled[0] += 1
            answer = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        request = urllib.request.Request(f"http://127.0.0.1:{moto_port}{self.path}", data=body, headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status, payload, kind = answer.status, answer.read(), answer.headers.get("Content-Type")
        except urllib.error.HTTPError as error:
            status, payload, kind = error.code, error.read(), error.headers.get("Content-Type")
        self.send_response(status)
        self.send_header("Content-Type", kind or "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


proxy = http.server.ThreadingHTTPServer(("127.0.0.1", proxy_port), Proxy)
threading.Thread(target=proxy.serve_forever, daemon=True).start()

env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
       "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy_port}"}
logs = boto3.client("logs", endpoint_url=f"http://127.0.0.1:{moto_port}", region_name="us-east-1",
                    aws_access_key_id="testing", aws_secret_access_key="testing")
written = {}  # request id -> group
events_written = [0]


def write_invocations(group, stream, n, at_ms):
    """n invocations (START, an application line, END, REPORT) into a stream, a second apart."""
    events = []
    for i in range(n):
        request_id = str(uuid.uuid4())
        t = at_ms + i * 1000
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t / 1000)) + f".{t % 1000:03d}Z"
        events += [
            {"timestamp": t, "message": f"START RequestId: {request_id} Version: $LATEST"},
            {"timestamp": t + 5, "message": f"{iso}\t{request_id}\tINFO\thandled order {i}"},
            {"timestamp": t + 40, "message": f"END RequestId: {request_id}"},
            {"timestamp": t + 40, "message": f"REPORT RequestId: {request_id}\tDuration: 35.00 ms\tBilled Duration: 35 ms\tMemory Size: 128 MB\tMax Memory Used: 60 MB\t"},
        ]
        written[request_id] = group
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
    events_written[0] += len(events)


def make(group, streams):
    logs.create_log_group(logGroupName=group)
    for stream in streams:
        logs.create_log_stream(logGroupName=group, logStreamName=stream)


now_ms = int(time.time() * 1000)
make("/aws/lambda/orders", ["2026/11/30/[$LATEST]aaaa", "2026/11/30/[$LATEST]bbbb"])
make("/aws/lambda/users", ["2026/11/30/[$LATEST]cccc"])
make("/ecs/other", ["web"])
write_invocations("/aws/lambda/orders", "2026/11/30/[$LATEST]aaaa", 30, now_ms - 20 * 60_000)
write_invocations("/aws/lambda/orders", "2026/11/30/[$LATEST]bbbb", 20, now_ms - 15 * 60_000)
write_invocations("/aws/lambda/users", "2026/11/30/[$LATEST]cccc", 25, now_ms - 10 * 60_000)
logs.put_log_events(logGroupName="/ecs/other", logStreamName="web",
                    logEvents=[{"timestamp": now_ms - 60_000, "message": "not a lambda"}])

pg, http_port = free_port(), free_port()
config = os.path.join(work, "coldtrail.toml")
with open(config, "w") as f:
    f.write("""[store]
flush_after_secs = 1
refresh_secs = 1

[[sources]]
name = "cloudwatch"
kind = "cloudwatch"
prefixes = ["/aws/lambda/"]
since = "1h"
poll_secs = 1
""")
data = os.path.join(work, "data")
log = open(os.path.join(work, "serve.log"), "a")


def start():
    child = subprocess.Popen(
        [coldtrail, "--data", data, "serve", "--config", config, "--pg-listen", f"127.0.0.1:{pg}",
         "--http-listen", f"127.0.0.1:{http_port}"], stdout=log, stderr=log, env=env)
    wait_port(pg)
    return child


def psql(sql):
    password = json.load(open(os.path.join(data, "credentials.json")))["password"]
    out = subprocess.run(["psql", f"postgresql://admin@127.0.0.1:{pg}/coldtrail", "-At", "-c", sql],
                         env={**os.environ, "PGPASSWORD": password}, capture_output=True, text=True, timeout=60)
    return out.stdout.strip() if out.returncode == 0 else f"error: {out.stderr.strip()}"


COUNT = "SELECT count(*) FROM logs WHERE ingest_source LIKE 'cloudwatch:%'"


def wait_for(sql, expected, seconds=90):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if psql(sql) == str(expected):
            return True
        time.sleep(1)
    return False


failures = []


def check(name, ok):
    print(("ok   " if ok else "FAIL ") + name)
    if not ok:
        failures.append(name)


server = start()
check("the groups of the prefix are read", wait_for(COUNT, events_written[0]))
# While it runs: more events, and a new group.
write_invocations("/aws/lambda/orders", "2026/11/30/[$LATEST]aaaa", 10, now_ms - 2 * 60_000)
make("/aws/lambda/payments", ["2026/11/30/[$LATEST]dddd"])
write_invocations("/aws/lambda/payments", "2026/11/30/[$LATEST]dddd", 15, now_ms - 60_000)
check("events written while it runs and a new group are read", wait_for(COUNT, events_written[0]))
metrics = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10).read().decode()
throttled_seen = [l for l in metrics.splitlines() if l.startswith('cloudwatch_requests_total{outcome="throttled"}')]
check(f"throttled requests are retried and counted ({throttled_seen}, proxy refused {throttled[0]})",
      throttled[0] > 0 and bool(throttled_seen) and float(throttled_seen[0].split()[-1]) > 0)
server.send_signal(signal.SIGTERM)
check("SIGTERM stops it cleanly", server.wait(60) == 0)
# While it is down: events that became readable late, older than the newest stored of their group but
# within the overlap, and new ones.
write_invocations("/aws/lambda/users", "2026/11/30/[$LATEST]cccc", 5, now_ms - 12 * 60_000)
write_invocations("/aws/lambda/orders", "2026/11/30/[$LATEST]bbbb", 5, now_ms - 30_000)
server = start()
check("after a restart every event is stored exactly once",
      wait_for(COUNT, events_written[0])
      and wait_for("SELECT count(DISTINCT ingest_position) FROM logs WHERE ingest_source LIKE 'cloudwatch:%'",
                   events_written[0], 5))
time.sleep(3)
check("and nothing more comes on later passes", psql(COUNT) == str(events_written[0]))
ids = ", ".join(f"'{r}'" for r in written)
check("every invocation is assembled once, with its function",
      wait_for(f"SELECT count(DISTINCT request_id) FROM invocations WHERE request_id IN ({ids}) "
               "AND duration_ms = 35 AND function_name IN ('orders', 'users', 'payments')", len(written), 30)
      and psql(f"SELECT count(*) FROM invocations WHERE request_id IN ({ids})") == str(len(written)))
check("the group outside the prefix is not read", psql("SELECT count(*) FROM logs WHERE message = 'not a lambda'") == "0")
server.send_signal(signal.SIGTERM)
server.wait(60)
proxy.shutdown()
moto.terminate()
if failures:
    print(open(os.path.join(work, "serve.log")).read()[-4000:])
sys.exit(1 if failures else 0)
