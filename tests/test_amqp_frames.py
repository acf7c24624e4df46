"""The RabbitMQ adapter's own encoding of basic.publish: byte for byte what py-amqp writes for the same message."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

import amqp
import pytest
from amqp import spec
from amqp.method_framing import frame_writer
from amqp.serialization import dumps

from container_messaging.errors import InvalidMessageError
from container_messaging.transports.rabbitmq.frames import publish_frames


class _Sink:
    """py-amqp's view of a connection and its transport, keeping what is written."""

    def __init__(self, frame_max: int) -> None:
        self.frame_max = frame_max
        self.bytes_sent = 0
        self.written = bytearray()

    def write(self, data: Any) -> None:
        self.written += bytes(data)


def _py_amqp(channel: int, exchange: str, routing_key: str, mandatory: bool, frame_max: int, **message: Any) -> bytes:
    """What py-amqp writes for kombu's ``prepare_message`` + ``basic_publish`` of the same message."""
    sink = _Sink(frame_max)
    write_frame = frame_writer(sink, sink)
    body = message.pop("body")
    content = amqp.Message(body, **message)
    args = dumps("Bssbb", (0, exchange, routing_key, mandatory, False))
    write_frame(1, channel, spec.Basic.Publish, args, content)
    return bytes(sink.written)


FRAMEWORK_HEADERS = {
    "id": "0b8e3d4c-1f2a-4e55-9c1d-2f6a7b8c9d0e",
    "correlationId": "0b8e3d4c-1f2a-4e55-9c1d-2f6a7b8c9d0e",
    "timestamp": 1764590000,
    "contentType": "application/json",
    "ecotone.distributed.payloadType": "command",
    "ecotone.distributed.routingKey": "billing.changeDetails",
    "ecotone.distributed.sourceServiceName": "ordering",
    "ecotone.distributed.targetServiceName": "billing",
    "ecotone.amqp.distributed.service_target": "billing",
    "routingSlip": "ecotone.distributed.invoke",
}

HEADERS = {
    "the framework's headers": FRAMEWORK_HEADERS,
    "no headers": {},
    "text beyond ASCII": {"name": "Zoë ✓ 日本", "ünïcode-key": "x"},
    "integers at and past the 32-bit bounds": {"a": 2147483647, "b": -2147483647, "c": 2147483648, "d": -(2**40)},
    "booleans, floats and nothing": {"yes": True, "no": False, "ratio": 0.25, "nothing": None},
    "bytes": {"raw": b"\x00\x01\xff"},
    "nested tables and arrays": {"table": {"inner": [1, "two", {"three": 3.0}], "empty": {}}, "array": (True, None)},
    "a decimal and a date": {"price": Decimal("12.345"), "at": datetime.datetime(2026, 12, 1, 16, 0, 0)},
}


@pytest.mark.parametrize("headers", HEADERS.values(), ids=HEADERS.keys())
@pytest.mark.parametrize("mandatory", [True, False])
def test_publish_frames_equal_py_amqps_for_every_kind_of_header(headers: dict[str, Any], mandatory: bool) -> None:
    """For each kind of header value and either mandatory flag, the frames are py-amqp's, byte for byte."""
    message = {
        "content_type": "application/json",
        "content_encoding": "binary",
        "delivery_mode": 2,
        "priority": 0,
        "message_id": "0b8e3d4c-1f2a-4e55-9c1d-2f6a7b8c9d0e",
    }
    ours = publish_frames(
        3,
        "ecotone.distributed",
        "billing",
        mandatory=mandatory,
        body=b'{"n": 1}',
        headers=headers,
        frame_max=131072,
        **message,
    )
    expected = _py_amqp(
        3, "ecotone.distributed", "billing", mandatory, 131072, body=b'{"n": 1}', application_headers=headers, **message
    )
    assert ours == expected


@pytest.mark.parametrize("size", [0, 1, 4088, 4089, 10_000], ids=lambda n: f"{n}-byte body")
def test_a_body_is_cut_into_frames_as_py_amqp_cuts_it(size: int) -> None:
    """Empty, one frame, exactly one frame's room, one byte over, several frames: the same frames as py-amqp's."""
    body = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    ours = publish_frames(
        1,
        "",
        "orders.dead_letter",
        mandatory=True,
        body=body,
        content_type="application/octet-stream",
        content_encoding="binary",
        headers={"id": "x"},
        delivery_mode=2,
        priority=0,
        message_id=None,
        frame_max=4096,
    )
    expected = _py_amqp(
        1,
        "",
        "orders.dead_letter",
        True,
        4096,
        body=body,
        content_type="application/octet-stream",
        content_encoding="binary",
        application_headers={"id": "x"},
        delivery_mode=2,
        priority=0,
    )
    assert ours == expected


#: no property at all: each test sets the ones it needs
BARE: dict[str, Any] = {
    "content_type": None,
    "content_encoding": None,
    "headers": None,
    "delivery_mode": None,
    "priority": None,
    "message_id": None,
}


def _bare(routing_key: str = "y", **properties: Any) -> bytes:
    """The frames of a one-byte message to exchange ``x`` with ``properties`` alone."""
    return publish_frames(1, "x", routing_key, mandatory=False, body=b"b", frame_max=131072, **(BARE | properties))


def test_properties_left_out_are_left_out_as_py_amqp_does() -> None:
    """A message with no content type, encoding, headers, priority or id: only the delivery mode is written."""
    assert _bare(delivery_mode=2) == _py_amqp(1, "x", "y", False, 131072, body=b"b", delivery_mode=2)


def test_a_routing_key_over_255_bytes_is_refused_naming_it() -> None:
    """AMQP short strings hold 255 bytes: a longer routing key is an InvalidMessageError naming the field."""
    with pytest.raises(InvalidMessageError, match=r"routing key 'kkkk.*is 256 bytes long; AMQP allows 255 at most"):
        _bare("k" * 256)


def test_a_header_value_the_wire_cannot_carry_is_refused_naming_the_header() -> None:
    """A set inside a nested table is an InvalidMessageError naming the path of headers and the value's type."""
    expected = r"^header 'outer': header 'inner': AMQP cannot carry a value of type set$"
    with pytest.raises(InvalidMessageError, match=expected):
        _bare(headers={"outer": {"inner": {1, 2}}})
