"""The web console in Debian's Chromium (headless, through Selenium and chromium-driver), against a running
`coldtrail demo`:

1. logs in as the admin;
2. opens the incident list while the demo runs and waits for the attacker's incident to arrive;
3. opens it, checks its story, chain, alerts and evidence, and pivots to the attacker's address;
4. runs a query in the SQL workbench and downloads its CSV;
5. adds and lifts a suppression and adds a user as the admin; logs in as an analyst and checks that the admin
   page and its data are refused; logs in as the added user;
6. checks that the stored cross-site scripting payloads (the campaign's probes in the log lines, and one
   an analyst puts in a triage note) are shown as text and that none runs.

Screenshots of each page go to OUT and are checked to be non-blank; timings go to OUT/timings.json.

usage: console.py BASE_URL ADMIN_PASSWORD ANALYST_PASSWORD OUT
"""

import json
import os
import sys
import time

from PIL import Image, ImageStat
from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

ATTACKER = "185.220.101.34"

base, admin_password, analyst_password, out = sys.argv[1:5]
os.makedirs(out, exist_ok=True)
timings = {}


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"]:
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": out, "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": out})
    return driver


def wait(driver, what, condition, timeout=30):
    try:
        # The pages replace what they show as data arrives: an element read mid-replacement is read again.
        ignored = (StaleElementReferenceException, NoSuchElementException)
        return WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=ignored).until(lambda d: condition(d))
    except TimeoutException:
        shot(driver, "failed-" + what.replace(" ", "-"))
        raise AssertionError(f"timed out waiting for {what} on {driver.current_url}: {driver.find_element(By.TAG_NAME, 'body').text[:2000]}")


def shot(driver, name):
    path = os.path.join(out, name + ".png")
    driver.save_screenshot(path)
    image = Image.open(path).convert("L")
    spread = ImageStat.Stat(image).stddev[0]
    colours = len(image.getcolors(maxcolors=1 << 16) or range(1 << 16))
    assert spread > 5 and colours > 8, f"{path} looks blank (stddev {spread:.1f}, {colours} grey levels)"
    return path


def no_script_ran(driver):
    """Nothing the payloads carry ran: no dialog, the title is the page's own, no image or script added."""
    try:
        alert = driver.switch_to.alert
        raise AssertionError(f"a dialog opened: {alert.text}")
    except NoAlertPresentException:
        pass
    title = driver.title
    assert "pwned" not in title, f"a payload ran: the title is {title!r}"
    images = driver.execute_script("return document.querySelectorAll('main img').length")
    scripts = driver.execute_script("return Array.from(document.scripts).map(s => s.src)")
    assert images == 0, f"{images} images were added to the page"
    assert all(s.startswith(base + "/console/") for s in scripts), f"scripts on the page: {scripts}"
    hrefs = driver.execute_script("return Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href'))")
    assert not [h for h in hrefs if h and h.strip().lower().startswith("javascript:")], "a javascript: link"


def click_link(driver, css, text):
    """Clicks the first link under `css` whose text holds `text`, again if the list was redrawn meanwhile
    (the incident list refreshes every few seconds)."""
    for _ in range(5):
        try:
            next(a for a in driver.find_elements(By.CSS_SELECTOR, css) if text in a.text).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.2)
    raise AssertionError(f"the link {text!r} under {css} kept being redrawn")


def login(driver, user, password):
    driver.get(base + "/")
    wait(driver, "the login form", lambda d: d.find_elements(By.ID, "user"))
    shot(driver, "login-" + user)
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "submit").click()
    wait(driver, "the console after login", lambda d: d.find_elements(By.ID, "logout"))


def headers(url):
    """The security headers of a page (with a fresh, cookie-less request)."""
    import urllib.request

    with urllib.request.urlopen(url) as response:
        return {k.lower(): v for k, v in response.headers.items()}


def main():
    page_headers = headers(base + "/console/login.html")
    csp = page_headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp, csp
    assert page_headers.get("x-content-type-options") == "nosniff", page_headers
    assert page_headers.get("x-frame-options") == "DENY", page_headers

    driver = browser()
    try:
        # 1. Log in; a wrong password first, which is refused.
        driver.get(base + "/console/login.html")
        driver.find_element(By.ID, "user").send_keys("admin")
        driver.find_element(By.ID, "password").send_keys("not-the-password")
        driver.find_element(By.ID, "submit").click()
        wait(driver, "the refusal", lambda d: d.find_element(By.ID, "failed").is_displayed())
        login(driver, "admin", admin_password)
        cookie = driver.get_cookie("coldtrail_session")
        assert cookie and cookie["httpOnly"] and cookie.get("sameSite") == "Strict", cookie

        # 2. The incident list during the demo: the attacker's incident arrives.
        started = time.time()
        wait(driver, "the attacker's incident", lambda d: ATTACKER in d.find_element(By.ID, "incidents").text, timeout=150)
        timings["attacker_incident_arrived_s"] = round(time.time() - started, 1)
        wait(driver, "the stories' incidents", lambda d: int(d.find_element(By.ID, "incidents").get_attribute("data-count") or 0) >= 2, timeout=90)
        shot(driver, "incidents")

        # 3. The incident, then a pivot to the attacker's address.
        started = time.time()
        click_link(driver, "#incidents a", ATTACKER)
        wait(driver, "the incident's evidence", lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline[data-rows]"), timeout=30)
        timings["incident_page_s"] = round(time.time() - started, 2)
        wait(driver, "the whole incident page", lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded-ms"))
        timings["incident_page_loaded_ms"] = int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-loaded-ms"))
        story = driver.find_element(By.ID, "story").text
        assert ATTACKER in story and "probed" in story, story
        assert driver.find_elements(By.CSS_SELECTOR, "#chain .tactic"), "no ATT&CK chain"
        assert driver.find_elements(By.CSS_SELECTOR, "#alerts tbody tr"), "no alerts"
        evidence = driver.find_elements(By.CSS_SELECTOR, "#alerts tbody a")
        assert evidence and all("/console/entity.html?kind=request" in a.get_attribute("href") for a in evidence), "evidence links"
        assert int(driver.find_element(By.ID, "timeline").get_attribute("data-rows")) > 0, "no evidence"
        assert driver.find_elements(By.CSS_SELECTOR, "#chart svg"), "no chart"
        no_script_ran(driver)
        shot(driver, "incident")
        incident_url = driver.current_url

        # 6. A note carrying payloads, stored through the triage form, shown back as text.
        payload = "<img src=x onerror=\"document.title='pwned-note'\"><script>document.title='pwned-note2'</script> javascript:alert(1)"
        Select(driver.find_element(By.ID, "triage-status")).select_by_value("acknowledged")
        driver.find_element(By.ID, "triage-note").send_keys(payload)
        driver.find_element(By.ID, "triage-save").click()
        wait(driver, "the note shown back", lambda d: "pwned-note" in d.find_element(By.TAG_NAME, "main").text)
        wait(driver, "the evidence again", lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline[data-rows]"))
        no_script_ran(driver)
        assert "acknowledged" in driver.find_element(By.TAG_NAME, "main").text

        address = next(a for a in driver.find_elements(By.CSS_SELECTOR, "#entities a") if ATTACKER in a.text)
        address.click()
        wait(driver, "the address's timeline", lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline[data-rows]"), timeout=30)
        assert ATTACKER in driver.find_element(By.ID, "entity").text
        body = driver.find_element(By.TAG_NAME, "main").text
        # The campaign's probes are in its log lines: shown, as text.
        assert "pwned-" in body, "the campaign's cross-site scripting probes are not in the address's timeline"
        no_script_ran(driver)
        shot(driver, "entity-address")

        # 4. The SQL workbench: a query, its chart, its CSV.
        driver.get(base + "/console/sql.html")
        editor = wait(driver, "the editor", lambda d: d.find_element(By.ID, "query"))
        editor.clear()
        editor.send_keys(
            "SELECT time_bucket('1m', ts) AS minute, count(*) AS invocations FROM invocations GROUP BY 1 ORDER BY 1"
        )
        driver.find_element(By.ID, "run").click()
        wait(driver, "the result", lambda d: d.find_elements(By.CSS_SELECTOR, "#results[data-rows]"))
        assert int(driver.find_element(By.ID, "results").get_attribute("data-rows")) > 0
        wait(driver, "the result's chart", lambda d: d.find_elements(By.CSS_SELECTOR, "#result-chart svg"))
        driver.find_element(By.ID, "download-csv").click()
        csv = os.path.join(out, "coldtrail-result.csv")
        wait(driver, "the CSV download", lambda d: os.path.exists(csv) and os.path.getsize(csv) > 0)
        with open(csv) as f:
            assert f.readline().strip() == "minute,invocations", "the CSV's header"
        wait(driver, "the history", lambda d: "time_bucket" in d.find_element(By.ID, "history").text)
        shot(driver, "sql")

        driver.get(base + "/console/fleet.html")
        wait(driver, "the fleet", lambda d: d.find_elements(By.CSS_SELECTOR, "#functions svg"))
        shot(driver, "fleet")
        driver.get(base + "/console/admin.html")
        wait(driver, "the users", lambda d: "analyst" in d.find_element(By.ID, "users").text)
        # An admin adds a suppression, sees it, and lifts it.
        wait(driver, "the suppression form", lambda d: d.find_elements(By.ID, "suppress-add"))
        driver.find_element(By.ID, "suppress-detector").send_keys("callers.")
        driver.find_element(By.ID, "suppress-until").send_keys("2030-01-01T00:00:00Z")
        driver.find_element(By.ID, "suppress-reason").send_keys("browser test onboarding")
        driver.find_element(By.ID, "suppress-add").click()
        wait(driver, "the suppression listed", lambda d: "browser test onboarding" in d.find_element(By.ID, "suppressions").text)
        shot(driver, "admin")
        driver.find_element(By.CSS_SELECTOR, "#suppressions button.lift").click()
        wait(driver, "the suppression lifted", lambda d: "None added at run time" in d.find_element(By.ID, "suppressions").text)
        # An admin adds a user, who logs in at once (below).
        driver.find_element(By.ID, "user-name").send_keys("responder")
        Select(driver.find_element(By.ID, "user-role")).select_by_value("analyst")
        driver.find_element(By.ID, "user-password").send_keys("responder-password")
        driver.find_element(By.ID, "user-add").click()
        wait(driver, "the added user listed", lambda d: d.find_elements(By.CSS_SELECTOR, "#users button.drop-user"))
        assert "responder" in driver.find_element(By.ID, "users").text
        driver.get(incident_url)
        wait(driver, "the incident again", lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline[data-rows]"))
        driver.find_element(By.ID, "logout").click()
        wait(driver, "the login page after logout", lambda d: d.find_elements(By.ID, "user"))
        driver.get(incident_url)
        wait(driver, "the login page for a logged-out user", lambda d: d.find_elements(By.ID, "user"))

        # 5. An analyst reads, and cannot reach the admin page or its data.
        login(driver, "analyst", analyst_password)
        assert not [a for a in driver.find_elements(By.CSS_SELECTOR, "nav a") if a.text == "Admin"], "an Admin link"
        driver.get(base + "/console/admin.html")
        text = driver.find_element(By.TAG_NAME, "body").text
        assert "admins only" in text, text
        status = driver.execute_script(
            "return fetch('/api/v1/admin/users').then(r => r.status)"
        )
        assert status == 403, status
        # A request that changes anything needs the CSRF token; without it, it is refused.
        status = driver.execute_script(
            "return fetch('/api/v1/sql', {method: 'POST', body: 'SELECT 1'}).then(r => r.status)"
        )
        assert status == 403, status
        driver.get(base + "/console/sql.html")
        wait(driver, "the analyst's own history", lambda d: "incidents" in d.find_element(By.ID, "history").text)
        driver.get(base + "/console/")
        # The admin acknowledged the attacker's incident: it is listed under any status.
        Select(wait(driver, "the status filter", lambda d: d.find_element(By.ID, "status"))).select_by_value("any")
        wait(driver, "the analyst's incident list", lambda d: ATTACKER in d.find_element(By.ID, "incidents").text)
        shot(driver, "incidents-analyst")
        # The user the admin added logs in, as an analyst.
        driver.find_element(By.ID, "logout").click()
        wait(driver, "the login page after the analyst's logout", lambda d: d.find_elements(By.ID, "user"))
        login(driver, "responder", "responder-password")
        driver.get(base + "/console/admin.html")
        assert "admins only" in driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()
    with open(os.path.join(out, "timings.json"), "w") as f:
        json.dump(timings, f, indent=2)
    print(json.dumps(timings))


main()
