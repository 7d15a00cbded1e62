"""The compiled kernels are cached where no edit or upgrade can serve them stale."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numba
import pytest

from monitor.detection import compiled
from tests.daemon_process import KPI_MONITOR


@pytest.fixture
def restore_cache_dir() -> Iterator[None]:
    # numba.config sets its options through globals(), which mypy cannot see
    before = numba.config.CACHE_DIR  # type: ignore[attr-defined]
    yield
    numba.config.CACHE_DIR = before  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "module", sorted(p.name for p in Path(compiled.__file__).parent.glob("*.py"))
)
def test_the_cache_is_named_after_every_module_of_the_package(
    module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = Path(compiled.__file__).parent
    copy = tmp_path / "detection"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(compiled, "__file__", str(copy / "compiled.py"))
    before = compiled.cache_key()
    assert before == compiled.cache_key()
    # a helper edited in one module changes the key of them all (numba alone would not notice)
    edited = copy / module
    edited.write_text(edited.read_text() + "\n# edited\n")
    assert compiled.cache_key() != before


def test_the_cache_goes_where_it_can_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_cache_dir: object
) -> None:
    unusable = tmp_path / "a-file"  # no directory can be made under it, not even by root
    unusable.write_text("")
    monkeypatch.setenv("KPIMON_NUMBA_CACHE", str(unusable))
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    path = compiled.configure()
    assert path.parent == tmp_path / "tmp" and str(path) == numba.config.CACHE_DIR  # type: ignore[attr-defined]  # set via globals()


def test_a_prebuilt_cache_seeds_an_empty_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_cache_dir: object
) -> None:
    key = f"kpimon-numba-{compiled.cache_key()}"
    seed = tmp_path / "seed" / key
    seed.mkdir(parents=True)
    (seed / "kernel.run-1.py311.nbi").write_bytes(b"compiled at build time")
    monkeypatch.setenv("KPIMON_NUMBA_SEED", str(tmp_path / "seed"))
    monkeypatch.setenv("KPIMON_NUMBA_CACHE", str(tmp_path / "cache"))
    path = compiled.configure()
    assert (path / "kernel.run-1.py311.nbi").read_bytes() == b"compiled at build time"


def test_compiling_ahead_fills_the_cache_a_container_ships(tmp_path: Path) -> None:
    """What the image's build step runs: every kernel compiled into the cache, on disk."""
    python = Path(KPI_MONITOR).with_name("python")
    done = subprocess.run(
        [str(python), "-m", "monitor.detection"],
        env={**os.environ, "KPIMON_NUMBA_CACHE": str(tmp_path)},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    cache = tmp_path / f"kpimon-numba-{compiled.cache_key()}"
    assert str(cache) in done.stdout
    assert list(cache.rglob("*.nbi")) and list(cache.rglob("*.nbc"))
