"""How long the console's incident page takes to load on a large store, in Chromium.

A store of N generated invocations (200 functions from 2026-11-20, seed 7), with function 20 mining from
minute 600 and new callers from outside calling it meanwhile, made once; `coldtrail hunt --store` raises
the security alerts over it and stores the incident they make. `coldtrail serve` then serves the console,
and Debian's Chromium (headless, through Selenium and chromium-driver) logs in, opens the incident list and
the incident page RUNS times. The figure is the page's own: from the start of its navigation until the
whole page (story, alerts, chart, evidence timeline) is rendered (`document.body.dataset.loadedMs`).

Needs selenium (pip), chromium and chromium-driver (apt).

Usage: python3 bench/console_incident.py [INVOCATIONS] [COLDTRAIL_BINARY] [DATA_DIR]"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
from ports import free_port, wait_port  # noqa: E402

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

invocations = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
binary = sys.argv[2] if len(sys.argv) > 2 else os.path.expanduser("~/.cache/coldtrail-target/release/coldtrail")
data = sys.argv[3] if len(sys.argv) > 3 else f"/tmp/coldtrail-console-{invocations}"
RUNS = 5
PASSWORD = "bench-admin-password"

marker = os.path.join(data, "bench-generated")
if not os.path.exists(marker):
    shutil.rmtree(data, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([binary, "--data", data, "generate", "--functions", "200", "--invocations", str(invocations),
                    "--no-detect", "--start", "2026-11-20T00:00:00Z", "--seed", "7",
                    "--anomaly", "mining:20:600", "--anomaly", "callers:20:600"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([binary, "--data", data, "hunt", "--since", "3650d", "--store"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([binary, "--data", data, "maintain"], check=True, stdout=subprocess.DEVNULL)
    print(f"made {data} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    open(marker, "w").close()

rows = subprocess.run([binary, "--data", data, "sql", "SELECT count(*) FROM invocations", "--format", "csv"],
                      check=True, capture_output=True, text=True).stdout.splitlines()[1]
incidents = subprocess.run([binary, "--data", data, "sql", "SELECT count(DISTINCT incident_id) FROM incidents", "--format", "csv"],
                           check=True, capture_output=True, text=True).stdout.splitlines()[1]


config = os.path.join(data, "bench-users.toml")
with open(config, "w") as f:
    f.write(f'[[query.users]]\nname = "admin"\nrole = "admin"\npassword = "{PASSWORD}"\n')
http = free_port()
log = open(os.path.join(data, "bench-serve.log"), "w")
serve = subprocess.Popen([binary, "--data", data, "serve", "--config", config, "--pg-listen", f"127.0.0.1:{free_port()}",
                          "--http-listen", f"127.0.0.1:{http}"], stdout=log, stderr=subprocess.STDOUT)
try:
    base = f"http://127.0.0.1:{http}"
    wait_port(http, "(coldtrail serve)")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    wait = lambda condition, timeout=120: WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)
    try:
        driver.get(base + "/console/login.html")
        driver.find_element(By.ID, "user").send_keys("admin")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.ID, "submit").click()
        wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#incidents a"))
        url = driver.find_elements(By.CSS_SELECTOR, "#incidents a")[0].get_attribute("href")
        loads = []
        for run in range(RUNS + 1):
            driver.get(url)
            loaded = wait(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded-ms"))
            if run:  # the first warms caches
                loads.append(int(loaded))
        evidence = driver.find_element(By.ID, "timeline").get_attribute("data-rows")
    finally:
        driver.quit()
finally:
    serve.terminate()
    serve.wait()
result = {"invocations": int(rows), "incidents": int(incidents), "evidence_rows": int(evidence),
          "incident_page_ms_median": statistics.median(loads), "incident_page_ms_runs": loads}
print(json.dumps(result))
