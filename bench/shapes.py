"""Ingest speed of every shape CloudWatch Logs events arrive in: one generated fleet rendered in each shape
(`coldtrail generate --out DIR --shape S`), each ingested with `coldtrail ingest --no-detect` into a fresh
data directory, timed end to end (start, parse, assemble, store durably, seal segments, exit). Prints a
Markdown table of log lines per second and checks every shape gave the same number of invocations.
Usage: python3 bench/shapes.py [MINUTES] [FUNCTIONS]  (COLDTRAIL=path of the binary; the release build
by default)"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

minutes = sys.argv[1] if len(sys.argv) > 1 else "240"
functions = sys.argv[2] if len(sys.argv) > 2 else "20"
target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/coldtrail-target"))
coldtrail = os.environ.get("COLDTRAIL", os.path.join(target, "release", "coldtrail"))
shapes = ["subscription", "firehose", "firehose-plain", "events-camel", "events-snake-rfc3339", "events-api",
          "events-insights", "filter-log-events", "get-log-events", "insights-json", "insights-csv", "messages"]
work = tempfile.mkdtemp(prefix="coldtrail-shapes-")
rows = []
try:
    for shape in shapes:
        out = os.path.join(work, shape)
        subprocess.run([coldtrail, "--data", os.path.join(work, "gen"), "generate", "--functions", functions,
                        "--minutes", minutes, "--start", "2026-11-29T00:00:00Z", "--seed", "3", "--out", out,
                        "--shape", shape, "--xray-sample", "0"], check=True, capture_output=True)
        inputs = [os.path.join(out, d) for d in sorted(os.listdir(out)) if d not in ("xray", "cloudtrail")]
        size = sum(os.path.getsize(os.path.join(d, f)) for i in inputs for d, _, fs in os.walk(i) for f in fs)
        extra = ["--log-group", "/aws/lambda/{-2}"] if shape == "messages" else []
        started = time.perf_counter()
        done = subprocess.run([coldtrail, "--data", os.path.join(work, f"data-{shape}"), "ingest", "--no-detect",
                               *extra, *inputs], check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        summary = done.stdout
        lines = int(re.search(r"(\d+) log lines", summary).group(1))
        invocations = int(re.search(r"(\d+) invocations", summary).group(1))
        dead = int(re.search(r"(\d+) dead letters", summary).group(1))
        rows.append((shape, size, lines, invocations, dead, seconds))
        shutil.rmtree(out)
        shutil.rmtree(os.path.join(work, f"data-{shape}"))
finally:
    shutil.rmtree(work, ignore_errors=True)

print(f"{rows[0][3]} invocations, {rows[0][2]} log lines of {functions} functions over {minutes} minutes; "
      f"binary {coldtrail}\n")
print("| shape | input MB | log lines | invocations | dead letters | seconds | lines/s | vs subscription |")
print("|---|---|---|---|---|---|---|---|")
base = rows[0][2] / rows[0][5]
for shape, size, lines, invocations, dead, seconds in rows:
    rate = lines / seconds
    print(f"| {shape} | {size / 1e6:.1f} | {lines} | {invocations} | {dead} | {seconds:.2f} | {rate:,.0f} | "
          f"{rate / base:.2f} |")
same = all(r[3] == rows[0][3] and r[2] == rows[0][2] and r[4] == 0 for r in rows)
print("\nevery shape gave the same invocations and log lines" if same else "\nSHAPES DIFFER")
sys.exit(0 if same else 1)
