"""OTLP/HTTP with the real OpenTelemetry Python SDK: a `coldtrail serve` with an `otlp` source receives
the SDK's traces and logs through its OTLP/HTTP protobuf exporters, and the same spans as OTLP/JSON (built
by the SDK's own encoder, ids in hex as OTLP/JSON says, one trace id in upper case, gzip'd). psql then
finds every span and log record, ids in lowercase, log records joined to their request, and a timeline
lookup by the upper-case trace id. Wrong tokens, undecodable bodies and other content types get 401, 400
and 415.
Usage: otlp_sdk.py COLDTRAIL WORKDIR"""
import gzip
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from google.protobuf.json_format import MessageToDict
from opentelemetry import trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from ports import free_port, wait_port

coldtrail, work = sys.argv[1:3]
token = "otlp-e2e-token-0123456789"
os.makedirs(work, exist_ok=True)


otlp_port, pg, http = free_port(), free_port(), free_port()
config = os.path.join(work, "coldtrail.toml")
with open(config, "w") as f:
    f.write(f"""[store]
flush_after_secs = 1
refresh_secs = 1

[[sources]]
name = "otel"
kind = "otlp"
listen = "127.0.0.1:{otlp_port}"
token_env = "OTLP_E2E_TOKEN"
""")
log = open(os.path.join(work, "serve.log"), "w")
data = os.path.join(work, "data")
server = subprocess.Popen(
    [coldtrail, "--data", data, "serve", "--config", config, "--pg-listen", f"127.0.0.1:{pg}",
     "--http-listen", f"127.0.0.1:{http}"],
    stdout=log, stderr=log, env={**os.environ, "OTLP_E2E_TOKEN": token})
base = f"http://127.0.0.1:{otlp_port}"
wait_port(otlp_port, "(serve's OTLP source)")

failures = []


def check(name, ok):
    print(("ok   " if ok else "FAIL ") + name)
    if not ok:
        failures.append(name)


request_ids = [f"8f507cfc-1a2b-4697-b07a-ac58fc91{i:04d}" for i in range(5)]
resource = Resource.create({"service.name": "orders", "faas.name": "orders", "cloud.region": "eu-west-1",
                            "faas.instance": "2026/11/30/[$LATEST]0123456789abcdef"})
headers = {"Authorization": f"Bearer {token}"}

# Protobuf, through the SDK's exporters.
memory = InMemorySpanExporter()
provider = TracerProvider(resource=resource)
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces", headers=headers)))
provider.add_span_processor(SimpleSpanProcessor(memory))
tracer = provider.get_tracer("e2e")
logger_provider = LoggerProvider(resource=resource)
logger_provider.add_log_record_processor(
    SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{base}/v1/logs", headers=headers)))
set_logger_provider(logger_provider)
app_log = logging.getLogger("orders")
app_log.propagate = False
app_log.addHandler(LoggingHandler(logger_provider=logger_provider))
app_log.setLevel(logging.INFO)
trace_ids = []
for request_id in request_ids:
    with tracer.start_as_current_span("handler", kind=trace.SpanKind.SERVER,
                                      attributes={"faas.invocation_id": request_id}) as span:
        trace_ids.append(format(span.get_span_context().trace_id, "032x"))
        with tracer.start_as_current_span("dynamodb.GetItem", kind=trace.SpanKind.CLIENT):
            app_log.info("order looked up", extra={"faas.invocation_id": request_id})
provider.force_flush()
logger_provider.force_flush()
spans = memory.get_finished_spans()

# JSON: the same spans again under new trace ids (one written in upper case), encoded by the SDK's own
# encoder, with ids in hex as OTLP/JSON requires, gzip'd.
request = MessageToDict(encode_spans(spans))
json_trace = "ABCDEF0123456789ABCDEF0123456789"
for rs in request["resourceSpans"]:
    for ss in rs["scopeSpans"]:
        for span in ss["spans"]:
            span["traceId"] = json_trace
            for key in ("spanId", "parentSpanId"):
                if key in span:
                    import base64
                    span[key] = base64.b64decode(span[key]).hex().upper()


def post(path, body, content_type, token_used=token, encoding=None):
    req = urllib.request.Request(base + path, data=body, method="POST")
    req.add_header("Content-Type", content_type)
    req.add_header("Authorization", f"Bearer {token_used}")
    if encoding:
        req.add_header("Content-Encoding", encoding)
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


status, body = post("/v1/traces", gzip.compress(json.dumps(request).encode()), "application/json", encoding="gzip")
check(f"OTLP/JSON gzip'd is taken with an empty answer ({status} {body!r})", status == 200 and json.loads(body) == {})
status, _ = post("/v1/traces", b"{}", "application/json", token_used="wrong-token-0123456789")
check("a wrong token gets 401", status == 401)
status, _ = post("/v1/logs", b"\xff\x00\xff", "application/x-protobuf")
check("an undecodable protobuf body gets 400", status == 400)
status, _ = post("/v1/logs", b"hello", "text/plain")
check("another content type gets 415", status == 415)

password = json.load(open(os.path.join(data, "credentials.json")))["password"]


def psql(sql):
    out = subprocess.run(["psql", f"postgresql://admin@127.0.0.1:{pg}/coldtrail", "-At", "-c", sql],
                         env={**os.environ, "PGPASSWORD": password}, capture_output=True, text=True, timeout=60)
    return out.stdout.strip() if out.returncode == 0 else f"error: {out.stderr.strip()}"


n_spans = len(spans)
deadline = time.time() + 60
while time.time() < deadline and psql("SELECT count(*) FROM spans") != str(2 * n_spans):
    time.sleep(1)
check(f"every span of both encodings is stored ({psql('SELECT count(*) FROM spans')} of {2 * n_spans})",
      psql("SELECT count(*) FROM spans") == str(2 * n_spans))
xray = [f"1-{t[:8]}-{t[8:]}" for t in trace_ids]
found = psql(f"SELECT count(DISTINCT trace_id) FROM spans WHERE trace_id IN ({', '.join(repr(t) for t in xray)})")
check("the SDK's trace ids are stored in X-Ray's form", found == str(len(xray)))
check("ids sent in upper case are stored in lower case",
      psql("SELECT count(*) FROM spans WHERE trace_id <> lower(trace_id) OR span_id <> lower(span_id)") == "0"
      and psql(f"SELECT count(*) FROM spans WHERE trace_id = '1-{json_trace[:8].lower()}-{json_trace[8:].lower()}'")
      == str(n_spans))
check("a timeline lookup by the upper-case trace id finds its spans",
      int(psql(f"SELECT count(*) FROM timeline('{json_trace}')") or 0) >= n_spans)
while time.time() < deadline and psql("SELECT count(*) FROM logs WHERE function_name = 'orders'") != str(len(request_ids)):
    time.sleep(1)
joined = psql("SELECT count(DISTINCT request_id) FROM logs WHERE function_name = 'orders' "
              f"AND message = 'order looked up' AND request_id IN ({', '.join(repr(r) for r in request_ids)})")
check(f"each log record is a log line of its function and request ({joined} of {len(request_ids)})",
      joined == str(len(request_ids)))
check("log records keep their own time", psql(
    "SELECT count(*) FROM logs WHERE function_name = 'orders' AND ts > now() - INTERVAL '10 minutes' "
    "AND format NOT LIKE '%+%'") == str(len(request_ids)))

server.send_signal(signal.SIGTERM)
server.wait(60)
if failures:
    print(open(os.path.join(work, "serve.log")).read()[-3000:])
sys.exit(1 if failures else 0)
