"""No loss, no duplicates against a real Kafka-compatible broker (tansu): records arrive while
`coldtrail ingest kafka://…` is SIGKILLed twice; after a last run every record is stored exactly once
(counted with DuckDB over coldtrail's Parquet segments).
Usage: kafka_tansu.py BROKER COLDTRAIL DATA_DIR"""
import os
import signal
import subprocess
import sys
import threading
import time

import duckdb
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

broker, coldtrail, data = sys.argv[1:4]
topic, partitions, n = "lambda-logs", 3, 20_000

admin = AdminClient({"bootstrap.servers": broker})
for future in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
    future.result(30)


def produce():
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    for i in range(n):
        line = f"2024-03-05T10:00:00.000Z\t8f507cfc-1a2b-4697-b07a-ac58fc914c95\tINFO\trecord-{i}"
        producer.produce(topic, line.encode(), partition=i % partitions)
        if i % 1000 == 999:
            producer.flush(30)
            time.sleep(0.4)
    producer.flush(30)


producing = threading.Thread(target=produce)
producing.start()
command = [coldtrail, "--data", data, "ingest", f"kafka://{broker}/{topic}:lambda", "--group", "coldtrail-e2e", "--idle-exit"]
for kill in range(2):
    child = subprocess.Popen(command + ["60"], stdout=subprocess.DEVNULL)
    time.sleep(5 + 2 * kill)
    child.send_signal(signal.SIGKILL)
    child.wait()
producing.join()
# The killed members hold their partitions until the broker drops them (rebalance timeout: coldtrail
# sets max.poll.interval.ms to 30 s), so the last run waits longer than that for records.
subprocess.run(command + ["45"], check=True, stdout=subprocess.DEVNULL, timeout=300)

glob = os.path.join(data, "logs", "**", "*.parquet")
total, distinct = duckdb.sql(f"SELECT count(*), count(DISTINCT message) FROM read_parquet('{glob}')").fetchall()[0]
print(f"{n} records produced, {total} rows stored, {distinct} distinct")
sys.exit(0 if total == n and distinct == n else 1)
