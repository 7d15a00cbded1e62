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
from dataclasses import dataclass, replace
from itertools import combinations
from typing import Any, Literal

Kind = Literal["one", "few", "broad", "mix", "none"]

COVERAGE = 0.5  # share of the deviation the named cells must carry together
CONCENTRATION = 0.5  # everything else moved at most this fraction as much, relatively
MAX_CULPRITS = 3  # more cells than this is no explanation: it is broad
SPECIFIC = 0.3  # the named cells' own move (beyond the common one) carries this much of it
SECOND = 0.1  # a second cause carries at least this share of the deviation
MEDIAN_OF = 5  # values a dimension needs for its median change to be the common move
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
    """The culprits first, then the other cells by their impact beyond their size (cells within
    a culprit, or holding one, left out), ``RANKED`` at most."""
    named: bool = True
    """Labels name their dimension (more than one dimension), else only the value."""
    buckets: int = 1
    since: str = ""
    until: str = ""
    """The incident's first and last bucket (ISO), when known."""
    segments: tuple[str, ...] = ()
    """The segments (series) that moved most the total's way, for the chart beside it."""
    held: bool = False
    """The total stayed within its noise: the culprit moved, the total hardly did."""

    @property
    def change(self) -> float | None:
        return (self.actual - self.expected) / abs(self.expected) if self.expected else None

    def text(self, subject: str) -> str:
        """One sentence: ``DE -61% explains 87% of the drop in revenue``."""
        word = "drop" if self.actual < self.expected else "rise"
        if self.kind in ("one", "few") and self.held:
            moved = ", ".join(
                f"{c.cell.label(named=self.named)} {_pct(c.cell.change)}" for c in self.culprits
            )
            return f"{moved} moved beyond its noise; {subject} itself held ({_pct(self.change)})"
        if self.kind in ("one", "few"):
            parts = [
                f"{c.cell.label(named=self.named)} {_pct(c.cell.change)}" for c in self.culprits
            ]
            share = sum(c.share for c in self.culprits)
            verb = "explains" if len(parts) == 1 else "explain"
            if share > 1.0:  # the others moved the other way a little
                return (
                    f"{', '.join(parts)} {verb} all of the {word} in {subject} "
                    f"({share * 100:.0f}%)"
                )
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
    # what moved every cell alike (the day's mood, or a broad move) is taken out before looking
    # for the cells that moved on their own
    common = _common_change(sets)
    rebased = {
        dims: [replace(c, expected=c.expected * (1 + common)) for c in cells]
        for dims, cells in sets.items()
    }
    raw = {c.where: c for cells in sets.values() for c in cells}
    residual = sum(c.delta for c in rebased[next(d for d in sets if len(d) == 1)])
    if held:
        movers = _mix([cells for dims, cells in rebased.items() if len(dims) == 1])
        if movers:
            culprits = tuple(
                Contribution(raw[c.where], _share(raw[c.where], delta)) for c in movers
            )
            return Explanation("mix", actual, expected, culprits, culprits, named=named)
    if delta == 0:
        return Explanation("none", actual, expected, named=named)
    if held:
        # the total hardly moved: the cell that moved most beyond its own noise, if any did
        found = [[c] for c in (_outlier(cells) for cells in rebased.values()) if c is not None]
    else:
        found = [
            c
            for c in (_culprits(cells, residual, HOLD) for cells in rebased.values())
            if c and abs(sum(x.delta for x in c)) >= SPECIFIC * abs(delta)
        ]
    every = [c for cells in sets.values() for c in cells if c.where[0][1] != OTHER]

    def surprise(cell: Cell) -> float:
        # impact beyond the cell's size: a large cell that moved with the rest is no news
        return _share(cell, delta) - (cell.expected / expected if expected else 0.0)

    if not found:
        if held:  # a small segment may still explain a small move, else nothing
            return Explanation("none", actual, expected, named=named)
        ranked = sorted(every, key=lambda c: -_share(c, delta))[:RANKED]
        contributions = tuple(Contribution(c, _share(c, delta)) for c in ranked)
        return Explanation("broad", actual, expected, (), contributions, named=named)
    named_cells = [raw[c.where] for c in _sharpest(found)]
    culprits = tuple(
        sorted((Contribution(c, _share(c, delta)) for c in named_cells), key=lambda c: -c.share)
    )
    def overlaps(cell: Cell) -> bool:
        # Germany on iOS says nothing new once Germany is named, nor Germany once it is
        return any(set(cell.where) <= set(n.where) or set(n.where) <= set(cell.where)
                   for n in named_cells)  # fmt: skip

    others = sorted((c for c in every if not overlaps(c)), key=lambda c: -surprise(c))
    ranked_all = culprits + tuple(
        Contribution(c, _share(c, delta)) for c in others[: max(RANKED - len(culprits), 0)]
    )
    kind: Kind = "one" if len(culprits) == 1 else "few"
    return Explanation(kind, actual, expected, culprits, ranked_all, named=named, held=held)


def _common_change(sets: Mapping[tuple[str, ...], Sequence[Cell]]) -> float:
    """The relative change every cell moved by: per dimension, the median of its values'
    changes, each value counted once whatever its size (a large value that moved alone is one
    value of many), values too small to tell (noise over half their value) left out; of those,
    the smallest. A cause in one dimension is spread over every value of the others, so its own
    dimension's median is the one that shows what moved everything; 0 when no dimension has
    ``MEDIAN_OF`` values to tell (of two values, one falling alone is no common move)."""
    medians = []
    for dims, cells in sets.items():
        changes = sorted(
            c.delta / c.expected
            for c in cells
            if c.expected > 0 and c.where[0][1] != OTHER and c.spread < c.expected / 2
        )
        if len(dims) != 1 or len(changes) < MEDIAN_OF:
            continue
        middle = len(changes) // 2
        odd = len(changes) % 2
        medians.append(changes[middle] if odd else (changes[middle - 1] + changes[middle]) / 2)
    return max(min(medians, key=abs), -1.0) if medians else 0.0


def _share(cell: Cell, delta: float) -> float:
    return cell.delta / delta if delta else 0.0


def _change(cells: Sequence[Cell]) -> float:
    expected = sum(c.expected for c in cells)
    return sum(c.delta for c in cells) / expected if expected > 0 else math.inf


def _sharpest(found: list[list[Cell]]) -> list[Cell]:
    """Of the explanations of several dimensions and pairs, the one needing the fewest cells,
    then the one of fewest dimensions: a pair wins over its dimension only when the rest of
    that dimension's cells (Germany's other platforms) did not move with it."""
    found = sorted(found, key=lambda cells: (len(cells), len(cells[0].where), -abs(_change(cells))))
    best = found[0]
    for other in found[1:]:
        if len(other) != len(best) or len(other[0].where) <= len(best[0].where):
            continue
        parent_expected = sum(c.expected for c in best)
        inner_expected = sum(c.expected for c in other)
        rest_expected = parent_expected - inner_expected
        inner = _change(other)
        if rest_expected <= 0 or inner_expected > parent_expected:
            continue
        rest = (sum(c.delta for c in best) - sum(c.delta for c in other)) / rest_expected
        if rest * math.copysign(1.0, inner) < CONCENTRATION * abs(inner):
            return other
    return best


def _culprits(cells: list[Cell], delta: float, least: float) -> list[Cell] | None:
    """The fewest cells of one dimension (or pair) that carry ``COVERAGE`` of the deviation,
    moved beyond ``least`` of their spread, and moved, relatively, more than everything else;
    then any other cell that moved as they did (a second cause). A folded rest is never
    named."""
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
        for cell in candidates[k:]:
            if len(chosen) == MAX_CULPRITS or _share(cell, delta) <= 0:
                break
            alike = cell.change is not None and abs(cell.change) >= CONCENTRATION * abs(change_in)
            large = _share(cell, delta) >= SECOND
            if alike and large and abs(cell.delta) >= least * cell.spread:
                chosen = [*chosen, cell]
        return chosen
    return None


def _outlier(cells: list[Cell]) -> Cell | None:
    """The cell that moved most, in its own spreads, if beyond ``MOVED`` of them."""
    moved = [c for c in cells if c.spread > 0 and c.where[0][1] != OTHER]
    if not moved:
        return None
    top = max(moved, key=lambda c: abs(c.delta) / c.spread)
    return top if abs(top.delta) >= MOVED * top.spread else None


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
