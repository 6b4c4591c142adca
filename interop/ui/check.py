"""The management UI in a real headless Chromium (Debian's chromium and chromedriver): log in,
create a queue, publish to it, watch its count change, get the message, delete the queue;
the overview, connections, exchanges and admin pages load without script errors. Screenshots
of every step go to the directory given.

Usage: check.py URL SCREENSHOT_DIR   (URL: the management API, e.g. http://127.0.0.1:15672)
"""

import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

url, shots = sys.argv[1], sys.argv[2]
os.makedirs(shots, exist_ok=True)
failures = []


def step(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(name)


options = webdriver.ChromeOptions()
for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"]:
    options.add_argument(arg)
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")),
                          options=options)
wait = WebDriverWait(driver, 20)


def shot(name):
    driver.save_screenshot(os.path.join(shots, name + ".png"))


def text_of(css):
    return driver.find_element(By.CSS_SELECTOR, css).text


try:
    driver.get(url + "/")
    wait.until(ec.presence_of_element_located((By.ID, "login-form")))
    shot("00-login")
    driver.find_element(By.ID, "user").send_keys("guest")
    driver.find_element(By.ID, "password").send_keys("wrong")
    driver.find_element(By.ID, "login-button").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "login-msg"), "Login failed"))
    step("a wrong password is refused", True)
    driver.find_element(By.ID, "password").clear()
    driver.find_element(By.ID, "password").send_keys("guest")
    driver.find_element(By.ID, "login-button").click()
    wait.until(ec.presence_of_element_located((By.ID, "c-rates")))
    step("logged in: the overview shows its charts", "warren" in driver.page_source)
    shot("01-overview")

    driver.get(url + "/#/queues")
    wait.until(ec.presence_of_element_located((By.ID, "queue-name")))
    driver.find_element(By.ID, "queue-name").send_keys("ui-check")
    driver.find_element(By.ID, "add-queue-button").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, 'tr[data-queue="ui-check"]')))
    step("a queue is created from the form", True)
    shot("02-queues")

    driver.find_element(By.LINK_TEXT, "ui-check").click()
    wait.until(ec.presence_of_element_located((By.ID, "q-ready")))
    step("the queue page opens, empty", text_of("#q-ready") == "0", text_of("#q-ready"))
    form = driver.find_element(By.ID, "publish")
    form.find_element(By.NAME, "payload").send_keys("hello from the browser")
    form.find_element(By.CSS_SELECTOR, "button").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "msg"), "Message published."))
    driver.switch_to.active_element.send_keys("")  # leave the form: the page may refresh
    driver.execute_script("document.activeElement.blur()")
    WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "q-ready").text == "1")
    step("the count goes to 1 by itself", True)
    shot("03-queue-with-message")

    Select(driver.find_element(By.CSS_SELECTOR, "#get select[name=ackmode]")).select_by_value("ack_requeue_false")
    driver.find_element(By.ID, "get-button").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "[data-payload]")))
    payload = text_of("[data-payload]")
    step("the message is read back", payload == "hello from the browser", payload)
    driver.execute_script("document.activeElement.blur()")
    WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "q-ready").text == "0")
    step("the count goes back to 0", True)
    shot("04-message-got")

    driver.find_element(By.ID, "delete").click()
    driver.switch_to.alert.accept()
    wait.until(ec.presence_of_element_located((By.ID, "queue-table")))
    time.sleep(0.5)
    gone = not driver.find_elements(By.CSS_SELECTOR, 'tr[data-queue="ui-check"]')
    step("the queue is deleted", gone)
    shot("05-queue-deleted")

    for page, marker in [("connections", "Connections"), ("channels", "Channels"),
                         ("exchanges", "amq.topic"), ("admin", "Permissions")]:
        driver.get(url + "/#/" + page)
        wait.until(ec.text_to_be_present_in_element((By.ID, "app"), marker))
        step(f"the {page} page loads", True)
        shot(f"06-{page}")

    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
              and "favicon" not in e["message"] and "401" not in e["message"]]
    step("no script errors", not severe, "; ".join(e["message"] for e in severe))
except Exception as e:  # noqa: BLE001 - a failed wait or click is a failed check
    shot("99-failure")
    step("the walk through the UI", False, f"{type(e).__name__}: {e}")
finally:
    driver.quit()

print(f"{'FAILED' if failures else 'ok'}: screenshots in {shots}")
sys.exit(1 if failures else 0)
