"""Observability: OpenTelemetry traces and metrics, JSON logs, health checks (see README, "Observability").

- :mod:`.tracing`: :class:`~.tracing.TracingMiddleware`, a span per publish, per processed message and per handler
  run, the W3C trace context carried in message headers as an Ecotone service with its OpenTelemetry module does;
- :mod:`.metrics`: :class:`~.metrics.MetricsMiddleware`, counters and histograms through OpenTelemetry's metrics API;
- :mod:`.logs`: :class:`~.logs.JsonFormatter` (one JSON object per line) and :func:`~.logs.configure_logging`;
- :mod:`.health`: :class:`~.health.HealthReport`, what ``container.health()`` and ``container-messaging health``
  check.

Tracing and metrics need the ``otel`` extra (``pip install 'container-messaging[otel]'``); importing them without it
raises :class:`~container_messaging.integrations.MissingExtraError` saying so. Logs and health need nothing more.
This package is the only one that imports OpenTelemetry.
"""

from __future__ import annotations

import importlib
from typing import Any, Final

from container_messaging.integrations import MissingExtraError
from container_messaging.observability.health import Check, HealthReport
from container_messaging.observability.logs import JsonFormatter, configure_logging

__all__ = [
    "Check",
    "HealthReport",
    "JsonFormatter",
    "MetricsMiddleware",
    "TracingMiddleware",
    "configure_logging",
    "missing_otel",
]


def missing_otel(module: str, exc: ImportError) -> MissingExtraError:
    """The error for a module of this package whose OpenTelemetry package failed to import (raise it ``from exc``)."""
    return MissingExtraError(
        f"container_messaging.observability.{module} needs OpenTelemetry, which could not be imported ({exc}): "
        "pip install 'container-messaging[otel]'",
        name=exc.name,
    )


_LAZY: Final = {"TracingMiddleware": "tracing", "MetricsMiddleware": "metrics"}


def __getattr__(name: str) -> Any:
    # the OpenTelemetry middlewares are imported on first use, so logs and health work without the extra
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
