"""Headless Chromium (the Debian package) driven over the DevTools protocol: the browser tests,
the page benchmark and the README's screenshot.

The protocol does everything these need (load a page, read the DOM, turn scripts off, see a
dialog open, take a screenshot, read paint timings) over one websocket, so the only Python
dependency is websocket-client; no driver process in between.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import websocket

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
START_TIMEOUT = 30.0
CALL_TIMEOUT = 60.0
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


def chromium() -> str | None:
    """The Chromium binary, when installed."""
    return CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")


class BrowserError(Exception):
    pass


class Browser:
    """One headless Chromium with a throwaway profile; ``close`` ends it."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        binary = chromium()
        if binary is None:
            raise BrowserError(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
        self._profile = tempfile.mkdtemp(prefix="kpimon-chromium-")
        args = [
            binary,
            "--headless=new",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--hide-scrollbars",
            "--remote-debugging-port=0",
            f"--user-data-dir={self._profile}",
            f"--window-size={width},{height}",
        ]
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to run its sandbox as root
        self._process = subprocess.Popen(
            [*args, "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self._endpoint = self._wait_for_endpoint()
        self._browser = _Connection(self._endpoint)

    def _wait_for_endpoint(self) -> str:
        assert self._process.stderr is not None
        deadline = time.monotonic() + START_TIMEOUT
        seen = []
        while time.monotonic() < deadline:
            line = self._process.stderr.readline()
            if not line and self._process.poll() is not None:
                break
            seen.append(line)
            found = _LISTENING.search(line)
            if found:
                return found.group(1)
        self.close()
        raise BrowserError("Chromium did not start: " + "".join(seen[-20:]))

    def page(self) -> Page:
        """A new tab."""
        target = self._browser.call("Target.createTarget", url="about:blank")["targetId"]
        host = self._endpoint.split("/devtools/")[0]
        return Page(_Connection(f"{host}/devtools/page/{target}"))

    def close(self) -> None:
        browser = getattr(self, "_browser", None)
        if browser is not None:
            browser.close()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stderr is not None:
            self._process.stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Connection:
    """One DevTools websocket: calls by id, events kept in order of arrival."""

    def __init__(self, url: str) -> None:
        # no Origin header: Chromium refuses websocket clients from other origins
        self._ws = websocket.create_connection(url, timeout=CALL_TIMEOUT, suppress_origin=True)
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})  # type: ignore[no-any-return]
            if "method" in message:
                self.events.append(message)

    def wait_for(self, method: str, timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
        """The next event ``method`` (one already received counts)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event["method"] == method:
                    return self.events.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"no {method} within {timeout:g}s")
            self._ws.settimeout(remaining)
            try:
                message = json.loads(self._ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            finally:
                self._ws.settimeout(CALL_TIMEOUT)
            if "method" in message:
                self.events.append(message)

    def close(self) -> None:
        self._ws.close()


class Page:
    """One tab: load, read, click, capture."""

    def __init__(self, connection: _Connection) -> None:
        self._c = connection
        self._c.call("Page.enable")
        self._c.call("Runtime.enable")

    @property
    def events(self) -> list[dict[str, Any]]:
        return self._c.events

    def dialogs(self) -> list[dict[str, Any]]:
        """Every alert/confirm/prompt the page opened (each dismissed at once)."""
        opened = [e for e in self._c.events if e["method"] == "Page.javascriptDialogOpening"]
        for _ in opened:
            self._c.call("Page.handleJavaScriptDialog", accept=False)
        return opened

    def scripts(self, enabled: bool) -> None:
        """Turn the page's JavaScript on or off (reads below keep working)."""
        self._c.call("Emulation.setScriptExecutionDisabled", value=not enabled)

    def open(self, url: str, timeout: float = CALL_TIMEOUT) -> None:
        """Navigate and wait for the load event."""
        self._c.events[:] = [e for e in self._c.events if e["method"] != "Page.loadEventFired"]
        result = self._c.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"{url}: {result['errorText']}")
        self._c.wait_for("Page.loadEventFired", timeout)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression, run by DevTools (not by the page)."""
        result = self._c.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def click(self, selector: str, timeout: float = CALL_TIMEOUT) -> None:
        """A real mouse click on the element's centre (works with scripts off); waits for the
        page it loads."""
        root = self._c.call("DOM.getDocument")["root"]["nodeId"]
        node = self._c.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        if not node:
            raise BrowserError(f"no element matches {selector}")
        self._c.call("DOM.scrollIntoViewIfNeeded", nodeId=node)
        quad = self._c.call("DOM.getContentQuads", nodeId=node)["quads"][0]
        x, y = sum(quad[0::2]) / 4, sum(quad[1::2]) / 4
        self._c.events[:] = [e for e in self._c.events if e["method"] != "Page.loadEventFired"]
        for kind in ("mousePressed", "mouseReleased"):
            self._c.call(
                "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1
            )
        self._c.wait_for("Page.loadEventFired", timeout)

    def screenshot(self, path: Path, *, full_page: bool = False) -> None:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self._c.call("Page.getLayoutMetrics")["cssContentSize"]
            params.update(
                captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            )
        data = self._c.call("Page.captureScreenshot", **params)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self._c.close()
