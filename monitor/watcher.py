"""Deployment watches: record a deployment, watch what it touched, reach and report a verdict.

The pure rules live in :mod:`monitor.deployments`; the state store keeps the watches (so a
restart mid-window keeps them). ``DeploymentWatcher`` is what the daemon, the API and the
scheduler talk to; it composes the recording (:mod:`monitor.recorder`: the manifest, the
schemas before and after, the baselines of intended changes) and the watches in memory with
their verdicts' reports (:mod:`monitor.watches`), and itself judges the watched checks' runs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from monitor.alerts.notification import Notification
from monitor.config import CheckConfig, Config
from monitor.deployments import (
    Deployment,
    DeploymentRequest,
    Deviation,
    describe_cause,
    finish_if_due,
    likely_cause,
    onset_after,
    record_deviation,
    record_evidence,
)
from monitor.engine import Engine, RunResult
from monitor.exporter import Metrics
from monitor.recorder import DeploymentRecorder
from monitor.store import StateStore
from monitor.watches import DeploymentConflict, Watches

__all__ = ["DeploymentConflict", "DeploymentWatcher", "judging_lag"]


def judging_lag(check: CheckConfig) -> timedelta:
    """How long after a bucket starts it is judged: its length plus ``settle`` (a freshness
    check judges every run, to the minute)."""
    if check.kind == "freshness":
        return timedelta(minutes=1)
    return timedelta(seconds=check.bucket_seconds) + check.settle


class DeploymentWatcher:
    """Owns the verdict of each deployment watched: a watched check's alert, or its series
    breaking from the expected level after the deployment (the sequential test), fails it; its
    windows ending quietly pass it. Recording and the watches in memory are its parts."""

    def __init__(
        self,
        config: Config,
        store: StateStore,
        engine: Engine,
        metrics: Metrics,
        *,
        channels: list[str],
        clock: Callable[[], datetime],
        annotate: Callable[[Deployment], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.engine = engine
        self.clock = clock
        self._watches = Watches(store, metrics, channels)
        self._recorder = DeploymentRecorder(
            config, store, engine, metrics, self._watches, clock, annotate
        )
        self._longest_window = max(c.post_deploy_window for c in config.checks)

    def reconfigure(self, config: Config, engine: Engine, channels: list[str]) -> None:
        """Follow a reloaded config: watches in progress go on; a watched check that was
        removed is no longer run (its window ends as it would)."""
        self.config, self.engine, self._watches.channels = config, engine, channels
        self._recorder.config, self._recorder.engine = config, engine
        self._longest_window = max(c.post_deploy_window for c in config.checks)

    # --- queries ----------------------------------------------------------------------------

    def active(self) -> list[Deployment]:
        return self._watches.active()

    def refresh(self) -> list[Deployment]:
        """Replicas: follow the deployments recorded or decided through another replica; the
        ones to watch here too (each replica runs the watched checks it holds)."""
        return self._watches.refresh()

    def get(self, deployment_id: str) -> Deployment | None:
        return self._watches.get(deployment_id)

    def cause(self, check: CheckConfig, since: datetime, now: datetime) -> str | None:
        """The likely-cause line for an alert on ``check`` whose deviation began at ``since``."""
        recent = [
            Deployment.from_json(doc)
            for doc in self.store.deployments.documents(
                since=now - self._longest_window - judging_lag(check)
            )
        ]
        found = likely_cause(recent, check.name, since, judging_lag(check), now)
        return describe_cause(found, since) if found else None

    # --- recording: see ``DeploymentRecorder`` ----------------------------------------------

    def record(self, request: DeploymentRequest) -> Deployment:
        """Record a deployment and start watching what it touched: see
        ``DeploymentRecorder.record`` (what is saved with it, what it raises)."""
        return self._recorder.record(request)

    def snapshot_schemas(self) -> None:
        """Remember the columns of every checked table not seen yet: see
        ``DeploymentRecorder.snapshot_schemas``."""
        self._recorder.snapshot_schemas()

    # --- watching ------------------------------------------------------------------------------

    def observe(self, result: RunResult) -> None:
        """Engine hook: a watched check's series that broke from its expected level after the
        deployment (the sequential test), or an alert opened on it, fails its deployment."""
        check = self.config.check(result.check)
        if check is None:
            return
        now = self.clock()
        # an alert is the verdict with the most to say; the test then catches what it missed
        for note in (n for n in result.notifications if n.kind == "opened"):
            for deployment in self.active():
                self._deviation(deployment, check, note, now)
        if result.verdicts:
            for deployment in self.active():
                self._test(deployment, check, result, now)

    def _test(
        self, deployment: Deployment, check: CheckConfig, result: RunResult, now: datetime
    ) -> None:
        watched = deployment.watched(check.name)
        if watched is None or watched.intended or now > watched.until:
            return
        lag = judging_lag(check)
        # a series whose incident was under way before the deployment is not its doing
        tested = {
            segment: verdicts
            for segment, verdicts in result.verdicts.items()
            if not self._under_way(deployment, check, segment, lag)
        }
        self._watches.change(
            deployment.id, lambda current: record_evidence(current, check, tested, lag, now)
        )

    def _under_way(
        self, deployment: Deployment, check: CheckConfig, segment: str, lag: timedelta
    ) -> bool:
        state = self.engine.alert_state(check.name, segment)
        return (
            state.firing
            and state.since is not None
            and not onset_after(deployment, state.since, lag)
        )

    def _deviation(
        self, deployment: Deployment, check: CheckConfig, note: Notification, now: datetime
    ) -> None:
        watched = deployment.watched(check.name)
        if watched is None or now > watched.until:
            return
        if not onset_after(deployment, note.since, judging_lag(check)):
            return
        deviation = Deviation(
            note.check,
            note.segment,
            note.value,
            note.expected,
            note.score,
            note.since,
            watched.intended,
            note.explanation,
        )
        self._watches.change(deployment.id, lambda d: record_deviation(d, deviation, now))

    def tick(self, deployment_id: str) -> None:
        """Pass the deployment if its windows all ended quietly."""
        if self._watches.watching(deployment_id):
            self._watches.change(deployment_id, lambda d: finish_if_due(d, self.clock()))
