"""Structured logs: one JSON object per line, rotated, in the data folder's `logs/`."""

from __future__ import annotations

import json
import logging
import logging.handlers
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LOG_FILE_NAME = "mtm.jsonl"
_MAX_BYTES = 5 * 1024 * 1024
_BACKUPS = 5
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonLineFormatter(logging.Formatter):
    """Formats a record as one JSON line; `extra=` fields are kept as top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["traceback"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


class _AppLogHandler(logging.handlers.RotatingFileHandler):
    """The app's own handler, told apart so that configuring twice replaces rather than adds."""


def configure_logging(log_dir: Path, level: int = logging.INFO) -> Path:
    """Send all logs to a rotating JSON-lines file in `log_dir`; returns the file's path."""
    log_path = log_dir / LOG_FILE_NAME
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _AppLogHandler)]:
        root.removeHandler(handler)
        handler.close()
    handler = _AppLogHandler(log_path, maxBytes=_MAX_BYTES, backupCount=_BACKUPS, encoding="utf-8")
    handler.setFormatter(JsonLineFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    return log_path


def close_logging() -> None:
    """Detach and close the app's log handler (tests and the CLI call this on exit)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _AppLogHandler)]:
        root.removeHandler(handler)
        handler.close()
