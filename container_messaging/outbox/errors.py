"""The outbox's errors (all :class:`~container_messaging.errors.MessagingError`)."""

from __future__ import annotations

from container_messaging.errors import MessagingError

__all__ = ["OutboxDatabaseError", "OutboxError", "OutboxSchemaError"]


class OutboxError(MessagingError):
    """The outbox, its unit of work, its inbox or its relay cannot do what was asked."""


class OutboxSchemaError(OutboxError):
    """The outbox or inbox table is missing or is not the outbox's: run the ``setup`` step."""


class OutboxDatabaseError(OutboxError):
    """A statement of the outbox failed in the database (the database's own error is chained)."""


def database_error(action: str, exc: BaseException) -> OutboxDatabaseError:
    """``action`` (e.g. "writing to the outbox table 'x'") failed with the database error ``exc``: the error to raise
    from it. The driver's message is kept, the SQL text and its parameters (message bodies) are not."""
    reason = getattr(exc, "orig", None) or exc
    text = " ".join(str(reason).split()) or type(reason).__name__
    return OutboxDatabaseError(f"{action} failed: {type(reason).__name__}: {text}")
