"""Structured logs: one JSON object per line, with the service, the current trace and
span ids (when tracing is on) and any fields passed with ``extra=`` (``decision_id``,
``decision_ids``, ``use_case``, ``operation_id`` …).

    log.debug("decision", extra={"decision_id": decision.decision_id})

``LOOPWISE_LOG_FORMAT=text`` keeps the plain one-line format for people at a terminal.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from opentelemetry import trace

from loopwise import tracing

# Attributes every LogRecord has; anything else came with ``extra=`` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line."""

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON: time (UTC, ISO 8601), level, logger, message, fields."""
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.service:
            entry["service"] = self.service
        if tracing.enabled():
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                entry["trace_id"] = format(context.trace_id, "032x")
                entry["span_id"] = format(context.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str, fmt: str = "json", service: str = "") -> None:
    """Set up the root logger once per process: JSON lines (default) or plain text."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
