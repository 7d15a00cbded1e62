"""The kernels' compiler: numba's ``njit`` with the on-disk cache (see ``compiled``), typed so
that a kernel keeps its signature for mypy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
from numba import njit

F = TypeVar("F", bound=Callable[..., Any])

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Record = Any
"""A detector's state as the kernels see it: one record of ``monitor.detection.state.STATE``
(numba types its fields; mypy cannot)."""


def kernel(function: F) -> F:
    """Compile ``function`` with numba, cached on disk."""
    return cast(F, njit(cache=True)(function))


def inlined(function: F) -> F:
    """``kernel``, inlined into its callers (a few lines on the hot path)."""
    return cast(F, njit(cache=True, inline="always")(function))
