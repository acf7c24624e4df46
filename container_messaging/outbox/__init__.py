"""The outbox and the inbox: messages commit with the application's data, and are handled once.

Needs the ``outbox`` extra (SQLAlchemy 2, psycopg 3): ``pip install 'container-messaging[outbox]'``. This package is
the only one that imports SQLAlchemy; the core never imports it.

- :class:`UnitOfWork` (``with unit_of_work.begin() as connection: ...``): what any bus sends inside it is written to
  the outbox table in that transaction, and published after the commit.
- ``@transactional`` handlers (:func:`container_messaging.markers.transactional`) run in a unit of work with an inbox
  record of the message: their writes, the record and what they send commit together.
- :class:`OutboxRelay`, the ``outbox`` endpoint, publishes whatever a crash or a broker outage left behind.
- :func:`install` builds it all for a container; :meth:`Outbox.setup` creates the tables.
"""

from __future__ import annotations

try:
    import sqlalchemy  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on what is installed
    from container_messaging.errors import ConfigurationError

    raise ConfigurationError(
        "the outbox needs SQLAlchemy, which is not installed: pip install 'container-messaging[outbox]'"
    ) from exc

from container_messaging.config import OutboxSettings
from container_messaging.markers import transactional
from container_messaging.outbox.errors import OutboxDatabaseError, OutboxError, OutboxSchemaError
from container_messaging.outbox.forwarding import Forwarded
from container_messaging.outbox.installation import Outbox, install
from container_messaging.outbox.relay import RELAY_ENDPOINT, OutboxRelay, Retention
from container_messaging.outbox.store import OutboxEntry
from container_messaging.outbox.transport import OutboxTransport
from container_messaging.outbox.unit_of_work import UnitOfWork

__all__ = [
    "Forwarded",
    "Outbox",
    "OutboxDatabaseError",
    "OutboxEntry",
    "OutboxError",
    "OutboxRelay",
    "OutboxSchemaError",
    "OutboxSettings",
    "OutboxTransport",
    "RELAY_ENDPOINT",
    "Retention",
    "UnitOfWork",
    "install",
    "transactional",
]
