"""Headless Chromium over the DevTools protocol: UI pages as a person sees them, after a click.

`chromium --screenshot URL` cannot click, and the Prefect UI opens a run on its Logs tab whatever
the URL asks for; a test that shows the Artifacts tab has to click it, and to wait for the page's
own requests rather than for a fixed time.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
from websockets.sync.client import connect

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--window-size=1400,1000", "--remote-debugging-port=0"]
# Clicks the innermost element whose own text is exactly `text` (a tab's label, a button).
CLICK = """(text => {
  const hits = [...document.querySelectorAll('body *')].filter(e => e.textContent.trim() === text
      && ![...e.children].some(c => c.textContent.trim() === text));
  if (!hits.length) return false;
  (hits[0].closest('button, a, [role=tab]') || hits[0]).click();
  return true;
})"""


def find_browser() -> str | None:
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


class Page:
    """One browser tab; `with Page(browser, profile) as page: page.open(url, "text")`."""

    def __init__(self, browser: str, profile: Path, timeout: float = 90.0):
        self.timeout = timeout
        profile.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen([browser, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        port = self._until(lambda: port_file.is_file() and port_file.read_text().split()[0], "DevTools port")
        target = self._until(lambda: next((t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json()
                                           if t["type"] == "page"), None), "a page target")
        self.socket = connect(target["webSocketDebuggerUrl"], max_size=None)
        self.ids = itertools.count(1)

    def _until(self, probe, what: str):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                if found := probe():
                    return found
            except (OSError, httpx.HTTPError, IndexError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"headless Chromium: timed out waiting for {what}")

    def call(self, method: str, **params):
        ident = next(self.ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while (message := json.loads(self.socket.recv())).get("id") != ident:
            pass  # an event: nothing here listens to them
        if "error" in message:
            raise AssertionError(f"{method}: {message['error']}")
        return message["result"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def wait_for_text(self, text: str) -> str:
        return self._until(lambda: text in (page := self.text()) and page, f"{text!r} on the page")

    def open(self, url: str, text: str) -> str:
        self.call("Page.navigate", url=url)
        return self.wait_for_text(text)

    def click(self, label: str, then: str) -> str:
        self._until(lambda: self.evaluate(f"{CLICK}({json.dumps(label)})"), f"something labelled {label!r}")
        return self.wait_for_text(then)

    def screenshot(self, path: Path) -> None:
        time.sleep(1)  # let the last rendering settle
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def __enter__(self) -> Page:
        return self

    def __exit__(self, *exc) -> None:
        self.socket.close()
        self.process.terminate()
        self.process.wait(timeout=30)
