"""Structured logs: the JSON formatter writes one object per line, with the consumer's fields."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from container_messaging.observability.logs import HUMAN_FORMAT, JsonFormatter, configure_logging, formatter


def _record(**extra: object) -> logging.LogRecord:
    logger = logging.getLogger("container_messaging.test")
    return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, "handled %s", ("it",), None, extra=extra)


def test_a_record_is_one_json_object_on_one_line_with_time_level_logger_and_message() -> None:
    """A record becomes one line that parses to an object with time (UTC), level, logger and the formatted message."""
    line = JsonFormatter().format(_record())
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "container_messaging.test"
    assert entry["message"] == "handled it"
    assert entry["time"].endswith("+00:00")


def test_extra_fields_are_kept_under_their_names() -> None:
    """What the consumer passes as extra= (endpoint, message id, correlationId, routing key, handler, duration,
    outcome) is in the object, under the same names."""
    fields = {
        "endpoint": "billing",
        "message_id": "0190-id",
        "correlation_id": "0190-corr",
        "routing_key": "billing.changeDetails",
        "handler": "Billing.change",
        "duration_ms": 1.5,
        "outcome": "handled",
    }
    entry = json.loads(JsonFormatter().format(_record(**fields)))
    assert {key: entry[key] for key in fields} == fields


def test_an_exception_and_values_json_cannot_hold_still_give_a_line_that_parses() -> None:
    """A record with a traceback, a multi-line message and a non-JSON extra value is still one line of JSON: the
    traceback under 'exception', the value as its str()."""
    logger = logging.getLogger("container_messaging.test")
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        exc_info = sys.exc_info()
    record = logger.makeRecord(
        logger.name, logging.ERROR, __file__, 1, "line one\nline two", (), exc_info, extra={"handlers": {"a"}}
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "line one\nline two"
    assert "ValueError: bad" in entry["exception"]
    assert entry["handlers"] == "{'a'}"


def test_configure_logging_json_writes_parsable_lines_and_formatter_refuses_unknown_names() -> None:
    """configure_logging('json') sends the package's records to the stream as JSON lines; an unknown format name is a
    ValueError naming it and the known ones; 'human' is the classic layout."""
    stream = io.StringIO()
    handler = configure_logging("json", level=logging.INFO, stream=stream)
    logger = logging.getLogger("container_messaging")
    try:
        logging.getLogger("container_messaging.consumer").info("one", extra={"endpoint": "billing"})
        logging.getLogger("container_messaging.consumer").info("two")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["message"], e.get("endpoint")) for e in entries] == [("one", "billing"), ("two", None)]
    with pytest.raises(ValueError, match=r"'xml'.*human, json"):
        formatter("xml")
    assert formatter("human")._fmt == HUMAN_FORMAT
