"""The per-series model: buffers and state around the kernel, in the API the engine, ``backtest``
and the pages use."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from monitor.detection import dates, kernel
from monitor.detection.episodes import BOTH, DOWN, UP
from monitor.detection.forecasters import FORECASTERS
from monitor.detection.geometry import Geometry, geometry
from monitor.detection.marks import REGULAR, Mark, MarkArrays
from monitor.detection.scales import shift_for
from monitor.detection.spec import DetectorSpec
from monitor.detection.state import NO_INDEX, new_state
from monitor.detection.timeindex import LocalClock, as_utc, as_utc_index
from monitor.detection.verdict import Verdict

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SCALES = {0.0: "log1p", 0.5: "sqrt", 1.0: "as is"}
_DIRECTIONS = {"both": BOTH, "up": UP, "down": DOWN}
# state a rebuild carries over: what was decided, and the judged run
_CARRIED = ("level_from", "next_scale", "integer", "counts", "nonnegative", "scale_locked",
            "learned", "run", "sign", "evidence", "quiet_until", "quiet_start_ns",
            "counted_ns")  # fmt: skip


class Detector:
    """Stateful per-series model. Causal: ``step(t)`` judges t with what was learned before t,
    then learns it; ``warm`` learns a block of history the same way (it runs the same loop).

    >>> detector = Detector(DetectorSpec(3600))
    >>> detector.warm(history.index, history.to_numpy())         # doctest: +SKIP
    >>> verdict = detector.step(bucket, value)                     # doctest: +SKIP

    :raises ValueError: from ``warm`` and ``step`` for buckets not after everything learned.
    """

    def __init__(self, spec: DetectorSpec) -> None:
        self.spec = spec
        self._geo: Geometry = geometry(spec)
        self._geo_array = self._geo.as_array()
        self._clock = LocalClock(spec.bucket_seconds, spec.timezone)
        self._judging = np.array(
            [
                spec.sensitivity,
                spec.quiet_factor,
                _DIRECTIONS[spec.direction],
                spec.min_relative_change,
                spec.min_absolute_change,
            ]
        )
        self._spans = np.array(self._geo.spans, dtype=np.int64)
        self._last_ns: int | None = None
        self._last: Verdict | None = None  # the newest stepped verdict (a repeated DST hour)
        locked = spec.counts is False
        self._reset(1.0 if locked else 0.0, locked)

    def _reset(self, lam: float, locked: bool) -> None:
        g = self._geo
        integer = self.spec.counts is not False
        counts = {True: 1, None: 0, False: -1}[self.spec.counts]
        self._state = new_state(lam, shift_for(lam, integer), locked, counts)
        self._x = np.full(g.long_ring, np.nan)
        self._shapes = np.full(g.long_ring, np.nan)
        self._rings = np.full((kernel.RINGS, g.short_ring), np.nan)
        # the level's sorted windows, then each period's level window (forecasters.LEVEL_LONG..)
        self._windows = np.empty((4, max(g.level_window, g.week, g.day) + 1))
        self._counts = np.zeros(4, dtype=np.int64)
        self._hw_day = np.zeros(max(g.day, 1))
        self._hw_week = np.zeros(max(g.week, 1))
        self._slot_sigma = np.full(max(g.day, 1), np.nan)
        self._scales = np.full(len(g.spans), np.nan)
        self._dated = np.full(g.long_ring if g.dated else 1, np.nan)
        self._dated_table = np.zeros((3, dates.KINDS))

    # ----------------------------------------------------------------- what it knows
    @property
    def history_size(self) -> int:
        """Buckets learned so far (gaps excluded)."""
        return int(self._state[0]["learned"])

    @property
    def scale(self) -> str:
        """The scale the series is modelled in: ``log1p``, ``sqrt`` or ``as is``."""
        return SCALES[float(self._state[0]["lam"])]

    @property
    def forecaster(self) -> str:
        """The forecaster the series is judged against (``seasonal`` until calibrated)."""
        return FORECASTERS[int(self._state[0]["chosen"])]

    @property
    def date_effect(self) -> str:
        """The effect of the date beyond the week the series is forecast with (daily grain,
        chosen by a blind test): ``none``, ``day of month``, ``month end``, ``business day`` or
        ``yearly``."""
        return dates.NAMES[int(self._state[0]["dated_kind"])]

    @property
    def nbytes(self) -> int:
        """Memory the model keeps: its buffers and state."""
        arrays = (self._state, self._x, self._shapes, self._rings, self._windows, self._counts,
                  self._hw_day, self._hw_week, self._slot_sigma, self._scales, self._dated,
                  self._dated_table)  # fmt: skip
        return sum(a.nbytes for a in arrays)

    @property
    def quiet_start(self) -> pd.Timestamp | None:
        """The bucket whose verdict started the latest quiet period (None before any). With the
        alert state's anomalous run, it is what :meth:`resume` needs after a restart."""
        ns = int(self._state[0]["quiet_start_ns"])
        return None if ns == NO_INDEX else pd.Timestamp(ns, tz="UTC")

    # ----------------------------------------------------------------- learning and judging
    def warm(
        self,
        buckets: pd.DatetimeIndex,
        values: npt.ArrayLike,
        *,
        judge_last: int = 0,
        marks: Sequence[Mark] | None = None,
    ) -> list[Verdict]:
        """Learn a block of history (sorted, complete buckets after everything learned; NaN
        values are gaps), judging its last ``judge_last`` buckets as ``step`` would; returns
        their verdicts. Judging costs a calibration a day, so judge only what will be read.
        ``marks``, one per bucket, say what the calendar knows of each (see :class:`Mark`)."""
        vals = np.asarray(values, dtype=np.float64).ravel()
        if len(buckets) != vals.size:
            raise ValueError(f"{len(buckets)} buckets but {vals.size} values")
        told = MarkArrays.of(marks, vals.size)
        if vals.size == 0:
            return []
        utc = as_utc_index(buckets)
        stamps = utc.as_unit("ns").asi8
        if not (stamps[1:] > stamps[:-1]).all():
            raise ValueError("warm() needs strictly increasing buckets")
        if self._last_ns is not None and int(stamps[0]) <= self._last_ns:
            raise ValueError("warm() buckets must come after everything already learned")
        self._last_ns = int(stamps[-1])
        index = self._clock.indices(utc)
        judge = np.zeros(vals.size, dtype=np.bool_)
        if judge_last > 0:
            judge[-judge_last:] = True
        judge &= told.judge
        # gaps and a repeated local hour (DST fall-back) are not learned, as in step(); a
        # bucket neither judged nor learned is not run at all
        newest = int(self._state[0]["newest"])
        previous = np.concatenate(([newest], index[:-1]))
        keep = np.isfinite(vals) & (index > previous) & (index > newest) & (judge | told.learn)
        out = self._feed(index[keep], vals[keep], stamps[keep], judge[keep], told[keep])
        if judge_last <= 0:
            return []
        rows = np.full((vals.size, kernel.OUT_COLUMNS), np.nan)
        rows[keep] = out
        rows[~keep, kernel.OUT_JUDGED] = 0.0
        first = vals.size - min(judge_last, vals.size)
        return [self._verdict(utc[i], float(vals[i]), rows[i]) for i in range(first, vals.size)]

    def step(self, bucket: pd.Timestamp, value: float, mark: Mark = REGULAR) -> Verdict:
        """Judge one new complete bucket (strictly after everything learned), then learn it,
        as its ``mark`` says. Gaps are allowed; a NaN value gets no baseline and is not
        learned."""
        ts = as_utc(bucket)
        if self._last_ns is not None and ts.value <= self._last_ns:
            last = pd.Timestamp(self._last_ns, tz="UTC")
            raise ValueError(f"step({ts}) is not after the last learned bucket {last}")
        self._last_ns = ts.value
        v = float(value)
        if not math.isfinite(v) or not (mark.judge or mark.learn):
            return Verdict.unjudged(ts, v)
        index = self._clock.index(ts)
        newest = int(self._state[0]["newest"])
        if newest != NO_INDEX and index <= newest:
            return self._repeated(ts, v)  # DST fall-back: the local hour repeats
        out = self._feed(
            np.array([index], dtype=np.int64), np.array([v]), np.array([ts.value]),
            np.array([mark.judge]), MarkArrays.of([mark], 1),
        )  # fmt: skip
        self._last = self._verdict(ts, v, out[0])
        return self._last

    @property
    def hold(self) -> tuple[int, float]:
        """The direction of the latest anomalous run while the series holds away (0: none) and
        the evidence it still does, in robust spreads: what :meth:`resume` carries over."""
        s = self._state[0]
        sign = int(s["sign"])
        return (sign, float(s["evidence"])) if sign != 0 else (0, 0.0)

    def resume(
        self,
        run: int,
        quiet_start: pd.Timestamp | None,
        judged: pd.Timestamp,
        hold: tuple[int, float] = (0, 0.0),
    ) -> None:
        """Carry on from an earlier detector of this series (the daemon restarted): ``run`` is
        the anomalous run the alert state counted up to the bucket ``judged`` (verdicts up to it,
        stepped again, do not count twice), ``quiet_start`` and ``hold`` that detector's
        :attr:`quiet_start` and :attr:`hold`, so the aftermath of an incident is not judged a
        new one and an incident under way is not resolved by a restart."""
        s = self._state[0]
        s["run"] = max(run, 0)
        s["sign"], s["evidence"] = hold
        s["counted_ns"] = as_utc(judged).value
        if quiet_start is not None:
            start = as_utc(quiet_start)
            s["quiet_start_ns"] = start.value
            s["quiet_until"] = self._clock.index(start) + self._geo.quiet_span

    def acknowledge(self, since: pd.Timestamp | None = None) -> None:
        """Accept the level from ``since`` on (default: the newest learned bucket) as normal: an
        intended change. The level learns only from there, and the model is rebuilt from its
        buffer so the residuals since then follow the new rule."""
        s = self._state[0]
        newest = int(s["newest"])
        s["level_from"] = self._clock.index(as_utc(since)) if since is not None else newest
        if newest != NO_INDEX:
            self._rebuild(float(s["lam"]))

    # ----------------------------------------------------------------- internals
    def _feed(
        self,
        index: IntArray,
        values: FloatArray,
        stamps: IntArray,
        judge: npt.NDArray[np.bool_],
        marks: MarkArrays,
    ) -> FloatArray:
        out = np.zeros((index.size, kernel.OUT_COLUMNS))
        done = 0
        while done < index.size:
            rest = slice(done, None)
            done += self._run(
                index[rest], values[rest], stamps[rest], judge[rest], marks[rest], out[rest]
            )
            rebuild = float(self._state[0]["rebuild"])
            if rebuild == rebuild:
                self._rebuild(rebuild)
        return out

    def _run(
        self,
        index: IntArray,
        values: FloatArray,
        stamps: IntArray,
        judge: npt.NDArray[np.bool_],
        marks: MarkArrays,
        out: FloatArray,
    ) -> int:
        """The kernel over these buckets, with this model's buffers."""
        return kernel.run(
            self._state, self._geo_array, self._judging, self._rings, self._shapes, self._x,
            self._windows, self._counts, self._hw_day, self._hw_week, self._slot_sigma,
            self._spans, self._scales, self._dated, self._dated_table, index, values, stamps,
            judge, marks.learn, marks.widen,
            marks.expected, out,
        )  # fmt: skip

    def _rebuild(self, lam: float) -> None:
        """Learn the buffered history again in scale ``lam`` (what was decided carries over)."""
        old = self._state[0].copy()
        first, newest = int(old["first"]), int(old["newest"])
        index = np.arange(max(first, newest - self._geo.long_ring + 1), newest + 1)
        values = self._x[index & (self._geo.long_ring - 1)]
        known = np.isfinite(values)
        self._reset(lam, bool(old["scale_locked"]))
        s = self._state[0]
        for name in _CARRIED:
            s[name] = old[name]
        s["learned"] = 0
        s["shift"] = shift_for(lam, bool(old["integer"]))
        n = int(known.sum())
        self._run(
            index[known],
            values[known],
            np.zeros(n, dtype=np.int64),
            np.zeros(n, dtype=np.bool_),
            MarkArrays.of(None, n),
            np.zeros((n, kernel.OUT_COLUMNS)),
        )
        s["learned"] = old["learned"]
        s["rebuild"] = np.nan

    def _verdict(self, ts: pd.Timestamp, value: float, row: FloatArray) -> Verdict:
        if row[kernel.OUT_JUDGED] == 0:
            return Verdict.unjudged(ts, value)
        return Verdict(
            ts, value, float(row[kernel.OUT_EXPECTED]), float(row[kernel.OUT_LOWER]),
            float(row[kernel.OUT_UPPER]), float(row[kernel.OUT_SCORE]),
            bool(row[kernel.OUT_ANOMALOUS]), float(row[kernel.OUT_SUSTAINED]),
            int(row[kernel.OUT_SPAN]), bool(row[kernel.OUT_HOLDING]),
        )  # fmt: skip

    def _repeated(self, ts: pd.Timestamp, value: float) -> Verdict:
        """A repeated local hour, judged against the band of the hour it repeats, not learned."""
        last = self._last
        if last is None or last.expected is None or last.lower is None or last.upper is None:
            return Verdict.unjudged(ts, value)
        direction = self.spec.direction
        up = value > last.upper and direction != "down"
        down = value < last.lower and direction != "up"
        edge = last.upper if value >= last.expected else last.lower
        width = abs(edge - last.expected)
        score = self.spec.sensitivity * (value - last.expected) / width if width > 0 else 0.0
        return Verdict(ts, value, last.expected, last.lower, last.upper, score, up or down,
                       span=1 if up or down else 0)  # fmt: skip
