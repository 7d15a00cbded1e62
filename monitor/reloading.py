"""A config reload on a running daemon: read the files again, then pause and hand over.

The pure plan (which checks carry on, restart, start or go) is :mod:`monitor.reload`; this
module does the I/O around it. The config file and the dbt manifest are read again; a broken
one, or one changing what needs a restart, is refused and logged, and the daemon goes on with
the config it has. Otherwise the checks pause between runs while a new engine takes over the
unchanged checks' models and alert state, removed checks resolve their alerts with a note, and
the scheduler, the dispatcher, the deployment watcher and the replica coordination follow.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.answers.model import ANSWERS
from monitor.assembly import alertmanager_client, build_engine, slack_channel
from monitor.config import Config, load_config
from monitor.errors import ConfigError
from monitor.model_cache import fingerprint
from monitor.reload import ReloadBusy, ReloadPlan, plan_reload, restart_problems
from monitor.warehouse import Warehouse, open_warehouse

if TYPE_CHECKING:
    from monitor.daemon import Daemon

log = logging.getLogger("monitor.daemon")

# how long a reload waits for the check runs in progress before it gives up (and is retried)
RELOAD_PAUSE_SECONDS = 60.0
RETIRED = "the check was removed from the configuration"
REDEFINED = "the check's query changed with a config reload"


class Reloader:
    """Owns a daemon's reloads, one at a time: reading and refusing a config, the pause, the
    carry over of checks to the new engine, and the digest of the watched files. It swaps the
    daemon's config, engine and warehouses, and reconfigures its other parts in place."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._lock = threading.Lock()

    def reload(self) -> ReloadPlan:
        """Read the config file (and its dbt manifest) again and apply it.

        Raises ConfigError when the new config is invalid or changes what needs a restart, and
        ``ReloadBusy`` when a check run did not end in time; either way the daemon goes on with
        the config it had, and the failure is logged and exported.
        """
        daemon = self.daemon
        with self._lock:
            try:
                config = load_config(daemon.config.source)
                problems = restart_problems(daemon.config, config)
                if problems:
                    raise ConfigError(config.source, problems)
                plan = self._apply(config)
            except Exception as exc:
                daemon.metrics.config_loaded(False)
                problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
                log.error(
                    "config reload refused; running on the previous config",
                    extra={"fields": {"config": daemon.config.source, "problems": problems}},
                )
                raise
            daemon.metrics.config_loaded(True)
            log.info("config reloaded", extra={"fields": {"config": config.source,
                                                          **plan.summary()}})  # fmt: skip
            return plan

    def attempt(self) -> bool:
        """Reload; False only when it should be tried again (checks were busy). A refused file
        counts as seen: it is not retried until it changes."""
        try:
            self.reload()
        except ReloadBusy:
            return False
        except Exception:  # noqa: S110 - reload() logged it and exported the failure
            pass
        return True

    def watched_files(self) -> bytes:
        """A digest of the config file and its dbt manifest, to see that one changed (a
        ConfigMap update replaces a symlink: the content is what counts)."""
        digest = hashlib.sha256()
        for path in (Path(self.daemon.config.source), self.daemon.config.manifest_path):
            try:
                digest.update(path.read_bytes() if path is not None else b"")
            except OSError as exc:
                digest.update(str(exc).encode())
        return digest.digest()

    def _apply(self, config: Config) -> ReloadPlan:
        daemon, old = self.daemon, self.daemon.engine
        plan = plan_reload(daemon.config, config)
        warehouses, unused = self._warehouses_for(config)
        dispatcher = daemon.dispatcher
        slack = dispatcher.slack if config.slack == daemon.config.slack else slack_channel(config)
        alertmanager = (
            dispatcher.alertmanager
            if config.alertmanager == daemon.config.alertmanager
            else alertmanager_client(config)
        )
        channels = [n for n, sink in (("slack", slack), ("alertmanager", alertmanager)) if sink]
        # built before the pause (it reads the store); the checks it takes over bring their
        # own alert state from the running engine
        engine = build_engine(
            config,
            warehouses,
            daemon.store,
            daemon.metrics,
            channels=channels,
            clock=old.clock,
            cause=daemon.watcher.cause,
            after_run=daemon.watcher.observe,
            # one book of recorded events: none recorded while the engines change hands is lost
            calendars=old.calendars,
        )
        with daemon.scheduler.paused(RELOAD_PAUSE_SECONDS):
            for name in plan.removed:
                old.interventions.retire(old.check(name), RETIRED)
            for name in plan.kept:
                engine.adopt(old.release(name))
            for name in plan.changed:
                before, after = daemon.config.check(name), config.check(name)
                assert before is not None and after is not None
                if fingerprint(before) != fingerprint(after):
                    # other series now (another table, filter or split): what was open about
                    # the old ones ends here, and the new ones start afresh
                    old.interventions.retire(old.check(name), REDEFINED)
                    memory = replace(old.release(name), latest={}, last_run=None)
                else:
                    memory = old.release(name)
                engine.adopt(memory.without_models())
            dispatcher.reconfigure(config, slack, alertmanager)
            if daemon.answers is not None and config.slack is not None and slack is not None:
                daemon.answers.reconfigure(config.slack, slack)
                daemon.metrics.declare_answers((c.name for c in config.checks), ANSWERS)
            daemon.metrics.declare_channels(["log", *channels])
            daemon.watcher.reconfigure(config, engine, channels)
            daemon.scheduler.reconfigure(config, engine, plan)
            daemon.api.engine = engine
            daemon.config, daemon.engine, daemon.warehouses = config, engine, warehouses
            daemon.replicas.reconfigure(config)
        for warehouse in unused:
            warehouse.close()
        return plan

    def _warehouses_for(self, config: Config) -> tuple[dict[str, Warehouse], list[Warehouse]]:
        """The new config's warehouses, keeping the open adapters whose settings did not
        change (their connections, and what they know of being up), and the ones no longer
        used."""
        before, running = self.daemon.config.all_warehouses(), self.daemon.warehouses
        kept: dict[str, Warehouse] = {}
        for name, settings in config.all_warehouses().items():
            same = before.get(name) == settings
            kept[name] = running[name] if same else open_warehouse(name, settings)
        unused = [w for name, w in running.items() if kept.get(name) is not w]
        return kept, unused
