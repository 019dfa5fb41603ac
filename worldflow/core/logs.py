"""Logging: `LOG_LEVEL` picks the level of the `worldflow` logger; `debug` logs every
event. `LOG_FORMAT=json` writes one JSON object per line, for log shippers."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worldflow.core.events import EventRecord

__all__ = ["configure_logging", "log_event"]

logger = logging.getLogger("worldflow")
event_logger = logging.getLogger("worldflow.events")
_configured = False


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {"time": self.formatTime(record), "level": record.levelname,
                "logger": record.name, "message": record.getMessage()}
        for key in ("run_id", "seq", "event_type", "correlation_id", "step_name", "attempt"):
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data)


def configure_logging() -> int:
    """Apply LOG_LEVEL / LOG_FORMAT once; return the effective level of `worldflow`."""
    global _configured
    if not _configured:
        _configured = True
        level_name = os.environ.get("LOG_LEVEL", "").upper()
        if level_name:
            level = logging.getLevelName(level_name)
            if isinstance(level, int):
                logger.setLevel(level)
            if not logging.getLogger().handlers and not logger.handlers:
                handler = logging.StreamHandler(sys.stderr)
                if os.environ.get("LOG_FORMAT", "").lower() == "json":
                    handler.setFormatter(JsonFormatter())
                else:
                    handler.setFormatter(logging.Formatter(
                        "%(asctime)s %(levelname)s %(name)s %(message)s"))
                logger.addHandler(handler)
    return logger.getEffectiveLevel()


def log_event(record: EventRecord) -> None:
    event = record.event
    step_name = getattr(event, "step_name", None)
    attempt = getattr(event, "attempt", None)
    event_logger.debug(
        "run=%s seq=%d event=%s cid=%s%s%s", record.run_id, record.seq, record.event_type,
        record.correlation_id or "-", f" step={step_name}" if step_name else "",
        f" attempt={attempt}" if attempt else "",
        extra={"run_id": record.run_id, "seq": record.seq, "event_type": record.event_type,
               "correlation_id": record.correlation_id, "step_name": step_name,
               "attempt": attempt})
