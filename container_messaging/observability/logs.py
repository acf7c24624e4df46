"""Structured logs: one JSON object per line, for log shippers (Loki, Elasticsearch, CloudWatch, ...).

Every line has ``time`` (UTC, ISO 8601, milliseconds), ``level``, ``logger`` and ``message``; the consumer's lines
about a message add ``endpoint``, ``message_id``, ``correlation_id``, ``routing_key``, ``handler``, ``duration_ms``
and ``outcome`` (passed as ``extra=`` to the log call), and any other ``extra=`` a caller passes is kept under its
own name (OpenTelemetry's logging instrumentation adds ``otelTraceID`` and ``otelSpanID`` this way). An exception
is in ``exception`` (its traceback as text). The human format (``time LEVEL logger: message``) stays the default:
``container-messaging --log-format json ...`` or :func:`configure_logging` choose JSON.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final, Literal, TextIO

__all__ = ["HUMAN_FORMAT", "JsonFormatter", "LOG_FORMATS", "configure_logging", "formatter"]

#: The human format's layout (``logging.Formatter`` style).
HUMAN_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The formats :func:`formatter` and the CLI's ``--log-format`` know.
LOG_FORMATS: Final = ("human", "json")

#: Every attribute a bare ``LogRecord`` has: what is not among them came from ``extra=``.
_RECORD_ATTRIBUTES: Final = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys() | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line (see the module's documentation). Values JSON cannot hold
    are written as their ``str()``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def formatter(log_format: Literal["human", "json"] | str) -> logging.Formatter:
    """The formatter of ``log_format`` (``human`` or ``json``); another name is a ValueError listing the known."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "human":
        return logging.Formatter(HUMAN_FORMAT)
    raise ValueError(f"unknown log format {log_format!r} (known: {', '.join(LOG_FORMATS)})")


def configure_logging(
    log_format: Literal["human", "json"] | str = "json",
    *,
    level: int | str = logging.INFO,
    logger: str = "container_messaging",
    stream: TextIO | None = None,
) -> logging.Handler:
    """Logs ``logger`` (default: this package; ``""`` for every library) at ``level`` to ``stream`` (default:
    stderr) in ``log_format``. Returns the handler it added (``logging.getLogger(logger).removeHandler(it)`` undoes
    it). Records also go on to the root logger's handlers, as usual."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(log_format))
    target = logging.getLogger(logger)
    target.addHandler(handler)
    target.setLevel(level)
    return handler
