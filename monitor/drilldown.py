"""Drill-down: which segments explain a deviation, ranked by their impact on the total. Pure.

A check with dimensions is read as segments (the values of its dimensions joined by ``|``).
When the total or a segment deviates, every segment's actual and expected values over the
incident's buckets are added up into *cells*: one per value of each dimension and one per pair
of values of two dimensions (country x platform), at most ``top`` cells per dimension or pair,
the rest folded into one (``__other__``). Each cell's contribution is its deviation (actual
minus expected) over the total's, where the total's expected is the sum of its cells' expected
values: the contributions of the cells of one dimension add up to 100%, and "DE -61% explains
87% of the drop" can be read as such.

What the deviation is called, one way out of five:

- ``one`` / ``few``: one cell (or two, three of one dimension or pair) carries at least
  ``COVERAGE`` of the deviation and moved, relative to its own size, at least ``1 / CONCENTRATION``
  times as much as everything else did. Of the dimensions and pairs that explain it, the one
  needing the fewest cells wins, then the one whose cells moved the most (a pair is named only
  when it is sharper than its dimension: Germany on iOS rather than Germany);
- ``broad``: the total deviates, but no few cells explain it: everything moved together, and no
  segment is blamed;
- ``mix``: the total holds (within ``HOLD`` of its spread) while the cells of a dimension moved
  apart, at least one each way beyond ``MOVED`` of their own spread: shares shifted;
- ``none``: the total holds, no shares moved apart, and no few cells explain its small move.

Every cell carries its *spread* (one robust standard deviation of its value over the buckets,
from the detector's bands), so "moved" means beyond noise, whatever the cell's size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Literal

Kind = Literal["one", "few", "broad", "mix", "none"]

COVERAGE = 0.6  # share of the deviation the named cells must carry together
CONCENTRATION = 0.5  # everything else moved at most this fraction as much, relatively
MAX_CULPRITS = 3  # more cells than this is no explanation: it is broad
HOLD = 2.0  # the total holds while within this many spreads of its expected value
MOVED = 4.0  # a cell moved when beyond this many of its own spreads
TOP_CELLS = 100  # cells kept per dimension or pair; the rest fold into one
RANKED = 10  # contributions listed
OTHER = "__other__"
SEPARATOR = "|"


@dataclass(frozen=True)
class Cell:
    """A value of one dimension, or of a pair of dimensions, over the incident's buckets."""

    where: tuple[tuple[str, str], ...]
    """(dimension, value) pairs; a folded rest has the value ``__other__``."""
    actual: float
    expected: float
    spread: float = 0.0
    """One robust standard deviation of ``actual`` around ``expected`` (0: unknown)."""

    @property
    def delta(self) -> float:
        return self.actual - self.expected

    @property
    def change(self) -> float | None:
        """Relative change, ``(actual - expected) / expected``; None at an expected 0."""
        return self.delta / abs(self.expected) if self.expected else None

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(d for d, _ in self.where)

    def label(self, *, named: bool = True) -> str:
        """``country=DE, platform=ios``, or ``DE`` with ``named=False``."""
        if named:
            return ", ".join(f"{d}={v}" for d, v in self.where)
        return " / ".join(v for _, v in self.where)


@dataclass(frozen=True)
class Contribution:
    cell: Cell
    share: float
    """The cell's part of the total's deviation: 1.0 is all of it, negative is against it."""

    def to_json(self) -> dict[str, Any]:
        return {
            "where": dict(self.cell.where),
            "actual": self.cell.actual,
            "expected": self.cell.expected,
            "change": self.cell.change,
            "spread": self.cell.spread,
            "share": self.share,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Contribution:
        where = tuple((str(d), str(v)) for d, v in dict(data["where"]).items())
        cell = Cell(where, float(data["actual"]), float(data["expected"]), float(data["spread"]))
        return cls(cell, float(data["share"]))


@dataclass(frozen=True)
class Explanation:
    """Where a deviation came from."""

    kind: Kind
    actual: float
    expected: float
    culprits: tuple[Contribution, ...] = ()
    """The cells named: the explanation (``one``, ``few``) or the movers of a mix shift."""
    ranked: tuple[Contribution, ...] = ()
    """The culprits first, then the other cells by impact on the total, ``RANKED`` at most."""
    named: bool = True
    """Labels name their dimension (more than one dimension), else only the value."""
    buckets: int = 1
    since: str = ""
    until: str = ""
    """The incident's first and last bucket (ISO), when known."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def change(self) -> float | None:
        return (self.actual - self.expected) / abs(self.expected) if self.expected else None

    def text(self, subject: str) -> str:
        """One sentence: ``DE -61% explains 87% of the drop in revenue``."""
        word = "drop" if self.actual < self.expected else "rise"
        if self.kind in ("one", "few"):
            parts = [
                f"{c.cell.label(named=self.named)} {_pct(c.cell.change)}" for c in self.culprits
            ]
            share = sum(c.share for c in self.culprits)
            verb = "explains" if len(parts) == 1 else "explain"
            return f"{', '.join(parts)} {verb} {share * 100:.0f}% of the {word} in {subject}"
        if self.kind == "broad":
            return (
                f"broad-based: {subject} moved {_pct(self.change)} with every segment alike; "
                "no segment explains it"
            )
        if self.kind == "mix":
            movers = ", ".join(
                f"{c.cell.label(named=self.named)} {_pct(c.cell.change)}" for c in self.culprits
            )
            return f"mix shift: {subject} held ({_pct(self.change)}) while shares moved: {movers}"
        return f"no segment of {subject} moved beyond its noise"

    def to_json(self, subject: str) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "text": self.text(subject),
            "actual": self.actual,
            "expected": self.expected,
            "change": self.change,
            "buckets": self.buckets,
            "since": self.since,
            "until": self.until,
            "culprits": [c.to_json() for c in self.culprits],
            "contributions": [c.to_json() for c in self.ranked],
        }


def _pct(change: float | None) -> str:
    return "n/a" if change is None else f"{change * 100:+.0f}%"


def cells_from_segments(
    segments: Mapping[str, tuple[float, float, float]],
    dimensions: Sequence[str],
    top: int = TOP_CELLS,
) -> dict[tuple[str, ...], list[Cell]]:
    """Per dimension and per pair of dimensions, its cells, from the segments' (actual,
    expected, spread): values added up, spreads in quadrature. A segment whose name does not
    split into one value per dimension (the folded ``__other__``, a value holding ``|``) is the
    rest of every dimension. At most ``top`` cells each, the largest deviations; the rest
    folded into one ``__other__`` cell."""
    if not dimensions:
        return {}
    sets: list[tuple[int, ...]] = [(i,) for i in range(len(dimensions))]
    sets += list(combinations(range(len(dimensions)), 2))
    out: dict[tuple[str, ...], list[Cell]] = {}
    split = {
        name: (
            tuple(name.split(SEPARATOR)) if len(dimensions) > 1 else (name,)
        )
        for name in segments
    }
    for chosen in sets:
        sums: dict[tuple[str, ...], list[float]] = {}
        for name, (actual, expected, spread) in segments.items():
            values = split[name]
            if len(values) != len(dimensions) or name == OTHER:
                key = tuple(OTHER for _ in chosen)
            else:
                key = tuple(values[i] for i in chosen)
            acc = sums.setdefault(key, [0.0, 0.0, 0.0])
            acc[0] += actual
            acc[1] += expected
            acc[2] += spread * spread
        names = tuple(dimensions[i] for i in chosen)
        cells = [
            Cell(tuple(zip(names, key, strict=True)), a, e, math.sqrt(s2))
            for key, (a, e, s2) in sums.items()
        ]
        out[names] = fold(cells, top)
    return out


def fold(cells: list[Cell], top: int) -> list[Cell]:
    """The ``top`` cells of largest deviation, and the rest added into one ``__other__``."""
    if len(cells) <= top:
        return cells
    cells = sorted(cells, key=lambda c: -abs(c.delta))
    kept, rest = cells[: top - 1], cells[top - 1 :]
    where = tuple((d, OTHER) for d in rest[0].dimensions)
    other = Cell(
        where,
        sum(c.actual for c in rest),
        sum(c.expected for c in rest),
        math.sqrt(sum(c.spread**2 for c in rest)),
    )
    return [*kept, other]


def explain(
    sets: Mapping[tuple[str, ...], Sequence[Cell]],
    total_spread: float = 0.0,
) -> Explanation:
    """Name what explains the deviation of the total whose cells, per dimension and pair, are
    ``sets`` (see :func:`cells_from_segments`). ``total_spread``: one robust standard deviation
    of the total over the incident's buckets (0: the cells' own, in quadrature)."""
    named = any(len(dims) > 1 for dims in sets) or len(sets) > 1
    singles = [list(cells) for dims, cells in sets.items() if len(dims) == 1 and cells]
    if not singles:
        return Explanation("none", 0.0, 0.0, named=named)
    first = singles[0]
    actual = sum(c.actual for c in first)
    expected = sum(c.expected for c in first)
    delta = actual - expected
    spread = total_spread or math.sqrt(sum(c.spread**2 for c in first))
    held = spread > 0 and abs(delta) < HOLD * spread
    if held:
        movers = _mix(singles)
        if movers:
            culprits = tuple(Contribution(c, _share(c, delta)) for c in movers)
            return Explanation("mix", actual, expected, culprits, culprits, named=named)
    if delta == 0:
        return Explanation("none", actual, expected, named=named)
    best: tuple[tuple[float, float], list[Cell]] | None = None
    for cells in sets.values():
        found = _culprits(list(cells), delta, MOVED if held else HOLD)
        if found is not None and (best is None or found[0] < best[0]):
            best = found
    every = [c for cells in sets.values() for c in cells if c.where[0][1] != OTHER]
    if best is None and held:  # a small segment may still explain a small move, else nothing
        return Explanation("none", actual, expected, named=named)
    if best is None:
        ranked = sorted(every, key=lambda c: -_share(c, delta))[:RANKED]
        contributions = tuple(Contribution(c, _share(c, delta)) for c in ranked)
        return Explanation("broad", actual, expected, (), contributions, named=named)
    named_cells = best[1]
    culprits = tuple(Contribution(c, _share(c, delta)) for c in named_cells)
    others = sorted(
        (c for c in every if c not in named_cells), key=lambda c: -_share(c, delta)
    )[: max(RANKED - len(culprits), 0)]
    ranked_all = culprits + tuple(Contribution(c, _share(c, delta)) for c in others)
    kind: Kind = "one" if len(culprits) == 1 else "few"
    return Explanation(kind, actual, expected, culprits, ranked_all, named=named)


def _share(cell: Cell, delta: float) -> float:
    return cell.delta / delta if delta else 0.0


def _culprits(
    cells: list[Cell], delta: float, least: float
) -> tuple[tuple[float, float], list[Cell]] | None:
    """The fewest cells of one dimension (or pair) that carry ``COVERAGE`` of the deviation,
    moved beyond ``least`` of their spread, and moved, relatively, more than everything else;
    with the sort key (cells, -their change). A folded rest is never named."""
    candidates = sorted(
        (c for c in cells if c.where[0][1] != OTHER), key=lambda c: -_share(c, delta)
    )
    total_actual = sum(c.actual for c in cells)
    total_expected = sum(c.expected for c in cells)
    for k in range(1, min(MAX_CULPRITS, len(candidates)) + 1):
        chosen = candidates[:k]
        if any(_share(c, delta) <= 0 for c in chosen):
            return None
        covered = sum(_share(c, delta) for c in chosen)
        if covered < COVERAGE:
            continue
        expected_in = sum(c.expected for c in chosen)
        moved_in = sum(c.delta for c in chosen)
        noise_in = math.sqrt(sum(c.spread**2 for c in chosen))
        if abs(moved_in) < least * noise_in:
            return None
        rest_expected = total_expected - expected_in
        rest_moved = (total_actual - total_expected) - moved_in
        change_in = moved_in / expected_in if expected_in > 0 else math.inf
        change_rest = rest_moved / rest_expected if rest_expected > 0 else 0.0
        # everything else moved the same way by at least half as much: not these cells' doing
        if change_rest * math.copysign(1.0, delta) > CONCENTRATION * abs(change_in):
            return None
        return (float(k), -abs(change_in)), chosen
    return None


def _mix(singles: list[list[Cell]]) -> list[Cell]:
    """The cells of the dimension whose shares moved most, when some moved each way beyond
    noise: the largest mover each way first, then the others by size of move."""
    best: list[Cell] = []
    best_gross = 0.0
    for cells in singles:
        moved = [c for c in cells if c.spread > 0 and abs(c.delta) >= MOVED * c.spread]
        if not any(c.delta > 0 for c in moved) or not any(c.delta < 0 for c in moved):
            continue
        gross = sum(abs(c.delta) for c in moved)
        if gross > best_gross:
            best, best_gross = sorted(moved, key=lambda c: -abs(c.delta))[:MAX_CULPRITS + 1], gross
    return best
