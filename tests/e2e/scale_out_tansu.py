"""Scale-out against a real Kafka-compatible broker (tansu): two `coldtrail serve` processes with their
own data directories, one consumer group and one shared store location. Records flow while one process is
SIGKILLed (it comes back later from its WAL) and while the other is stopped with SIGTERM. Then psql
against the surviving process must see every record, and DuckDB over the shared Parquet segments must
count every record once (a SIGKILL may leave the killed process's last batch to be read again: reported,
and bounded).
Usage: scale_out_tansu.py BROKER COLDTRAIL WORKDIR"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import duckdb
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

broker, coldtrail, work = sys.argv[1:4]
topic, partitions, n = "scale-out-logs", 4, 15_000
shared = os.path.join(work, "shared")
os.makedirs(shared, exist_ok=True)

admin = AdminClient({"bootstrap.servers": broker})
for future in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
    future.result(30)

config = os.path.join(work, "coldtrail.toml")
with open(config, "w") as f:
    f.write(f"""[store]
flush_after_secs = 2
refresh_secs = 1

[[sources]]
name = "kafka"
kind = "kafka"
brokers = "{broker}"
group = "scale-out-e2e"
topics = ["{topic}:lambda"]
""")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def launch(name):
    pg, http = free_port(), free_port()
    log = open(os.path.join(work, f"{name}.log"), "a")
    child = subprocess.Popen(
        [coldtrail, "--data", os.path.join(work, name), "--location", shared, "serve", "--config", config,
         "--pg-listen", f"127.0.0.1:{pg}", "--http-listen", f"127.0.0.1:{http}"],
        stdout=log, stderr=log)
    return child, pg


def produce(lo, hi):
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    for i in range(lo, hi):
        line = f"2024-03-05T10:00:00.000Z\t8f507cfc-1a2b-4697-b07a-ac58fc914c95\tINFO\trecord-{i}"
        producer.produce(topic, line.encode(), partition=i % partitions)
        if i % 500 == 499:
            producer.flush(30)
            time.sleep(0.25)
    producer.flush(30)


def psql_count(name, pg):
    password = json.load(open(os.path.join(work, name, "credentials.json")))["password"]
    out = subprocess.run(
        ["psql", f"postgresql://admin@127.0.0.1:{pg}/coldtrail", "-At", "-c",
         "SELECT count(DISTINCT message) FROM logs WHERE message LIKE '%record-%'"],
        env={**os.environ, "PGPASSWORD": password}, capture_output=True, text=True, timeout=60)
    return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip().isdigit() else -1


a, pg_a = launch("a")
b, pg_b = launch("b")
time.sleep(4)
# A part with both in the group, then A is killed while records flow.
flowing = threading.Thread(target=produce, args=(0, n // 3))
flowing.start()
time.sleep(6)
a.send_signal(signal.SIGKILL)
a.wait()
flowing.join()
# tansu hands a dead member's partitions over after the rebalance timeout (30 s); A comes back meanwhile.
time.sleep(10)
a, pg_a = launch("a")
produce(n // 3, 2 * n // 3)
time.sleep(5)
# B leaves with SIGTERM while records flow: its sources store what they hold, then it exits 0.
flowing = threading.Thread(target=produce, args=(2 * n // 3, n))
flowing.start()
time.sleep(2)
b.send_signal(signal.SIGTERM)
b_status = b.wait(timeout=120)
flowing.join()

deadline = time.time() + 180
seen = -1
while time.time() < deadline:
    seen = psql_count("a", pg_a)
    if seen >= n:
        break
    time.sleep(2)
a.send_signal(signal.SIGTERM)
a_status = a.wait(timeout=120)

glob = os.path.join(shared, "logs", "**", "*.parquet")
total, distinct = duckdb.sql(
    f"SELECT count(*), count(DISTINCT message) FROM read_parquet('{glob}') WHERE message LIKE '%record-%'"
).fetchall()[0]
nodes = duckdb.sql(
    f"SELECT count(DISTINCT regexp_extract(filename, '/([^/]+)-[0-9]+[.]parquet$', 1)) FROM read_parquet('{glob}', filename=true)"
).fetchall()[0][0]
print(f"{n} produced; psql on the surviving process saw {seen}; {total} rows sealed, {distinct} distinct, "
      f"{total - distinct} read again after the SIGKILL; segments from {nodes} processes; "
      f"exit codes at SIGTERM: {b_status}, {a_status}")
ok = seen == n and distinct == n and total - distinct <= 2_000 and b_status == 0 and a_status == 0
sys.exit(0 if ok else 1)
