"""Regenerate the README's screenshot of the page from the demo, with headless Chromium.

    .venv/bin/python scripts/screenshot.py            # writes docs/page.png

Builds the demo warehouse in a temporary directory, runs `kpi-monitor demo` on a free port until
every check has run, and captures the revenue check (Germany firing) at 1200x1000.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.browser import Browser  # noqa: E402

KPI_MONITOR = str(Path(sys.executable).with_name("kpi-monitor"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_all_ran(base: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/api/v1/checks", timeout=5) as response:
                checks = json.loads(response.read())["checks"]
            if all(c["last_run"] is not None for c in checks):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("the demo did not run every check in time")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "page.png")
    parser.add_argument("--path", default="/checks/revenue?days=2")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="kpimon-screenshot-") as scratch:
        demo = subprocess.Popen(
            [KPI_MONITOR, "demo", "--dir", scratch, "--port", str(port), "--host", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_all_ran(base)
            with Browser(width=1200, height=1000) as browser:
                page = browser.page()
                page.open(base + args.path)
                page.screenshot(args.out)
                page.close()
        finally:
            demo.terminate()
            demo.wait(timeout=15)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
