"""The ledger head anchored write-once in S3 with Object Lock (moto): `coldtrail ledger --publish` puts
the exported head into a bucket with Object Lock in compliance mode; the object cannot be deleted; read
back, it anchors `coldtrail verify --expect-head` (intact), and after a rollback of the data directory
the same anchor is a finding.

    python3 tests/e2e/worm_anchor.py COLDTRAIL WORKDIR
"""
import json
import os
import subprocess
import sys

import boto3
import botocore.exceptions
from ports import free_port, wait_port

coldtrail, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
port = free_port()
moto = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    wait_port(port, "(moto)")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
               AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket="anchors", ObjectLockEnabledForBucket=True)

    data = os.path.join(work, "data")
    subprocess.run([coldtrail, "--data", data, "generate", "--functions", "2", "--minutes", "90", "--seed", "3"],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    published = subprocess.run([coldtrail, "--data", data, "ledger", "--publish", "s3://anchors/heads",
                                "--retain-days", "1"], env=env, capture_output=True, text=True)
    assert published.returncode == 0, published.stderr
    print(published.stdout.strip())

    objects = s3.list_objects_v2(Bucket="anchors", Prefix="heads/")["Contents"]
    assert len(objects) == 1, objects
    key = objects[0]["Key"]
    head = s3.head_object(Bucket="anchors", Key=key)
    assert head.get("ObjectLockMode") == "COMPLIANCE", head
    assert head.get("ObjectLockRetainUntilDate") is not None, head
    try:
        s3.delete_object(Bucket="anchors", Key=key, VersionId=head["VersionId"])
        sys.exit("the locked head was deleted")
    except botocore.exceptions.ClientError as e:
        print(f"delete refused: {e.response['Error']['Code']}")

    anchor = os.path.join(work, "anchor.json")
    s3.download_file("anchors", key, anchor)
    intact = subprocess.run([coldtrail, "--data", data, "verify", "--expect-head", anchor],
                            capture_output=True, text=True)
    assert intact.returncode == 0, intact.stdout + intact.stderr

    # A rollback of the data directory: the newest entry and its segment gone.
    ledger = os.path.join(data, "_ledger")
    node = open(os.path.join(data, "node.id")).read().strip()
    entries = sorted(os.listdir(os.path.join(ledger, node)))
    newest = os.path.join(ledger, node, entries[-1])
    entry = json.loads(open(newest).readline())
    os.remove(newest)
    if entry.get("segment"):
        os.remove(os.path.join(data, entry["segment"]["path"]))
    tampered = subprocess.run([coldtrail, "--data", data, "verify", "--expect-head", anchor],
                              capture_output=True, text=True)
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert "anchor_not_held" in tampered.stdout, tampered.stdout
    print("the rolled back chain does not hold the write-once anchor")
finally:
    moto.terminate()
