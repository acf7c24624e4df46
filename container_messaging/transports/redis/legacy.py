"""Messages left by this project's Redis transport before streams (kombu's lists), moved onto the streams.

kombu kept a queue as a list named like the queue (JSON envelopes, the body in base64), taken messages in its
``unacked`` hash, and this project kept delayed copies in ``<queue>.delayed``. Setting an endpoint up moves all of
that over, and a consumer moves, within a second, whatever a sender of the former version still pushes onto the
list. Each message moves in a transaction that fails (and is tried again) if a process of the former version
touched the key meanwhile: nothing is lost and nothing is copied twice while both versions run. A taken message is
moved only when kombu itself would have restored it (taken longer ago than the visibility timeout). An envelope
that cannot be read goes to the dead letter as it is.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
import uuid
from typing import Any, Final

import redis

from container_messaging.transports.base import dead_letter_queue
from container_messaging.transports.redis import envelope, keys

__all__ = ["drain_list", "migrate"]

log = logging.getLogger("container_messaging.transport")

#: kombu's keys of taken, unacknowledged messages (every queue of the database shares them).
UNACKED: Final = "unacked"
UNACKED_INDEX: Final = "unacked_index"


def migrate(client: redis.Redis, queue: str, visibility_timeout: float) -> int:
    """Moves the former transport's messages of ``queue`` onto its stream; returns how many."""
    listed, delayed, unacked = (
        client.pipeline(transaction=False)
        .type(keys.legacy_list_key(queue))
        .exists(keys.legacy_delayed_key(queue))
        .exists(UNACKED)
        .execute()
    )
    moved = 0
    if listed == b"list":
        moved += drain_list(client, queue)
    if delayed:
        moved += _move_delayed(client, queue)
    if unacked:
        moved += _restore_unacked(client, queue, visibility_timeout)
    if moved:
        log.warning(
            "queue %r: moved %d message(s) of the former Redis transport (kombu's) onto its stream", queue, moved
        )
    return moved


def drain_list(client: redis.Redis, queue: str) -> int:
    """Moves the messages of the former transport's list of ``queue`` onto its stream, the oldest first (kombu
    pushed on the left and took from the right); returns how many."""
    source = keys.legacy_list_key(queue)
    moved = 0
    while True:
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(source)
                item = pipe.lindex(source, -1)
                if item is None:
                    return moved
                pipe.multi()
                _add(pipe, queue, item)
                pipe.rpop(source)
                pipe.execute()
                moved += 1
            except redis.WatchError:
                continue  # the former version touched it meanwhile: look again


def _move_delayed(client: redis.Redis, queue: str) -> int:
    """Delayed copies keep their due time (unix seconds then, milliseconds now)."""
    source, target = keys.legacy_delayed_key(queue), keys.delayed_key(queue)
    moved = 0
    while True:
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(source)
                first = pipe.zrange(source, 0, 0, withscores=True)
                if not first:
                    return moved
                member, due = first[0]
                pipe.multi()
                try:
                    fields = envelope.encode(_from_kombu(member))
                except ValueError as exc:
                    pipe.xadd(keys.queue_key(dead_letter_queue(queue)), _buried(member, str(exc)))
                else:
                    pipe.zadd(target, {envelope.delayed_member(fields): int(due * 1000)})
                pipe.zrem(source, member)
                pipe.execute()
                moved += 1
            except redis.WatchError:
                continue


def _restore_unacked(client: redis.Redis, queue: str, visibility_timeout: float) -> int:
    """kombu's taken messages of ``queue`` that kombu would restore (taken longer ago than the visibility timeout)."""
    ceiling = time.time() - visibility_timeout
    moved = 0
    for tag, _taken in client.zrange(UNACKED_INDEX, 0, ceiling, byscore=True, withscores=True):
        while True:
            with client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(UNACKED)
                    stored = pipe.hget(UNACKED, tag)
                    if stored is None or not _taken_from(stored, queue):
                        break  # settled meanwhile, or another queue's
                    message = json.loads(stored)[0]
                    pipe.multi()
                    _add(pipe, queue, json.dumps(message).encode())
                    pipe.hdel(UNACKED, tag)
                    pipe.zrem(UNACKED_INDEX, tag)
                    pipe.execute()
                    moved += 1
                    break
                except redis.WatchError:
                    continue  # kombu touched the hash meanwhile: look again
    return moved


def _taken_from(stored: bytes, queue: str) -> bool:
    """Whether kombu's unacked entry ``[message, exchange, routing key]`` was taken from ``queue`` (this project
    published every message to its queue through the default exchange)."""
    try:
        _message, exchange, routing_key = json.loads(stored)
    except (ValueError, TypeError):
        return False  # not one this project wrote: left to kombu
    return bool(exchange == "" and routing_key == queue)


def _add(pipe: Any, queue: str, item: bytes) -> None:
    """Adds kombu's envelope ``item`` to ``queue``'s stream, or as it is to its dead letter when it cannot be read."""
    try:
        fields = envelope.encode(_from_kombu(item))
    except ValueError as exc:
        pipe.xadd(keys.queue_key(dead_letter_queue(queue)), _buried(item, str(exc)))
        return
    pipe.xadd(keys.queue_key(queue), fields)


def _from_kombu(item: bytes) -> envelope.Envelope:
    """The message in kombu's JSON envelope; ValueError when it is not one."""
    try:
        payload = json.loads(item)
        properties = payload.get("properties") or {}
        body = payload["body"]
        if properties.get("body_encoding") == "base64":
            raw = base64.b64decode(body, validate=True)
        else:
            raw = body.encode() if isinstance(body, str) else bytes(body)
        headers = dict(payload.get("headers") or {})
        content_type = payload.get("content-type")
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error) as exc:
        raise ValueError(f"a message of the former Redis transport that cannot be read: {exc!r}") from None
    headers.pop("redelivered", None)  # kombu's restore wrote it into the application headers
    return envelope.Envelope(raw, headers, content_type if isinstance(content_type, str) else None)


def _buried(item: bytes, reason: str) -> dict[bytes, bytes]:
    return envelope.encode(envelope.malformed(f"legacy-{uuid.uuid4()}", {envelope.BODY: item}, reason))
