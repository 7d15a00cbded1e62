"""The deployments under watch, as the state store has them, and their verdicts published.

Shared by the recording of a deployment (:mod:`monitor.recorder`) and the watching of its
checks' runs (:mod:`monitor.watcher`): a deployment is changed only under its row lock in the
state store, so replicas seeing its checks at once each build on the other's change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from monitor.deployments import Deployment
from monitor.errors import KpiMonitorError
from monitor.exporter import Metrics
from monitor.store import StateStore

log = logging.getLogger("monitor.deployments")


class DeploymentConflict(KpiMonitorError):
    """A deployment with this id was already recorded."""


def report_key(deployment: Deployment) -> str:
    return f"deployment/{deployment.id}/{deployment.status}"


class Watches:
    """Owns the deployments being watched in memory (read once from the state store, then kept
    in step with it), the ids being recorded, and the publishing of each verdict: its metric,
    its log line and its queued report. Thread-safe: its lock is never held while a manifest
    is diffed or a warehouse read."""

    def __init__(self, store: StateStore, metrics: Metrics, channels: list[str]) -> None:
        self.store = store
        self.metrics = metrics
        self.channels = channels
        self._lock = threading.RLock()
        self._recording: set[str] = set()
        watching = store.deployments.documents(status="watching")
        self._active = {d.id: d for d in map(Deployment.from_json, watching)}

    def active(self) -> list[Deployment]:
        with self._lock:
            return list(self._active.values())

    def watching(self, deployment_id: str) -> bool:
        with self._lock:
            return deployment_id in self._active

    def refresh(self) -> list[Deployment]:
        """Replicas: follow the deployments recorded or decided through another replica; the
        ones to watch here too (each replica runs the watched checks it holds)."""
        watching = self.store.deployments.documents("watching")
        stored = {d.id: d for d in map(Deployment.from_json, watching)}
        with self._lock:
            known = set(self._active) | self._recording
            new = [d for i, d in stored.items() if i not in known]
            for gone in set(self._active) - set(stored):
                del self._active[gone]
            self._active.update({d.id: d for d in new})
        return new

    def get(self, deployment_id: str) -> Deployment | None:
        with self._lock:
            if deployment_id in self._active:
                return self._active[deployment_id]
        document = self.store.deployments.get(deployment_id)
        return Deployment.from_json(document) if document else None

    def reserve(self, deployment_id: str) -> None:
        """Claim an id for one recording at a time (until ``recorded``); the store's primary
        key is the last word.

        :raises DeploymentConflict: the id is taken.
        """
        with self._lock:
            taken = deployment_id in self._recording or deployment_id in self._active
            if not taken:
                self._recording.add(deployment_id)
        if not taken and self.store.deployments.get(deployment_id) is not None:
            with self._lock:
                self._recording.discard(deployment_id)
            taken = True
        if taken:
            raise DeploymentConflict(f"deployment {deployment_id!r} was already recorded")

    def recorded(self, deployment_id: str, watched: Deployment | None) -> None:
        """The recording of a reserved id ended: with a deployment to watch, or not."""
        with self._lock:
            self._recording.discard(deployment_id)
            if watched is not None:
                self._active[deployment_id] = watched

    def change(
        self, deployment_id: str, change: Callable[[Deployment], Deployment]
    ) -> Deployment | None:
        """Apply ``change`` to the deployment as stored, under its row lock: replicas seeing
        its checks at once each build on the other's change, and one of them only decides
        it. A verdict reached is published. The changed deployment, or None when it was
        decided already or did not change."""
        changed: Deployment | None = None

        def apply(document: str) -> tuple[str, str] | None:
            nonlocal changed
            current = Deployment.from_json(document)
            updated = change(current) if current.status == "watching" else current
            if updated == current:
                return None
            changed = updated
            return updated.status, updated.to_json()

        with self._lock:
            self.store.deployments.change(deployment_id, apply)
            stored = changed
            if stored is not None and stored.status == "watching":
                self._active[deployment_id] = stored
            elif stored is None and deployment_id in self._active:
                document = self.store.deployments.get(deployment_id)
                latest = Deployment.from_json(document) if document else None
                if latest is None or latest.status != "watching":
                    del self._active[deployment_id]  # decided through another replica
        if stored is not None and stored.status != "watching":
            self._finish(stored)
        return stored

    def _finish(self, deployment: Deployment) -> None:
        """A watch ended with a verdict (saved): publish it and queue its report."""
        self.finished(deployment)
        self.store.outbox.enqueue(
            report_key(deployment), "deployment", deployment.to_json(), self.channels
        )

    def finished(self, deployment: Deployment) -> None:
        """Publish a verdict saved (with its report) already."""
        with self._lock:
            self._active.pop(deployment.id, None)
        self.metrics.deployment_verdicts.labels(deployment.environment, deployment.status).inc()
        log.log(
            logging.WARNING if deployment.status == "failed" else logging.INFO,
            f"deployment {deployment.status}",
            extra={
                "fields": {
                    "deployment": deployment.id,
                    "environment": deployment.environment,
                    "reason": deployment.reason,
                }
            },
        )
