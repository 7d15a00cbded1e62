"""Structured logs: one JSON object a line in a container, readable text on a terminal.

Call sites pass fields with ``extra={"fields": {...}}``; secrets are never among them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[1] is not None:
            entry["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return json.dumps(entry, default=str)


# what could end a line or redraw a terminal: C0 and C1 controls, DEL, Unicode line separators
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# a field value with any of these is quoted, so `key=value` pairs cannot be forged either
_NEEDS_QUOTES = re.compile(r'[\s="\\\x00-\x1f\x7f-\x9f\u2028\u2029]')


def _one_line(text: str) -> str:
    return _CONTROL.sub(lambda m: _ESCAPES.get(m[0], f"\\u{ord(m[0]):04x}"), text)


def _value(value: object) -> str:
    text = str(value)
    if text and not _NEEDS_QUOTES.search(text):
        return text
    return '"' + _one_line(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


class TextFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL message  key=value ...`` on one line whatever the data: values from the
    warehouse or an API call (a segment, a mute reason) cannot start a forged line or field."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = getattr(record, "fields", {})
        tail = " ".join(f"{k}={_value(v)}" for k, v in fields.items())
        line = f"{stamp} {record.levelname:<7} {_one_line(record.getMessage())}"
        if tail:
            line += f"  {tail}"
        if record.exc_info and record.exc_info[1] is not None:
            error = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            line += f"  error={_value(error)}"
        return line


def configure(level: str | None = None, fmt: str | None = None) -> None:
    """Set up the root logger: ``KPIMON_LOG_FORMAT`` (json|text) and ``KPIMON_LOG_LEVEL``."""
    fmt = fmt or os.environ.get("KPIMON_LOG_FORMAT") or ("text" if sys.stderr.isatty() else "json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("KPIMON_LOG_LEVEL") or "INFO").upper())
    for noisy in ("apscheduler", "waitress", "urllib3", "databricks", "thrift", "slack_sdk"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
