"""Run ``kpi-monitor`` as a real subprocess and talk to it over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

KPI_MONITOR = str(Path(sys.executable).with_name("kpi-monitor"))


def run_kpi_monitor(*args: str, log_format: str = "json") -> subprocess.CompletedProcess[str]:
    """Run one ``kpi-monitor`` command to its end and return its exit code and output."""
    return subprocess.run(
        [KPI_MONITOR, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KPIMON_LOG_FORMAT": log_format},
        check=False,
    )


class DaemonProcess:
    def __init__(
        self, args: list[str], port: int, env: dict[str, str] | None = None, log: Path | None = None
    ) -> None:
        self.port = port
        self.log_path = log
        self._log = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [KPI_MONITOR, *args, "--port", str(port), "--host", "127.0.0.1"],
            env={**os.environ, "KPIMON_LOG_FORMAT": "json", **(env or {})},
            stdout=self._log,
            stderr=self._log,
        )

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}{path}", timeout=5
            ) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"daemon exited with {self.process.returncode}: {self.output()}"
                )
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"daemon not ready after {timeout}s: {self.output()}")

    def checks(self) -> list[dict[str, Any]]:
        checks: list[dict[str, Any]] = json.loads(self.get("/api/v1/checks")[1])["checks"]
        return checks

    def wait_all_ran(self, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            checks = self.checks()
            if all(c["last_run"] is not None for c in checks):
                return checks
            time.sleep(0.2)
        raise AssertionError("not every check ran")

    def wait_firing(self, timeout: float = 60) -> set[tuple[str, str]]:
        """Once every check ran: the (check, segment) pairs whose alert is firing."""
        return {
            (c["name"], s["segment"])
            for c in self.wait_all_ran(timeout)
            for s in c["series"]
            if s["alert"]["status"] == "firing"
        }

    def metrics(self) -> str:
        return self.get("/metrics")[1].decode()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> tuple[int, float]:
        """Signal the daemon; return its exit code and how long it took to exit."""
        start = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if not isinstance(self._log, int):  # subprocess.DEVNULL is an int: nothing to close
            self._log.close()
        return code, time.monotonic() - start

    def output(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""
