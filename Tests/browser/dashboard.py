#!/usr/bin/env python3
"""Drives the web dashboard in a real headless browser (Debian's chromium, through chromedriver and Selenium) while
the test around it kills a node and starts it again. The page is loaded once: every change has to arrive through
its server-sent events, without a reload.

Steps (each announced on stdout, and as a file in --signals so the Swift test can follow):
  1. open the page, give the cluster secret at its prompt, wait until every node shows alive  -> signals/alive
  2. (the test kills --watch) wait until the page shows it dead; screenshot                  -> signals/dead
  3. (the test starts it again) wait until the page shows it alive                           -> signals/back
Exit status 0 only when all three were seen and the page never reloaded.
"""
import argparse, os, sys, time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def say(text):
    print(time.strftime("%H:%M:%S"), text, flush=True)


def signal(directory, name):
    with open(os.path.join(directory, name), "w") as f:
        f.write("1\n")


def wait_for(what, condition, timeout):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as error:  # an element not there yet
            last = error
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout} s waiting for {what} (last error: {last})")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--watch", required=True, help="the node the test kills (host:port)")
    parser.add_argument("--signals", required=True)
    parser.add_argument("--screenshot", required=True)
    parser.add_argument("--timeout", type=float, default=40)
    args = parser.parse_args()

    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                 f"--user-data-dir={os.path.join(args.signals, 'profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.get(args.url)
        # A ring with a secret asks for it first.
        wait_for("the secret prompt", lambda: driver.find_element(By.ID, "login").is_displayed(), args.timeout)
        with open(args.secret_file) as f:
            secret = f.read().strip()
        driver.find_element(By.ID, "secret").send_keys("not the secret")
        driver.find_element(By.ID, "loginbutton").click()
        wait_for("the wrong secret to be refused",
                 lambda: "not the cluster secret" in driver.find_element(By.ID, "loginerror").text, args.timeout)
        driver.find_element(By.ID, "secret").clear()
        driver.find_element(By.ID, "secret").send_keys(secret)
        driver.find_element(By.ID, "loginbutton").click()
        driver.execute_script("window.__loadedOnce = 'yes'")  # gone if the page reloads

        # Read in one script run: the page redraws these every second, so element handles go stale.
        def states(selector="#members tbody tr[data-address]"):
            return dict(driver.execute_script(
                "return Array.from(document.querySelectorAll(arguments[0])).map(e => [e.dataset.address, e.dataset.state])",
                selector))

        def click(selector):
            return driver.execute_script(
                "const e = document.querySelector(arguments[0]); if (!e) return false; e.click(); return true", selector)

        def live():
            return driver.execute_script("return document.body.dataset.live") == "1"

        wait_for(f"{args.nodes} nodes alive",
                 lambda: live() and len(states()) == args.nodes and set(states().values()) == {"alive"}, args.timeout)
        ring = states("#ring g.member")
        if len(ring) != args.nodes or set(ring.values()) != {"alive"}:
            raise SystemExit(f"the ring picture shows {ring}, not {args.nodes} nodes alive")
        # The file tree: into a directory and onto a file's copies.
        wait_for("the docs directory", lambda: click("a[data-dir='/docs']"), args.timeout)
        wait_for("a file in docs", lambda: click("a[data-file='/docs/guide.bin']"), args.timeout)
        wait_for("the file's chunks", lambda: driver.execute_script(
            "const d = document.getElementById('detail'); return d.textContent.includes('copies') && d.querySelectorAll('tbody tr').length > 0"),
            args.timeout)
        say("page shows every node alive: " + str(states()))
        signal(args.signals, "alive")

        wait_for(f"{args.watch} shown dead", lambda: states().get(args.watch) == "dead", args.timeout)
        wait_for(f"{args.watch} dead in the ring picture", lambda: states("#ring g.member").get(args.watch) == "dead", args.timeout)
        say("page shows the killed node dead: " + str(states()))
        driver.save_screenshot(args.screenshot)
        signal(args.signals, "dead")

        wait_for(f"{args.watch} shown alive again", lambda: states().get(args.watch) == "alive", args.timeout * 2)
        say("page shows the node back: " + str(states()))
        if driver.execute_script("return window.__loadedOnce") != "yes":
            raise SystemExit("the page reloaded: changes must arrive without a reload")
        signal(args.signals, "back")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
