"""Issue 24 on a real Kafka-compatible broker (tansu): a rendered fleet with injected anomalies is published
once, keyed by log stream, then consumed by one `coldtrail serve` and, separately, by two in one consumer
group sharing a location (one of them stopped with SIGTERM half-way). Both runs must store the same alert
ids. Usage: detect_scale_out_tansu.py BROKERS COLDTRAIL WORKDIR"""

import datetime
import glob
import json
import os
import signal
import subprocess
import sys
import time

from confluent_kafka.admin import AdminClient, NewTopic

brokers, coldtrail, work = sys.argv[1:4]
os.makedirs(work, exist_ok=True)
PREFIX = "det-"
PARTITIONS = 3
MINUTES = 300

admin = AdminClient({"bootstrap.servers": brokers})
topics = [(f"{PREFIX}lambda-logs", 4), (f"{PREFIX}cloudtrail", 2), (f"{PREFIX}xray", 2), (f"{PREFIX}detect", PARTITIONS)]
for future in admin.create_topics([NewTopic(t, n, 1) for t, n in topics]).values():
    future.result(30)

# A fixed start: the fleet's traffic follows the time of day, so the same anomalies are found on every run.
start = datetime.datetime(2026, 11, 29, tzinfo=datetime.timezone.utc)
subprocess.run(
    [coldtrail, "--data", f"{work}/gen", "generate", "--functions", "8", "--minutes", str(MINUTES), "--start",
     start.isoformat().replace("+00:00", "Z"), "--seed", "5", "--anomaly", "spike:3:240", "--anomaly", "errors:6:245",
     "--kafka", brokers, "--topic-prefix", PREFIX],
    check=True, stdout=subprocess.DEVNULL)
target = int((start.timestamp() + (MINUTES - 2) * 60) * 1e6)


def config(name):
    path = f"{work}/{name}.toml"
    with open(path, "w") as f:
        f.write(f"""[store]
flush_after_secs = 1
refresh_secs = 0.5
[detect]
lateness = "1m"
partitions = {PARTITIONS}
topic = "{PREFIX}detect"
[[sources]]
name = "kafka"
kind = "kafka"
brokers = "{brokers}"
group = "{name}"
topics = ["{PREFIX}lambda-logs:subscription", "{PREFIX}cloudtrail:cloudtrail", "{PREFIX}xray:xray"]
""")
    return path


def launch(name, i, location):
    log = open(f"{work}/{name}-{i}.log", "w")
    return subprocess.Popen(
        [coldtrail, "--data", f"{work}/{name}-{i}", "--location", location, "serve", "--pg-listen", "127.0.0.1:0",
         "--http-listen", "127.0.0.1:0", "--config", config(name)],
        stdout=subprocess.DEVNULL, stderr=log)


def scored(location):
    through = []
    for p in range(PARTITIONS):
        try:
            with open(f"{location}/_detect/partitions-{PARTITIONS}/{p}/progress.json") as f:
                through.append(json.load(f).get("scored_through_us") or 0)
        except (OSError, ValueError):
            through.append(0)
    return through


def wait_scored(location, what):
    deadline = time.time() + 420
    while min(scored(location)) < target:
        if time.time() > deadline:
            sys.exit(f"{what}: partitions scored through {scored(location)}, not {target}")
        time.sleep(1)


def alerts(location, name):
    out = subprocess.run(
        [coldtrail, "--data", f"{work}/{name}-reader", "--location", location, "sql",
         "SELECT DISTINCT alert_id, detector FROM alerts ORDER BY alert_id", "--format", "csv"],
        check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[1:]


def stop(process):
    process.send_signal(signal.SIGTERM)
    if process.wait(120) != 0:
        sys.exit("serve did not exit 0 at SIGTERM")


one = launch("one", 0, f"{work}/one-location")
wait_scored(f"{work}/one-location", "one process")
stop(one)
expected = alerts(f"{work}/one-location", "one")

two = [launch("two", i, f"{work}/two-location") for i in range(2)]
while max(scored(f"{work}/two-location")) == 0:
    time.sleep(0.5)
stop(two[0])
wait_scored(f"{work}/two-location", "two processes")
stop(two[1])
got = alerts(f"{work}/two-location", "two")

print(f"one process: {len(expected)} alert ids; two processes (one stopped half-way): {len(got)}")
if not any(",anomaly." in line for line in expected):
    sys.exit(f"no anomaly found: {expected}")
if got != expected:
    sys.exit(f"the alert ids differ:\none: {expected}\ntwo: {got}")


def incidents(location, name):
    """Each incident's alerts (its latest row, merged ones left out), as a set of sorted tuples."""
    out = subprocess.run(
        [coldtrail, "--data", f"{work}/{name}-incidents", "--location", location, "sql",
         "SELECT alert_ids FROM (SELECT DISTINCT ON (incident_id) * FROM incidents "
         "ORDER BY incident_id, ts DESC, alert_count DESC) latest WHERE status <> 'merged'", "--format", "json"],
        check=True, capture_output=True, text=True).stdout
    return {tuple(sorted(json.loads(row["alert_ids"]))) for row in json.loads(out)["rows"]}


one_incidents, two_incidents = incidents(f"{work}/one-location", "one"), incidents(f"{work}/two-location", "two")
print(f"incidents: one process {len(one_incidents)}, two processes {len(two_incidents)}")
if one_incidents != two_incidents:
    sys.exit(f"the incidents group the alerts otherwise:\none: {sorted(one_incidents)}\ntwo: {sorted(two_incidents)}")
