"""The evaluation code that lives beside the labelled corpora, imported in place, never copied.

``../shared/benchmarks/nab/nabscore.py`` is NAB's scoring rule; ``../shared/benchmarks/cmd/
cmd_eval.py`` defines the CMD metric (events, onsets, warm-up, alert rule) and the peers users
pick instead of us (rolling z-score, Elementary-style, Prophet). The benchmark calls their
definitions so that it cannot drift from them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks"
DEFAULT_NAB = SHARED / "nab"
DEFAULT_CMD = SHARED / "cmd"


class MissingCorpus(ValueError):
    """A corpus folder without the file the benchmark needs from it."""


def _load(path: Path, name: str) -> ModuleType:
    """Import ``path`` as module ``name`` once per process (worker processes load it again)."""
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return loaded
    if not path.is_file():
        raise MissingCorpus(f"{path} not found")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise MissingCorpus(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module by name while executing it
    spec.loader.exec_module(module)
    return module


def load_nabscore(nab_dir: Path) -> ModuleType:
    """NAB's scorer, from the corpus folder."""
    return _load(nab_dir.resolve() / "nabscore.py", "_nabscore")


def load_cmd_eval(cmd_dir: Path) -> ModuleType:
    """CMD's evaluation script, from the corpus folder."""
    return _load(cmd_dir.resolve() / "cmd_eval.py", "_cmd_eval")
