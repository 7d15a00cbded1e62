"""What a config reload changes: which checks carry on, which restart, start or go. Pure.

A check whose settings and warehouse are unchanged keeps its models and alert state (nothing is
re-read or re-judged); a changed one keeps its alert state and rebuilds its models; a new one
starts; a removed one is retired (its open alerts resolve with a note). What the process was
built around (the state store, the HTTP server, the scheduler's pool) needs a restart: a reload
that changes it is refused and the daemon goes on with the config it has.
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.config import Config
from monitor.errors import KpiMonitorError

# sections a running daemon cannot swap: the store it has written to, the socket it listens
# on, the worker pool and misfire policy its scheduler was made with (the state store's
# retention is not among them: it is read at each pruning)
RESTART_ONLY = ("state", "server", "scheduler")


class ReloadBusy(KpiMonitorError):
    """A reload could not pause the checks: one is still running (or another reload is)."""


@dataclass(frozen=True)
class ReloadPlan:
    kept: list[str]
    changed: list[str]
    added: list[str]
    removed: list[str]

    def summary(self) -> dict[str, object]:
        """For the log and the HTTP answer."""
        return {
            "kept": len(self.kept),
            "changed": self.changed,
            "added": self.added,
            "removed": self.removed,
        }


def restart_problems(old: Config, new: Config) -> list[str]:
    """What differs in sections that only a restart can change, one line each."""
    problems = [
        f"{section}: changed, but it needs a restart (the reload applies nothing)"
        for section in RESTART_ONLY
        if _fixed(old, section) != _fixed(new, section)
    ]
    if _answers(old) != _answers(new):
        problems.append(
            "slack.app_token, slack.signing_secret: answers from Slack turned on or off, or"
            " another app token: needs a restart (the reload applies nothing)"
        )
    return problems


def _answers(config: Config) -> tuple[bool, object]:
    """Whether alerts can be answered, and over which Socket Mode token: a restart's to
    change (the transports start with the daemon)."""
    slack = config.slack
    if slack is None or not slack.answers:
        return False, None
    return True, slack.app_token


def _fixed(config: Config, section: str) -> object:
    """What of a section only a restart can change."""
    if section == "state":
        return config.state.model_copy(update={"retention": None})
    return getattr(config, section)


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Compare the running config with the one to load (the checks' order does not matter)."""
    before = {c.name: c for c in old.checks}
    after = {c.name: c for c in new.checks}
    warehouses_before, warehouses_after = old.all_warehouses(), new.all_warehouses()

    def same(name: str) -> bool:
        a, b = before[name], after[name]
        return a == b and (
            warehouses_before.get(old.warehouse_of(a)) == warehouses_after.get(new.warehouse_of(b))
        )

    both = [n for n in after if n in before]
    return ReloadPlan(
        kept=[n for n in both if same(n)],
        changed=[n for n in both if not same(n)],
        added=[n for n in after if n not in before],
        removed=[n for n in before if n not in after],
    )
