"""Structured logs: one JSON object a line in a container, readable text on a terminal.

Call sites pass fields with ``extra={"fields": {...}}``; secrets are never among them.
"""

from __future__ import annotations

import json
import logging
import os
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


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = getattr(record, "fields", {})
        tail = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{stamp} {record.levelname:<7} {record.getMessage()}"
        if tail:
            line += f"  {tail}"
        if record.exc_info and record.exc_info[1] is not None:
            line += f"  error={type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
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
