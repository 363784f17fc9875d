"""Lists or tampers with coldtrail's objects in an S3 bucket. Usage: s3_tamper.py list|flip ENDPOINT BUCKET PREFIX"""
import sys

import boto3

action, endpoint, bucket, prefix = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint)
keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])]
segments = sorted(k for k in keys if k.endswith(".parquet"))
ledger = [k for k in keys if k.endswith(".entry")]
if action == "list":
    print(f"{len(segments)} segments, {len(ledger)} ledger entries in s3://{bucket}/{prefix}")
    sys.exit(0 if segments and len(ledger) == len(segments) else 1)
if action == "flip":
    body = bytearray(s3.get_object(Bucket=bucket, Key=segments[0])["Body"].read())
    body[len(body) // 2] ^= 1
    s3.put_object(Bucket=bucket, Key=segments[0], Body=bytes(body))
    print("flipped one byte of", segments[0])
