"""The demo page in a real browser (issue 7): Debian's headless Chromium, driven through
chromedriver's WebDriver HTTP API, against real ``phantom serve --demo --port 0`` processes.

Load the page, reload it and see cache hits in the page's table, send a WebSocket message
through phantom's tunnel and see the echo. A screenshot is kept in ``tests/artifacts/``.

Chromium and chromedriver come from the system (``apt-get install chromium chromium-driver``,
which ``.ci/run`` does before the tests); nothing is downloaded at run time. The test skips,
saying why, only when they are not installed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

pytestmark = pytest.mark.browser

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1100,900",
]
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C WebDriver element key
STEP_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = STEP_TIMEOUT) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class WebDriver:
    """The few WebDriver calls the test needs, as plain HTTP to chromedriver."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.session = ""

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=STEP_TIMEOUT + 15) as response:
            return json.loads(response.read())["value"]

    def ready(self) -> bool:
        try:
            return bool(self.call("GET", "/status")["ready"])
        except OSError:
            return False

    def start(self, binary: str, profile: Path) -> None:
        capabilities = {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"],
            },
        }
        value = self.call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})
        self.session = value["sessionId"]

    def end(self) -> None:
        if self.session:
            self.call("DELETE", f"/session/{self.session}")

    def s(self, method: str, path: str, body: Any = None) -> Any:
        return self.call(method, f"/session/{self.session}{path}", body)

    def go(self, url: str) -> None:
        self.s("POST", "/url", {"url": url})

    def refresh(self) -> None:
        self.s("POST", "/refresh", {})

    def js(self, script: str, *args: Any) -> Any:
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def element(self, css: str) -> str:
        found = self.s("POST", "/element", {"using": "css selector", "value": css})
        return str(found[ELEMENT])

    def type_into(self, css: str, text: str) -> None:
        self.s("POST", f"/element/{self.element(css)}/value", {"text": text})

    def click(self, css: str) -> None:
        self.s("POST", f"/element/{self.element(css)}/click", {})

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.s("GET", "/screenshot")))


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = next((p for p in CHROMIUM_CANDIDATES if os.access(p, os.X_OK)), None)
    if binary is None or shutil.which("chromedriver") is None:
        pytest.skip(
            "Chromium is not installed: apt-get install -y chromium chromium-driver "
            "(.ci/run does this before the tests)"
        )
    return binary


@pytest.fixture
def demo_url() -> Iterator[str]:
    """A real ``phantom serve --demo --port 0`` process; yields the URL it prints."""
    process = subprocess.Popen(
        [sys.executable, "-m", "phantom", "serve", "--demo", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the demo prints its URL first, flushed
        match = re.search(r"open (http://\S+/)", line)
        assert match, f"unexpected demo output: {line!r}"
        yield match[1]
    finally:
        stop(process)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[WebDriver]:
    port = free_port()
    driver_process = subprocess.Popen(
        ["chromedriver", f"--port={port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    driver = WebDriver(port)
    try:
        wait_for("chromedriver to be ready", driver.ready)
        driver.start(chromium, tmp_path / "profile")
        yield driver
    finally:
        try:
            driver.end()
        except OSError:
            pass
        stop(driver_process)


READ_TABLE = """
const table = document.getElementById("cache-status");
if (table.dataset.ready !== "true") return null;
const rows = {};
for (const row of table.querySelectorAll("tbody tr[data-url]")) {
  rows[row.dataset.url] = {
    http: row.querySelector(".http").textContent,
    status: row.querySelector(".status").textContent,
  };
}
return rows;
"""

READ_LOG = """
return Array.from(document.querySelectorAll("#ws-log li." + arguments[0]))
  .map((li) => li.textContent);
"""


def test_demo_shows_cache_hits_and_websocket_echo(browser: WebDriver, demo_url: str) -> None:
    browser.go(demo_url)
    first = wait_for("the cache table to fill", lambda: browser.js(READ_TABLE))
    assert all(row["http"] == "200" for row in first.values()), first

    browser.refresh()
    again = wait_for("the cache table to fill after a reload", lambda: browser.js(READ_TABLE))
    for url in ("/static/app.css", "/static/app.js"):
        assert re.search(r";\s*hit\b", again[url]["status"]), (url, again[url])

    wait_for(
        "the WebSocket to open",
        lambda: browser.js('return document.getElementById("ws-state").dataset.state === "open";'),
    )
    message = f"hello through phantom {os.getpid()}"
    browser.type_into("#ws-input", message)
    browser.click("#ws-send")
    received = wait_for("the echo", lambda: browser.js(READ_LOG, "received"))
    assert received == [message]
    assert browser.js(READ_LOG, "sent") == [message]

    browser.screenshot(ARTIFACTS / "demo.png")
    assert (ARTIFACTS / "demo.png").read_bytes().startswith(b"\x89PNG")
