"""The README's quick start, measured: a fresh clone, `make run`, the first incident on /metrics.

    python -m benchmarks.quickstart                 # pip's download cache as it is
    python -m benchmarks.quickstart --no-pip-cache  # every package downloaded again

Clones the current commit into a temporary directory, runs `make run` there on a free port, and
prints how long the install took, when the first `kpimon_anomaly ... 1` appeared on /metrics and
the size of the `.venv` it created; then stops the daemon. Figures, not assertions; not part of
`make bench-smoke`, since it installs the dependencies from the package index.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INCIDENT = re.compile(r"^kpimon_anomaly\{.*\} 1\.0$", re.M)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def _size_mib(directory: Path) -> float:
    total = sum(p.lstat().st_size for p in directory.rglob("*") if not p.is_symlink())
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--no-pip-cache", action="store_true", help="download every package")
    parser.add_argument("--timeout", type=float, default=1800, help="give up after (s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kpimon-quickstart-") as scratch:
        clone = Path(scratch) / "kpi-monitor"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        port = _free_port()
        env = {**os.environ, "PORT": str(port)}
        if args.no_pip_cache:
            env["PIP_NO_CACHE_DIR"] = "1"
        log = (Path(scratch) / "make-run.log").open("wb")
        start = time.monotonic()
        make = subprocess.Popen(
            ["make", "run"], cwd=clone, env=env, stdout=log, stderr=log, start_new_session=True
        )
        installed = incident = None
        try:
            while time.monotonic() - start < args.timeout and make.poll() is None:
                elapsed = time.monotonic() - start
                if installed is None and (clone / ".venv" / ".installed-run").exists():
                    installed = elapsed
                if installed is not None and INCIDENT.search(_metrics(port)):
                    incident = elapsed
                    break
                time.sleep(0.5)
        finally:
            if make.poll() is None:
                os.killpg(make.pid, signal.SIGTERM)  # make and the daemon it started
            make.wait(timeout=30)
            log.close()
        print(f"make run: dependencies installed after {installed or float('nan'):.0f} s")
        if incident is None:
            print("no incident on /metrics before the timeout (see make-run.log)")
        else:
            print(f"first incident on /metrics after {incident:.0f} s "
                  f"({incident - (installed or 0):.0f} s after the install)")  # fmt: skip
        print(f".venv: {_size_mib(clone / '.venv'):.0f} MiB")


if __name__ == "__main__":
    main()
