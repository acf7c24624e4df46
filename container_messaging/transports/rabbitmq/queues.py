"""The queues of a RabbitMQ endpoint: their names (the delay queues) and their ``x-`` arguments (classic or quorum)."""

from __future__ import annotations

from typing import Any, Final

from container_messaging.transports.base import dead_letter_queue
from container_messaging.transports.options import TransportOptions

__all__ = ["DEAD_LETTER", "delay_queue", "queue_arguments"]

#: How the name of every dead letter queue ends.
DEAD_LETTER: Final = dead_letter_queue("")
#: The delivery limit of a quorum dead letter queue: none in practice. Listing the dead letter returns every entry
#: to the queue, which counts as a delivery; RabbitMQ 4 would drop an entry listed 20 times (its default limit), and
#: RabbitMQ 3 reads -1 (RabbitMQ 4's "no limit") as a limit of 0.
_DEAD_LETTER_DELIVERY_LIMIT: Final = 2**31 - 1
#: Dead-letter at least once: RabbitMQ keeps a message until the target queue confirms it (needs reject-publish).
_AT_LEAST_ONCE: Final = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}

def delay_queue(queue: str, delay_ms: int) -> str:
    """The TTL queue that holds copies for ``queue`` during ``delay_ms``."""
    return f"{queue}.delay.{delay_ms}"


def queue_arguments(
    options: TransportOptions, queue: str, *, dead_letter: bool = False, delay_ms: int | None = None
) -> dict[str, Any]:
    """The ``x-`` arguments of an endpoint's ``queue``, of its dead letter queue (``dead_letter``, ``queue`` being
    the dead letter queue's name) or of its delay queue for ``delay_ms`` (``queue`` being the endpoint's queue).

    Classic queues (the default, what an Ecotone service declares) take none, but a delay queue's TTL and where it
    dead-letters to. Quorum queues are replicated on the cluster's nodes. An endpoint's quorum queue dead-letters a
    message returned more than ``delivery_limit`` times (requeued, or unacknowledged when a consumer's connection
    was lost) to its dead letter queue, at least once: never dropped. A quorum delay queue dead-letters back at least
    once too; a quorum dead letter queue has no practical delivery limit (see ``_DEAD_LETTER_DELIVERY_LIMIT``).
    """
    quorum = options.queue_type == "quorum"
    arguments: dict[str, Any] = {"x-queue-type": "quorum"} if quorum else {}
    if delay_ms is not None:
        arguments |= {"x-message-ttl": delay_ms, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue}
        return (arguments | _AT_LEAST_ONCE) if quorum else arguments
    if not quorum:
        return arguments
    if dead_letter:
        return arguments | {"x-delivery-limit": _DEAD_LETTER_DELIVERY_LIMIT}
    return arguments | {
        "x-delivery-limit": options.delivery_limit,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead_letter_queue(queue),
        **_AT_LEAST_ONCE,
    }
