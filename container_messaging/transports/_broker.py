"""What every adapter of a broker shares whatever its client library (kombu for most, redis-py for Redis): the
options, the description without password, broker and socket errors mapped to TransportError, the TLS file checks,
and the words of a publish that failed.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Final, NoReturn, TypeVar

from container_messaging.errors import BrokerRefusedError, ConfigurationError, TransportError, UnroutableMessageError
from container_messaging.transports.base import BaseTransport, OutboundMessage
from container_messaging.transports.options import TransportOptions

__all__ = ["BrokerTransport", "MAYBE_SENT", "causes", "publish_failure"]

log = logging.getLogger("container_messaging.transport")

P = TypeVar("P")

#: What a failed publish says when an attempt failed after sending.
MAYBE_SENT: Final = "may or may not have reached the broker"
#: Exceptions raised from these packages are broker errors, whatever their class.
_BROKER_MODULES: Final = frozenset({"kombu", "amqp", "redis", "sqlite3"})


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the exceptions it was raised from (client libraries wrap each other's errors)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def publish_failure(what: str, attempts: int, maybe_sent: bool, failure: TransportError) -> TransportError:
    """The error of a publish that failed ``attempts`` times (raise it from ``failure``), saying what is known: never
    sent, or sent and not confirmed (it may or may not have reached the broker)."""
    outcome = f"not confirmed: an attempt failed after sending, so it {MAYBE_SENT}" if maybe_sent else "not sent"
    return TransportError(f"{what}: {outcome} after {attempts} attempt(s); the last one: {failure}")


class BrokerTransport(BaseTransport):
    """A transport to one broker URL: its options, its description, and its errors mapped at the boundary."""

    def __init__(self, options: TransportOptions) -> None:
        self.options = options
        self.description = options.masked_url

    def refused(self, error: BaseException) -> bool:
        """Whether ``error`` (one of a chain) says the broker refused us for good (credentials, vhost, rights)."""
        return False

    def explain(self, error: BaseException) -> str:
        """What went wrong, for an error message: the error, and what to check when TLS verification failed."""
        text = f"{type(error).__name__}: {error}"
        tls_errors = [cause for cause in causes(error) if isinstance(cause, ssl.SSLError)]
        if any(isinstance(cause, ssl.SSLCertVerificationError) for cause in tls_errors):
            ca = self.options.ssl_ca_certs
            text += (
                " (the broker's TLS certificate could not be verified with "
                f"{f'the CA file {ca!r}' if ca else 'the default CA certificates'} (transport.ssl_ca_certs): did "
                "that CA sign it, for this host name? ssl_verify false turns verification off)"
            )
        elif tls_errors:
            text += (
                " (the TLS handshake failed: does the broker require a client certificate (transport.ssl_certfile, "
                "ssl_keyfile), and does it speak TLS on this port?)"
            )
        return text

    def broker_error(
        self, action: str, error: BaseException, errors: tuple[type[BaseException], ...]
    ) -> TransportError | None:
        """``error`` as a :class:`TransportError` naming ``action`` and the redacted URL (a
        :class:`BrokerRefusedError` when the broker refused for good); None when it is already a TransportError or
        not a broker or socket error at all (a bug: left as it is)."""
        if isinstance(error, TransportError) or not isinstance(error, Exception):
            return None
        if not (isinstance(error, errors) or type(error).__module__.partition(".")[0] in _BROKER_MODULES):
            return None
        kind = BrokerRefusedError if any(self.refused(cause) for cause in causes(error)) else TransportError
        return kind(f"{action} failed on {self.description}: {self.explain(error)}")

    def reraise(self, action: str, error: Exception, errors: tuple[type[BaseException], ...]) -> NoReturn:
        """Raises ``error`` mapped by :meth:`broker_error` (from ``error``), or as it is when it needs no mapping."""
        mapped = self.broker_error(action, error, errors)
        if mapped is None:
            raise error
        raise mapped from error

    def reset_publisher(self) -> None:
        """Drops the publishing connection (the next publish connects again)."""

    def retrying(self, what: str, prepare: Callable[[], P], send: Callable[[P], None]) -> None:
        """Publishes: ``send(prepare())``. ``prepare`` connects (and whatever else comes before the first byte of the
        message leaves); both raise TransportError for a broker error. A lost connection is retried
        ``publish_retries`` times (reconnecting, with back-off, logged at INFO); then one TransportError says what is
        known: the message was never sent, or an attempt failed after sending it (it may have reached the broker). A
        refusal for good and an unroutable message are raised at once."""
        attempts = max(self.options.publish_retries, 0) + 1
        maybe_sent = False
        for attempt in range(1, attempts + 1):
            sending = False
            try:
                prepared = prepare()
                sending = True
                send(prepared)
                return
            except (UnroutableMessageError, BrokerRefusedError):
                raise
            except TransportError as exc:
                failure, maybe_sent = exc, maybe_sent or sending
            self.reset_publisher()
            if attempt < attempts:
                log.info("%s failed (attempt %d of %d), reconnecting: %s", what, attempt, attempts, failure)
                time.sleep(min(0.2 * 2 ** (attempt - 1), 2.0))
        raise publish_failure(what, attempts, maybe_sent, failure) from failure

    def check_tls_files(self) -> None:
        """A configured CA bundle, certificate or key that is not a file is an error naming it (rather than the
        client's bare ``No such file or directory``)."""
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self.options, name)
            if path is not None and not os.path.isfile(path):
                raise ConfigurationError(
                    f"transport.{name}: no such file {path!r} (TLS for {self.description}; the path is relative to "
                    f"the working directory {os.getcwd()!r})"
                )

    def unroutable(self, exchange: str, routing_key: str) -> str:
        """The message of an :class:`~container_messaging.errors.UnroutableMessageError`."""
        if not exchange:
            return f"there is no queue {routing_key!r} on {self.description}"
        return (
            f"no queue is bound to routing key {routing_key!r} on exchange {exchange!r} ({self.description}): "
            "is the destination service's consumer set up (container-messaging setup / run)?"
        )

    def unroutable_among(
        self, exchange: str, unrouted: Sequence[OutboundMessage], of: int, *, outcome: str
    ) -> UnroutableMessageError:
        """The error for the messages ``unrouted`` of a batch of ``of`` that no queue received (``outcome``: what
        became of them, e.g. ``"were returned"``); a batch of one gets :meth:`unroutable`'s message."""
        if of == 1:
            return UnroutableMessageError(self.unroutable(exchange, unrouted[0].routing_key))
        keys = ", ".join(sorted({repr(message.routing_key) for message in unrouted}))
        return UnroutableMessageError(
            f"{len(unrouted)} of {of} messages {outcome}: no queue is bound to routing key {keys} on exchange "
            f"{exchange!r} ({self.description}): {[message.message_id for message in unrouted]}; the others were "
            "published"
        )
