"""Writes Lambda log events to moto's CloudWatch Logs and exports them to S3 with create_export_task, as
AWS does (gzip objects under <prefix>/<task id>/<log stream>/). Prints the number of events written.
Usage: cloudwatch_export.py ENDPOINT BUCKET PREFIX"""
import sys
import time

import boto3

endpoint, bucket, prefix = sys.argv[1:4]
logs = boto3.client("logs", endpoint_url=endpoint)
s3 = boto3.client("s3", endpoint_url=endpoint)
s3.create_bucket(Bucket=bucket)
group, stream = "/aws/lambda/orders-api", "2024/08/01/[$LATEST]5e1b7c0a9d8f4e6b"
logs.create_log_group(logGroupName=group)
logs.create_log_stream(logGroupName=group, logStreamName=stream)
now = int(time.time() * 1000) - 60_000
events = []
for i in range(20):
    request = f"0b6f3c2e-1a11-4c3d-9e8f-{i:012d}"
    t = now + i * 100
    events += [
        {"timestamp": t, "message": f"START RequestId: {request} Version: $LATEST"},
        {"timestamp": t + 1, "message": f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(t / 1000))}.001Z\t{request}\tINFO\tprocessing order {i}"},
        {"timestamp": t + 2, "message": f"END RequestId: {request}"},
        {"timestamp": t + 3, "message": f"REPORT RequestId: {request}\tDuration: 12.5 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\tMax Memory Used: 60 MB"},
    ]
logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
task = logs.create_export_task(logGroupName=group, fromTime=now - 1000, to=now + 100_000, destination=bucket, destinationPrefix=prefix)
keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
assert any(k.endswith(".gz") for k in keys), keys
print(len(events))
