"""Ingest speed and memory, coldtrail against DuckDB, on the same files, in one run, for every input shape
issue 19 names: subscription payloads of Lambda text-format lines gzip'd per function and hour (as an S3
export of a subscription writes them), the same payloads as Firehose writes them (gzip members back to
back, no separator), NDJSON of CloudWatch events, the Lambda JSON log format, and CloudTrail files.

coldtrail: `coldtrail ingest --no-detect FILES` (and once more with the detectors on), end to end: the
process starts, parses, assembles invocations, stores durably (WAL, fsync), seals zstd Parquet segments,
signs the ledger and exits. Peak RSS is the process's own (the summary's VmHWM). DuckDB: `COPY (SELECT * FROM
read_json(FILES)) TO '...' (FORMAT parquet, COMPRESSION zstd)` (CloudTrail: the `Records` unnested), with
1 thread and with all threads. Best of RUNS runs each.

Usage: python3 bench/ingest_duckdb.py [--minutes M] [--functions F] [--runs R] [--shapes a,b] [--binary PATH]
"""
import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import tempfile
import time

import duckdb

parser = argparse.ArgumentParser()
parser.add_argument("--minutes", type=int, default=240)
parser.add_argument("--functions", type=int, default=20)
parser.add_argument("--runs", type=int, default=2)
parser.add_argument("--shapes", default="subscription,firehose,events,lambda-json,cloudtrail")
parser.add_argument("--cloudtrail-events", type=int, default=400_000)
parser.add_argument("--lambda-json-lines", type=int, default=1_000_000)
parser.add_argument("--binary", default=os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/coldtrail-target")), "release", "coldtrail"))
args = parser.parse_args()
work = tempfile.mkdtemp(prefix="coldtrail-ingest-bench-")
threads = os.cpu_count()


def files_under(path):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)


def generate(shape):
    out = os.path.join(work, shape)
    subprocess.run([args.binary, "--data", os.path.join(work, "gen-" + shape), "generate", "--functions",
                    str(args.functions), "--minutes", str(args.minutes), "--start", "2026-11-29T00:00:00Z",
                    "--seed", "3", "--out", out, "--shape", shape, "--xray-sample", "0", "--no-detect"],
                   check=True, capture_output=True)
    shutil.rmtree(os.path.join(work, "gen-" + shape), ignore_errors=True)
    logs = [d for d in os.listdir(out) if d not in ("xray", "cloudtrail")]
    return files_under(os.path.join(out, logs[0]))


def lambda_json():
    path = os.path.join(work, "lambda-json", "lambda.ndjson")
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as out:
        written, invocation = 0, 0
        while written < args.lambda_json_lines:
            rid = f"8f507cfc-1a2b-4697-b07a-{invocation:012x}"
            base = 1709632800 + invocation * 0.02

            def ts(dt):
                t = base + dt
                return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"
            rows = [{"time": ts(0), "type": "platform.start", "record": {"requestId": rid, "version": "$LATEST"}}]
            for k in range(4):
                rows.append({"timestamp": ts(0.001 * k), "level": "INFO", "requestId": rid,
                             "message": f"processed order {invocation}-{k} for customer c-{invocation % 9973} in 12 ms"})
            rows.append({"time": ts(0.05), "type": "platform.runtimeDone",
                         "record": {"requestId": rid, "status": "success", "metrics": {"durationMs": 52.4}}})
            rows.append({"time": ts(0.051), "type": "platform.report", "record": {
                "requestId": rid, "status": "success",
                "metrics": {"durationMs": 52.41, "billedDurationMs": 53, "memorySizeMB": 256, "maxMemoryUsedMB": 81}}})
            for row in rows[: args.lambda_json_lines - written]:
                out.write(json.dumps(row, separators=(",", ":")) + "\n")
                written += 1
            invocation += 1
    return [path]


def cloudtrail():
    """CloudTrail files as the trail writes them: gzip'd {"Records": [...]}, a few thousand events each, of
    the API calls a Lambda fleet's account sees."""
    out = os.path.join(work, "cloudtrail")
    os.makedirs(out)
    rng = random.Random(7)
    names = [("lambda.amazonaws.com", "Invoke"), ("lambda.amazonaws.com", "GetFunction20150331v2"),
             ("s3.amazonaws.com", "GetObject"), ("s3.amazonaws.com", "PutObject"), ("sts.amazonaws.com", "AssumeRole"),
             ("dynamodb.amazonaws.com", "GetItem"), ("kms.amazonaws.com", "Decrypt"), ("logs.amazonaws.com", "CreateLogStream")]
    paths, per_file, start = [], 2_000, 1795910400
    for index in range(0, args.cloudtrail_events, per_file):
        records = []
        for n in range(index, min(index + per_file, args.cloudtrail_events)):
            source, name = rng.choice(names)
            role = f"orders-{n % 20}-role"
            records.append({
                "eventVersion": "1.09", "eventTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + n // 20)),
                "eventSource": source, "eventName": name, "awsRegion": "us-east-1",
                "sourceIPAddress": f"10.0.{n % 250}.{n % 199}", "userAgent": "aws-sdk-js/3.600.0",
                "userIdentity": {"type": "AssumedRole", "principalId": f"AROAEXAMPLE{n % 20:04d}:orders-{n % 20}",
                                 "arn": f"arn:aws:sts::123456789012:assumed-role/{role}/orders-{n % 20}",
                                 "accountId": "123456789012", "accessKeyId": f"ASIAEXAMPLE{n % 500:08d}",
                                 "sessionContext": {"sessionIssuer": {"type": "Role", "arn": f"arn:aws:iam::123456789012:role/{role}"}}},
                "requestParameters": {"key": f"orders/{n}.json", "bucketName": "orders-archive"},
                "responseElements": None, "requestID": f"{n:08x}-0000-4000-8000-{n:012x}",
                "eventID": f"{n:08x}-1111-4000-8000-{n:012x}", "readOnly": name.startswith("Get"),
                "eventType": "AwsApiCall", "managementEvent": source != "s3.amazonaws.com",
                "recipientAccountId": "123456789012", "eventCategory": "Management"})
        path = os.path.join(out, f"123456789012_CloudTrail_us-east-1_{index // per_file:06d}.json.gz")
        with gzip.open(path, "wt", compresslevel=6) as f:
            json.dump({"Records": records}, f, separators=(",", ":"))
        paths.append(path)
    return paths


def run_coldtrail(files, detect):
    data = tempfile.mkdtemp(dir=work)
    command = [args.binary, "--data", data, "ingest", *([] if detect else ["--no-detect"]), *files]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    out = child.stdout.read()
    err = child.stderr.read()
    assert os.waitstatus_to_exitcode(status) == 0, err
    shutil.rmtree(data)
    # Not wait4's ru_maxrss: Linux carries the high-water mark across exec, so a child of this process
    # (grown by DuckDB) would report this process's peak. The summary reports its own (VmHWM).
    peak = float(out.split("peak memory ")[1].split(" MB")[0])
    return wall, usage.ru_utime + usage.ru_stime, peak, out


def run_duckdb(shape, files, n_threads):
    con = duckdb.connect()
    con.execute(f"SET threads = {n_threads}")
    target = os.path.join(work, f"duckdb-{shape}-{n_threads}.parquet")
    listed = "[" + ",".join(f"'{f}'" for f in files) + "]"
    if shape == "cloudtrail":
        select = f"SELECT unnest(Records, recursive := false) FROM read_json({listed}, maximum_object_size = 1073741824)"
    elif shape == "firehose":
        select = f"SELECT * FROM read_json({listed}, format = 'unstructured', compression = 'gzip')"
    else:
        select = f"SELECT * FROM read_json({listed}, format = 'newline_delimited')"
    start = time.perf_counter()
    con.execute(f"COPY ({select}) TO '{target}' (FORMAT parquet, COMPRESSION zstd)")
    wall = time.perf_counter() - start
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{target}')").fetchall()[0][0]
    os.remove(target)
    return wall, rows


makers = {"subscription": lambda: generate("subscription"), "firehose": lambda: generate("firehose"),
          "events": lambda: generate("events-camel"), "lambda-json": lambda_json, "cloudtrail": cloudtrail}
results = []
try:
    for shape in args.shapes.split(","):
        files = makers[shape]()
        size = sum(os.path.getsize(f) for f in files) / 1e6
        best = min((run_coldtrail(files, False) for _ in range(args.runs)), key=lambda r: r[0])
        detect = min((run_coldtrail(files, True) for _ in range(args.runs)), key=lambda r: r[0])
        duck_one = min(run_duckdb(shape, files, 1) for _ in range(args.runs))
        duck_all = min(run_duckdb(shape, files, threads) for _ in range(args.runs))
        summary = best[3].strip().splitlines()[0] if best[3].strip() else ""
        results.append((shape, len(files), size, best, detect, duck_one, duck_all, summary))
        print(f"{shape}: {summary}", flush=True)
finally:
    shutil.rmtree(work, ignore_errors=True)

print(f"\nbest of {args.runs} runs; {threads} threads on this machine; ratio = DuckDB's time / coldtrail's "
      f"(aim: >= 2 against 1 thread, >= 1 against {threads})\n")
print(f"| shape | files | MB | coldtrail --no-detect | cpu | peak RSS | with detectors | DuckDB 1 thread | DuckDB {threads} threads | ratio 1 | ratio {threads} |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for shape, n_files, size, best, detect, duck_one, duck_all, _ in results:
    print(f"| {shape} | {n_files} | {size:.0f} | {best[0]:.2f} s | {best[1]:.2f} s | {best[2]:.0f} MB | {detect[0]:.2f} s ({detect[2]:.0f} MB) "
          f"| {duck_one[0]:.2f} s | {duck_all[0]:.2f} s | {duck_one[0] / best[0]:.2f} | {duck_all[0] / best[0]:.2f} |")
