#!/bin/bash
# `bench/s3_ingest.sh BIN DIR`: uploads the files under DIR (for example the Firehose objects of
# `coldtrail generate --shape firehose --out X`, DIR=X/firehose) to a bucket of a moto server on
# 127.0.0.1:$PORT (started if none answers), then times `BIN ingest --no-detect s3://logs/firehose`
# into a fresh data directory and prints its summary, wall time and peak RSS (BENCHMARKS.md).
set -e
BIN=$1
DIR=$(realpath "$2")
WORK=${WORK:-$(mktemp -d)}
port=${PORT:-18733}
if ! python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null; then
  moto_server -H 127.0.0.1 -p $port > $WORK/moto.log 2>&1 &
  for _ in $(seq 50); do python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null && break; sleep 0.2; done
  python3 - <<PY
import boto3, os
s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:$port', aws_access_key_id='x', aws_secret_access_key='x', region_name='us-east-1')
s3.create_bucket(Bucket='logs')
for d, _, fs in os.walk('$DIR'):
    for f in fs:
        p = os.path.join(d, f)
        s3.upload_file(p, 'logs', 'firehose/' + os.path.relpath(p, '$DIR'))
PY
fi
export AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x AWS_REGION=us-east-1 AWS_ENDPOINT="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true
rm -rf $WORK/data
/usr/bin/time -f "%e s %U u %S s %M KB" $BIN --data $WORK/data ingest --no-detect s3://logs/firehose 2>&1 | tail -3
