"""Logs: one line per record in both formats, whatever the data written into them."""

from __future__ import annotations

import io
import json
import logging
import shutil
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor import logs
from monitor.config import parse_config
from monitor.daemon import Daemon
from tests.conftest import demo_document

FORGED = "backfill\n12:00:00 ERROR   kpi-monitor stopped  check=revenue"


def record(message: str, **fields: object) -> logging.LogRecord:
    entry = logging.makeLogRecord({"msg": message, "levelname": "WARNING", "levelno": 30})
    entry.fields = fields
    return entry


@pytest.mark.parametrize(
    "value",
    [
        FORGED,
        "DE\r\n12:00:00 INFO    all good",
        "a\u2028b\u2029c\x85d",  # line separators some viewers honour
        "\x1b[2K\x1b[1A",  # a terminal escape erasing the previous line
        "x segment=forged",  # a second field
        'quote" and \\ backslash',
    ],
)
def test_a_text_line_stays_one_line_and_a_field_value_cannot_forge_another_field(
    value: str,
) -> None:
    line = logs.TextFormatter().format(record(f"alert opened {value}", segment=value, owner="@o"))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x85" not in line
    assert "\u2028" not in line and "\u2029" not in line
    # the value comes back as one quoted field, JSON-style escapes inside
    _, _, tail = line.partition("  segment=")
    assert tail.endswith("owner=@o")
    quoted = tail.removesuffix(" owner=@o")
    assert quoted.startswith('"') and quoted.endswith('"')
    assert json.loads(quoted) == value


def test_plain_values_stay_unquoted_in_text_logs() -> None:
    line = logs.TextFormatter().format(record("check run failed", check="revenue", segment="DE"))
    assert line.endswith("WARNING check run failed  check=revenue segment=DE")


def test_a_json_line_holds_any_value_on_one_line() -> None:
    line = logs.JsonFormatter().format(record("check muted", reason=FORGED))
    assert "\n" not in line and json.loads(line)["reason"] == FORGED


@pytest.fixture
def text_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """What the daemon writes to stderr in text format."""
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure(level="INFO", fmt="text")
    try:
        yield stderr
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_a_mute_reason_sent_to_the_api_cannot_forge_a_text_log_line(
    tmp_path: Path,
    live_demo_warehouse: Path,
    monkeypatch: pytest.MonkeyPatch,
    text_logs: io.StringIO,
) -> None:
    monkeypatch.setenv("KPIMON_API_TOKEN", "token-0123456789")
    shutil.copy(live_demo_warehouse, tmp_path / "demo.duckdb")
    daemon = Daemon(parse_config(demo_document(tmp_path)), host="127.0.0.1", port=0)
    daemon.start()
    try:
        body = json.dumps({"until": "2030-01-01T00:00:00Z", "reason": FORGED}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{daemon.port}/api/v1/checks/revenue/mute",
            data=body,
            method="POST",
            headers={"Authorization": "Bearer token-0123456789"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
    finally:
        daemon.stop()
    lines = text_logs.getvalue().splitlines()
    (muted,) = [line for line in lines if " check muted " in line]
    assert 'reason="backfill\\n12:00:00 ERROR   kpi-monitor stopped  check=revenue"' in muted
    assert not [line for line in lines if line.startswith("12:00:00 ERROR")]
