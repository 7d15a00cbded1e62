"""Detection: a causal model per series that says, for each new complete bucket, what was
expected, the band outside which it is anomalous, and how far it strayed.

The flow inside, one module a concept: ``spec`` (what the detector is told) -> ``geometry``
(periods and windows in buckets) -> ``scales`` (the series' scale, chosen by a blind test) ->
``forecasters`` (seasonal, smoothing, fast) -> ``scoring`` (which forecaster, how wide the
band) -> ``episodes`` (sustained deviations, quiet periods, holding) -> ``verdict``. ``kernel``
runs them bucket by bucket (numba), ``detector`` holds one series' buffers around it; a
``Mark`` carries what the calendar knows of a bucket (holiday, event, exclusion) into it.
"""

from monitor.detection.compiled import configure

configure()  # before any kernel module is imported (they compile with numba's cache)

from monitor.detection.detector import Detector  # noqa: E402
from monitor.detection.marks import REGULAR, Mark  # noqa: E402
from monitor.detection.spec import DetectorSpec, Direction  # noqa: E402
from monitor.detection.verdict import Verdict  # noqa: E402

__all__ = ["REGULAR", "Detector", "DetectorSpec", "Direction", "Mark", "Verdict"]
