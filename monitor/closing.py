"""Resources released by ``close()``, and so usable in a ``with`` block."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Closing(ABC):
    """A resource that :meth:`close` releases; ``with`` closes it as the block ends, also when
    the block raises::

        with StateStore(path) as store:
            store.ping()
    """

    @abstractmethod
    def close(self) -> None:
        """Release what the resource holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
