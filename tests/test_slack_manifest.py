"""``examples/slack-app-manifest.yaml`` asks for exactly the scopes the daemon's Slack calls
need: every Web API method ``monitor/alerts/slack.py`` calls is covered by a scope of the
manifest, and every scope of the manifest serves one of them."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.conftest import REPO

MANIFEST = REPO / "examples" / "slack-app-manifest.yaml"
# Slack's documented scopes per method (public channels / private channels); one of them is
# enough for a call, the app asks for both kinds of channel
NEEDS = {
    "chat_postMessage": {"chat:write"},
    "chat_update": {"chat:write"},
    "chat_postEphemeral": {"chat:write"},
    "files_getUploadURLExternal": {"files:write"},
    "files_completeUploadExternal": {"files:write"},
    "conversations_history": {"channels:history", "groups:history"},
    "conversations_replies": {"channels:history", "groups:history"},
    "conversations_list": {"channels:read", "groups:read"},
    "conversations_members": {"channels:read", "groups:read"},
    "usergroups_users_list": {"usergroups:read"},
}


def called_methods(source: Path) -> set[str]:
    """The Web API methods a module calls through slack-sdk's WebClient."""
    text = source.read_text()
    return set(re.findall(r'"((?:chat|files|conversations|usergroups|users|reactions)_\w+)"', text))


def test_the_manifest_has_exactly_the_scopes_of_the_methods_the_daemon_calls() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    methods = called_methods(REPO / "monitor" / "alerts" / "slack.py")
    assert methods <= set(NEEDS), f"no scope known for {methods - set(NEEDS)}"
    assert scopes == set().union(*(NEEDS[m] for m in methods))


def test_clicks_reach_the_daemon_without_events_or_a_public_url() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["socket_mode_enabled"] is True
    assert "event_subscriptions" not in settings, "no event is needed"
