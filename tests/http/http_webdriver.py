"""
A minimal W3C WebDriver client over chromedriver, with the standard library
only (urllib + json), so the browser test needs no Selenium.

Blocking: use it from a thread, never on the reactor.  Waiting for the page
is done inside the browser (an async script that resolves when a condition
holds), so the test has no sleeps of its own.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.exists(path) or shutil.which(os.path.basename(path))):
            return f"{path} is not installed (Debian packages chromium and chromium-driver)"
    return None


class WebDriverError(Exception):
    pass


class Browser:
    """One headless Chromium, driven through a chromedriver subprocess."""

    @staticmethod
    def _start_driver() -> tuple[subprocess.Popen[str], int | None, list[str]]:
        """A chromedriver on a free port: the process, its port (None if it failed), its output."""
        driver = subprocess.Popen(
            [CHROMEDRIVER, "--port=0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert driver.stdout is not None
        said: list[str] = []
        for line in driver.stdout:
            said.append(line.strip())
            found = re.search(r"started successfully on port (\d+)", line)
            if found:
                return driver, int(found.group(1)), said
        driver.kill()
        driver.wait()
        said.append(f"(exit status {driver.returncode})")
        return driver, None, said

    def __init__(self) -> None:
        # A loaded CI machine once saw chromedriver exit before it listened
        # (and say nothing we kept): try again once, and tell what it said.
        said: list[str] = []
        for _attempt in range(2):
            self.driver, port, said = self._start_driver()
            if port is not None:
                break
        else:
            raise WebDriverError("chromedriver did not start: " + " | ".join(said)[-2000:])
        self.base = f"http://127.0.0.1:{port}"
        capabilities = {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--window-size=1280,800",
                ],
            },
        }
        try:
            value = self._send("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})
        except Exception:
            self.driver.kill()
            self.driver.wait()
            raise
        self.session = f"/session/{value['sessionId']}"
        self._send("POST", self.session + "/timeouts", {"implicit": 10_000, "script": 20_000})

    def _send(self, method: str, path: str, body: object = None) -> Any:
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as e:
            raise WebDriverError(e.read().decode("utf-8", "replace")[:2000]) from None

    def close(self) -> None:
        try:
            self._send("DELETE", self.session)
        finally:
            self.driver.terminate()
            try:
                self.driver.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.driver.kill()
                self.driver.wait()

    # --- commands ----------------------------------------------------------------

    def go(self, url: str) -> None:
        self._send("POST", self.session + "/url", {"url": url})

    def find(self, css: str) -> str:
        found = self._send(
            "POST", self.session + "/element", {"using": "css selector", "value": css}
        )
        return str(found[ELEMENT])

    def type(self, css: str, text: str) -> None:
        element = self.find(css)
        self._send("POST", f"{self.session}/element/{element}/clear")
        self._send("POST", f"{self.session}/element/{element}/value", {"text": text})

    def click(self, css: str) -> None:
        """
        Click the element ``css`` finds now.  Done in one script, not find then
        click, because the live page may re-render a list between the two.
        """
        self.wait_for("document.querySelector(args[0])", css)
        self.run("document.querySelector(arguments[0]).click()", css)

    def text(self, css: str) -> str:
        return str(self._send("GET", f"{self.session}/element/{self.find(css)}/text"))

    def run(self, script: str, *args: object) -> Any:
        return self._send(
            "POST", self.session + "/execute/sync", {"script": script, "args": list(args)}
        )

    def wait_for(self, condition: str, *args: object) -> Any:
        """
        Resolve when the JavaScript expression ``condition`` is truthy (it may
        use ``args``); fails after the script timeout.
        """
        script = (
            "const done = arguments[arguments.length - 1];"
            "const args = Array.from(arguments).slice(0, -1);"
            f"const check = () => {{ try {{ const v = ({condition}); if (v) return done(v); }}"
            " catch (e) {} requestAnimationFrame(check); };"
            "check();"
        )
        return self._send(
            "POST", self.session + "/execute/async", {"script": script, "args": list(args)}
        )

    def screenshot(self, path: str) -> None:
        png = base64.b64decode(self._send("GET", self.session + "/screenshot"))
        with open(path, "wb") as f:
            f.write(png)
