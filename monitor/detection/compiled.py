"""Where numba keeps the compiled kernels of this package.

numba caches a compiled function under its own source file's timestamp only: a kernel whose
helper in another module changed would be served stale. So the cache lives in a directory named
after the sources of every kernel module (and the numba and Python versions): an edit or an
upgrade compiles afresh, and no cache is ever read for other sources. A container whose image
holds a cache compiled at build time (``KPIMON_NUMBA_SEED``) copies it in at start instead of
compiling (about 15 s on a small core).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numba


def cache_key() -> str:
    """A digest of every module of the package (a list of the kernel modules would go stale
    the day one is added) and of the numba and Python versions."""
    digest = hashlib.sha256(f"{numba.__version__} {sys.version}".encode())
    for module in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(module.name.encode())
        digest.update(module.read_bytes())
    return digest.hexdigest()[:16]


def configure() -> Path:
    """Point numba's cache at this package's directory (created if need be) and return it."""
    key = f"kpimon-numba-{cache_key()}"
    root = os.environ.get("KPIMON_NUMBA_CACHE") or os.environ.get("XDG_CACHE_HOME")
    candidates = [Path(root)] if root else [Path.home() / ".cache"]
    candidates.append(Path(tempfile.gettempdir()))
    for base in candidates:
        path = base / key
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=path)  # noqa: SIM115 - a writability probe
            probe.close()
        except OSError:
            continue
        seed = os.environ.get("KPIMON_NUMBA_SEED")
        if seed and (Path(seed) / key).is_dir() and not any(path.iterdir()):
            shutil.copytree(Path(seed) / key, path, dirs_exist_ok=True)
        numba.config.CACHE_DIR = str(path)  # type: ignore[attr-defined]
        return path
    raise OSError(f"no writable directory for the compiled detection kernels: {candidates}")


def compile_all() -> Path:
    """Compile every kernel now (into the configured cache) and return the cache directory: a
    container image does this at build time, so no process compiles at start."""
    import numpy as np
    import pandas as pd

    from monitor.detection import Detector, DetectorSpec

    index = pd.date_range("2026-01-05", periods=24 * 21, freq="h", tz="UTC")
    values = np.random.default_rng(0).poisson(50, index.size).astype(float)
    detector = Detector(DetectorSpec(3600))
    detector.warm(index[:-1], values[:-1], judge_last=48)
    detector.step(index[-1], 0.0)
    return Path(numba.config.CACHE_DIR)  # type: ignore[attr-defined]
