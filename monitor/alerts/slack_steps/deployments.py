"""A deployment report, posted to the default channel."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from monitor.alerts.messages import deployment_blocks, deployment_text
from monitor.alerts.slack import SlackChannel, SlackRef
from monitor.alerts.slack_steps.step import Step
from monitor.deployments import Deployment
from monitor.records.outbox import OutboxEntry


@dataclass(frozen=True)
class DeploymentReports:
    """Builds the post of a ``deployment`` entry to ``channel``."""

    channel: str
    slack: SlackChannel

    def post(self, entry: OutboxEntry) -> Step:
        deployment = Deployment.from_json(entry.payload)

        def send(marker: str | None) -> SlackRef:
            return self.slack.post(
                self.channel, deployment_text(deployment), deployment_blocks(deployment),
                marker=marker,
            )

        def find(marker: str, oldest: datetime) -> SlackRef | None:
            return self.slack.find_message(self.channel, marker, oldest)

        return Step([entry], f"deployment report {deployment.id}", send, find)
