"""The schedule: one APScheduler job per check, plus the outbox's retry job and the table schema
snapshot.

One of several replicas (``shared``) schedules only the checks it holds leases on (``hold``,
``drop``, called by monitor/leases.py), and does the outbox, the Alertmanager re-sends, the
retention and the schema snapshots only while it holds the outbox's lease (``housekeeper``); a
"run now" for a check another replica holds is handed to that replica through the state store.

Jobs never overlap (``max_instances=1``), missed runs collapse into one (``coalesce``), and a run
that was due while the pool was busy still starts within the misfire grace time. A "run now"
for a check that is running is remembered and done right after, not dropped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from monitor.alerts.dispatch import Dispatcher
from monitor.config import CheckConfig, Config
from monitor.deployments import Deployment
from monitor.durations import is_cron, parse_duration
from monitor.engine import Engine
from monitor.errors import StateStoreError
from monitor.reload import ReloadBusy, ReloadPlan
from monitor.watcher import DeploymentWatcher

log = logging.getLogger("monitor.scheduler")

OUTBOX_JOB = "__outbox__"
WATCH_JOB = "watch:"
OUTBOX_INTERVAL_SECONDS = 10
RESEND_JOB = "__alertmanager_resend__"
SCHEMAS_JOB = "__schemas__"
SCHEMAS_INTERVAL_SECONDS = 900
PRUNE_JOB = "__prune__"
PRUNE_INTERVAL_SECONDS = 3600


def trigger_for(check: CheckConfig) -> BaseTrigger:
    if is_cron(check.schedule):
        return CronTrigger.from_crontab(check.schedule, timezone=check.timezone)
    return IntervalTrigger(seconds=parse_duration(check.schedule).total_seconds(), timezone=UTC)


class CheckScheduler:
    def __init__(
        self,
        config: Config,
        engine: Engine,
        dispatcher: Dispatcher,
        watcher: DeploymentWatcher,
        *,
        shared: bool = False,
        housekeeper: Callable[[], bool] = lambda: True,
    ) -> None:
        self.config = config
        self.shared = shared
        self.housekeeper = housekeeper
        self.engine = engine
        self.dispatcher = dispatcher
        self.watcher = watcher
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(config.scheduler.max_workers)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": int(config.scheduler.misfire_grace.total_seconds()),
            },
            timezone=UTC,
        )
        self._running: set[str] = set()
        self._rerun: set[str] = set()
        self._cond = threading.Condition()
        self._paused = False  # a config reload is swapping the engine: runs wait for it

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        now = datetime.now(UTC)
        for check in self.config.checks if not self.shared else []:
            self._schedule(check, now)
        # the daemon's own jobs: (what, every seconds, id, name, first run now rather than later)
        jobs: list[tuple[Callable[[], None], float, str, str, bool]] = [
            (self._deliver, OUTBOX_INTERVAL_SECONDS, OUTBOX_JOB, "outbox delivery", False),
            (self._snapshot_schemas, SCHEMAS_INTERVAL_SECONDS, SCHEMAS_JOB,
             "table schema snapshot", True),
            (self._prune, PRUNE_INTERVAL_SECONDS, PRUNE_JOB, "state store retention", True),
        ]  # fmt: skip
        if self.config.alertmanager is not None:
            every = self.config.alertmanager.resend_interval.total_seconds()
            jobs.append((self._resend, every, RESEND_JOB, "alertmanager re-send", False))
        for func, seconds, job_id, name, at_once in jobs:
            self._scheduler.add_job(
                func,
                IntervalTrigger(seconds=seconds),
                id=job_id,
                name=name,
                **({"next_run_time": now} if at_once else {}),
            )
        self._scheduler.start()
        for deployment in self.watcher.active():
            self.watch(deployment)
        log.info("scheduler started", extra={"fields": {"checks": len(self.config.checks)}})

    def _schedule(self, check: CheckConfig, now: datetime) -> None:
        self._scheduler.add_job(
            self._run_check,
            trigger_for(check),
            args=[check.name],
            id=check.name,
            name=f"check {check.name}",
            next_run_time=now,
            replace_existing=True,
        )

    def every(self, seconds: float, job: Callable[[], None], name: str) -> None:
        """Run ``job`` on the pool every ``seconds`` (from now on)."""
        self._scheduler.add_job(
            job, IntervalTrigger(seconds=seconds), id=f"__{name}__", name=name,
            next_run_time=datetime.now(UTC), replace_existing=True,
        )  # fmt: skip

    def hold(self, names: list[str]) -> None:
        """Replicas: run these checks from now on (this replica took their leases), at once."""
        now = datetime.now(UTC)
        for name in names:
            check = self.config.check(name)
            if check is not None:
                self._schedule(check, now)

    def drop(self, names: list[str]) -> None:
        """Replicas: stop scheduling these checks (their leases went to another replica); a run
        in progress finishes, and its writes are refused by the fencing of the store."""
        for name in names:
            with contextlib.suppress(JobLookupError):
                self._scheduler.remove_job(name)
            with self._cond:
                self._rerun.discard(name)

    def idle(self, name: str) -> bool:
        """Whether no run of the check is in progress (it can be handed over cleanly)."""
        with self._cond:
            return name not in self._running

    def run_now(self, name: str) -> None:
        """Run a check as soon as a worker is free (right after its current run, if any); a
        check another replica holds is run by that replica, within a lease renewal."""
        if self.config.check(name) is None:
            return  # removed by a reload (a deployment watch may still name it)
        if self.shared and not self.engine.holds(name):
            self.engine.store.runs.request(name)
            return
        with self._cond:
            if name in self._running:
                self._rerun.add(name)
                return
        self._scheduler.modify_job(name, next_run_time=datetime.now(UTC))

    def deliver_soon(self) -> None:
        """A delivery round now rather than at the next tick (an answer's Slack steps)."""
        if self._scheduler.running:
            self._scheduler.modify_job(OUTBOX_JOB, next_run_time=datetime.now(UTC))

    def watch(self, deployment: Deployment) -> None:
        """Run the deployment's checks now and every post_deploy_interval while their windows
        last; the tick after the last window ends lets the watcher pass the deployment.

        The job is never removed from inside a run (APScheduler 3 fails when a job removes
        itself): it ends by its end_date and does nothing once the deployment has a verdict.
        """
        now = datetime.now(UTC)
        if deployment.status != "watching":
            return
        if deployment.watch_until <= now:
            self.watcher.tick(deployment.id)
            return
        intervals = [
            check.post_deploy_interval
            for check in (self.config.check(c.name) for c in deployment.checks)
            if check is not None
        ]
        interval = min(intervals).total_seconds()
        self._scheduler.add_job(
            self._watch_tick,
            IntervalTrigger(
                seconds=interval, end_date=deployment.watch_until + timedelta(seconds=interval)
            ),
            args=[deployment.id],
            id=f"{WATCH_JOB}{deployment.id}",
            next_run_time=now,
            name=f"watch deployment {deployment.id}",
            replace_existing=True,
        )

    def _watch_tick(self, deployment_id: str) -> None:
        self.watcher.tick(deployment_id)
        deployment = self.watcher.get(deployment_id)
        if deployment is None or deployment.status != "watching":
            return
        now = datetime.now(UTC)
        for watched in deployment.checks:
            # every replica ticks the watch; each runs the checks it holds
            if watched.until > now and self.engine.holds(watched.name):
                self.run_now(watched.name)

    def shutdown(self, timeout: float = 8.0) -> bool:
        """Stop scheduling; wait up to ``timeout`` s for running checks. True if all finished."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        return self.wait_idle(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until no check runs; True if none does."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._running and time.monotonic() < deadline:
                self._cond.wait(timeout=max(0.0, deadline - time.monotonic()))
            unfinished = sorted(self._running)
        if unfinished:
            log.warning(
                "checks still running at shutdown", extra={"fields": {"checks": unfinished}}
            )
        return not unfinished

    @contextmanager
    def paused(self, timeout: float) -> Iterator[None]:
        """No check runs inside: the runs in progress are waited for (up to ``timeout`` s,
        else :class:`ReloadBusy`), and those due meanwhile start after it, on whatever engine
        and config the block left."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._paused and time.monotonic() < deadline:  # one pause at a time
                self._cond.wait(timeout=max(0.0, deadline - time.monotonic()))
            if self._paused:
                raise ReloadBusy("another reload is in progress")
            self._paused = True
            while self._running and time.monotonic() < deadline:
                self._cond.wait(timeout=max(0.0, deadline - time.monotonic()))
            running = sorted(self._running)
            if running:
                self._paused = False
                self._cond.notify_all()
                raise ReloadBusy(f"checks still running after {timeout:g}s: {', '.join(running)}")
        try:
            yield
        finally:
            with self._cond:
                self._paused = False
                self._cond.notify_all()

    def reconfigure(self, config: Config, engine: Engine, plan: ReloadPlan) -> None:
        """Follow a reloaded config (call inside ``paused``): jobs of removed checks go, new
        and changed checks run now (on their new schedule), unchanged ones keep their times."""
        self.config, self.engine = config, engine
        now = datetime.now(UTC)
        for name in plan.removed:
            with contextlib.suppress(JobLookupError):
                self._scheduler.remove_job(name)
            self._rerun.discard(name)
        for name in plan.added + plan.changed:
            check = config.check(name)
            assert check is not None
            if engine.holds(name):  # replicas: a new check is taken at the next lease renewal
                self._schedule(check, now)
        # the resolutions of retired checks' alerts are in the outbox: deliver them now
        self._scheduler.modify_job(OUTBOX_JOB, next_run_time=now)

    def _run_check(self, name: str) -> None:
        with self._cond:
            while self._paused:
                self._cond.wait()
            if self.config.check(name) is None:
                return  # removed by the reload this run waited for
            self._running.add(name)
        try:
            while True:
                self.engine.run(name)
                self._deliver()
                with self._cond:
                    if name not in self._rerun or not self._scheduler.running:
                        break
                    self._rerun.discard(name)
        finally:
            with self._cond:
                self._running.discard(name)
                self._cond.notify_all()

    def _prune(self) -> None:
        if not self.housekeeper():
            return
        retention = self.config.state.retention
        now = datetime.now(UTC)
        # the pages draw a check's episodes over its whole lookback
        lookbacks = [check.effective_lookback for check in self.config.checks]
        history = max([retention.alert_history, *lookbacks])
        try:
            gone = self.engine.store.prune(
                now - retention.notifications, now - retention.deployments, now - history
            )
        except StateStoreError as exc:
            log.warning(
                "pruning the state store failed; retried later",
                extra={"fields": {"error": str(exc)}},
            )
            return
        if any(gone.values()):
            log.info("state store pruned", extra={"fields": gone})

    def _snapshot_schemas(self) -> None:
        if self.housekeeper():
            self.watcher.snapshot_schemas()

    def _resend(self) -> None:
        if not self.housekeeper():
            return
        try:
            self.dispatcher.resend_firing(self.engine.firing())
        except Exception:
            log.exception("alertmanager re-send failed")

    def _deliver(self) -> None:
        if not self.housekeeper():
            return
        try:
            self.dispatcher.deliver_pending()
        except Exception:
            log.exception("outbox delivery failed")
