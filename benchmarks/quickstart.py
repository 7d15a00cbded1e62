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

from monitor.demo import INCIDENTS

REPO = Path(__file__).resolve().parents[1]
FIRING = re.compile(r'^kpimon_anomaly\{check="([^"]*)",segment="([^"]*)".*\} 1\.0$', re.M)


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
    parser.add_argument(
        "--cold-kernels",
        action="store_true",
        help="compile the detection kernels as a fresh machine does (an empty numba cache)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kpimon-quickstart-") as scratch:
        clone = Path(scratch) / "kpi-monitor"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        port = _free_port()
        env = {**os.environ, "PORT": str(port)}
        if args.no_pip_cache:
            env["PIP_NO_CACHE_DIR"] = "1"
        if args.cold_kernels:
            env["KPIMON_NUMBA_CACHE"] = str(Path(scratch) / "numba-cache")
        log = (Path(scratch) / "make-run.log").open("wb")
        start = time.monotonic()
        make = subprocess.Popen(
            ["make", "run"], cwd=clone, env=env, stdout=log, stderr=log, start_new_session=True
        )
        installed = incident = every = None
        try:
            while time.monotonic() - start < args.timeout and make.poll() is None:
                elapsed = time.monotonic() - start
                if installed is None and (clone / ".venv" / ".installed-run").exists():
                    installed = elapsed
                firing = set(FIRING.findall(_metrics(port))) if installed is not None else set()
                if firing and incident is None:
                    incident = elapsed
                if firing >= INCIDENTS:
                    every = elapsed
                    break
                time.sleep(0.5)
        finally:
            stopping = time.monotonic()
            if make.poll() is None:
                os.killpg(make.pid, signal.SIGTERM)  # make and the daemon it started
            try:
                make.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(make.pid, signal.SIGKILL)
                make.wait()
            stopped = time.monotonic() - stopping
            log.close()
        print(f"make run: dependencies installed after {installed or float('nan'):.0f} s")
        for what, at in (("first incident", incident), ("every demo incident", every)):
            if at is None:
                print(f"no {what} on /metrics before the timeout")
            else:
                print(f"{what} on /metrics after {at:.0f} s "
                      f"({at - (installed or 0):.0f} s after the install)")  # fmt: skip
        print(f"stopped {stopped:.1f} s after SIGTERM")
        print(f".venv: {_size_mib(clone / '.venv'):.0f} MiB")
        if every is None or stopped > 30:
            print((Path(scratch) / "make-run.log").read_text()[-3000:])


if __name__ == "__main__":
    main()
