"""Structured logs: the JSON formatter writes one object per line, with the consumer's fields."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Callable

import pytest

from container_messaging import DistributedBus, MessagingContainer
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


HANDLERS = """
from container_messaging import command_handler, distributed

class Work:
    @distributed
    @command_handler("work.ok")
    def ok(self, command: dict) -> None:
        pass

    @distributed
    @command_handler("work.broken")
    def broken(self, command: dict) -> None:
        raise ValueError("always")
"""


def test_the_consumers_lines_in_json_carry_the_message_fields(make_module: Callable[[str, str], str]) -> None:
    """Running an endpoint with JSON logs gives one parsable line per log call; the line of a handled message and
    the line of a failed one carry endpoint, message id, correlationId, routing key, handler, outcome (and the
    duration, the attempt and the error type where they apply)."""
    module = make_module("logged_work", HANDLERS)
    container = MessagingContainer.from_dict(
        {
            "service_name": "work",
            "scan": [module],
            "transport": {"url": "memory://"},
            "recoverability": {"immediate_retries": 0, "delayed_retries": []},
        }
    )
    container.setup()
    bus = container.get(DistributedBus)
    bus.convert_and_send_command("work", "work.ok", {}, {"correlationId": "0190a000-0000-7000-8000-00000000000c"})
    bus.convert_and_send_command("work", "work.broken", {})
    stream = io.StringIO()
    handler = configure_logging("json", stream=stream)
    try:
        container.run("work", handled_message_limit=2, execution_time_limit=10_000)
    finally:
        logging.getLogger("container_messaging").removeHandler(handler)
        logging.getLogger("container_messaging").setLevel(logging.NOTSET)
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    by_outcome = {entry.get("outcome"): entry for entry in entries if "outcome" in entry}
    handled = by_outcome["handled"]
    assert handled["endpoint"] == "work"
    assert handled["routing_key"] == "work.ok"
    assert handled["correlation_id"] == "0190a000-0000-7000-8000-00000000000c"
    assert handled["handler"].endswith("Work.ok")
    assert handled["message_id"]
    assert handled["duration_ms"] >= 0
    dead = by_outcome["dead-lettered"]
    assert (dead["routing_key"], dead["attempt"], dead["error_type"], dead["level"]) == (
        "work.broken",
        1,
        "ValueError",
        "ERROR",
    )
    assert dead["handler"].endswith("Work.broken")
