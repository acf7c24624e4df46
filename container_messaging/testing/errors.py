"""The errors of the test system (both :class:`~container_messaging.errors.MessagingError` s)."""

from __future__ import annotations

from container_messaging.errors import MessagingError

__all__ = ["MessageFailedError", "TestSystemError"]


class TestSystemError(MessagingError):
    """The test system was used in a way it cannot honour: services that keep messaging each other past the run's
    message limit, or the test clock with a real broker."""

    __test__ = False


class MessageFailedError(TestSystemError):
    """In a fail-fast run, a message failed where no handler's exception could be raised instead (the dispatcher's
    gate refused it: no distributed handler, another service's command, too large...) and went to the dead letter;
    names the endpoint, the message and the error."""
