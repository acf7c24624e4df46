"""``OutboxSettings``: the ``outbox`` group of the configuration, with its defaults and checks.

Every check names the key (``outbox.relay_batch_size: must be at least 1, got 0``); the database URL's password is
masked in the repr and in every error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Final

import attrs

from container_messaging.errors import ConfigurationError
from container_messaging.redaction import mask_url

__all__ = ["DEFAULT_DATABASE_URL", "OutboxSettings"]

#: The embedded default: a SQLite file beside the embedded transport's (relative to the working directory).
DEFAULT_DATABASE_URL: Final = "sqlite:///.container_messaging/outbox.sqlite3"

_DIALECTS: Final = ("postgresql", "postgres", "sqlite")
_TABLE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")


def _where(attribute: attrs.Attribute[Any]) -> str:
    return f"outbox.{attribute.name}"


def _bool(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{_where(attribute)}: expected a boolean, got {value!r}")


def _at_least_one(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"{_where(attribute)}: must be a whole number of at least 1, got {value!r}")


def _seconds(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{_where(attribute)}: must be a positive number of seconds, got {value!r}")


def _table_name(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not _TABLE_NAME.fullmatch(value):
        raise ConfigurationError(
            f"{_where(attribute)}: must be a table name of letters, digits and '_' (not starting with a digit, "
            f"at most 48 characters), got {value!r}"
        )


def _database_url(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise ConfigurationError(f"{_where(attribute)}: expected a database URL string, got {type(value).__name__}")
    scheme, separator, _ = value.partition("://")
    dialect = scheme.partition("+")[0]
    if not separator or dialect not in _DIALECTS:
        raise ConfigurationError(
            f"{_where(attribute)}: expected a PostgreSQL or SQLite URL (postgresql://user@host:5432/database, "
            f"sqlite:///path/to/file.sqlite3), got {mask_url(value)!r}"
        )


def _masked(url: str) -> str:
    return repr(mask_url(url))


def _float(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _option(default: Any, validator: Callable[[Any, attrs.Attribute[Any], Any], None], **kwargs: Any) -> Any:
    return attrs.field(default=default, validator=validator, **kwargs)


@attrs.frozen
class OutboxSettings:
    """The outbox and inbox (``outbox`` group).

    ``enabled``: whether the container installs the outbox. ``database_url``: the application's database
    (``postgresql://`` uses psycopg 3; ``sqlite:///path``). ``outbox_table`` / ``inbox_table``: the table names.
    ``relay_batch_size``: messages the relay publishes per transaction. ``relay_polling_interval``: seconds the relay
    waits when the outbox is empty. ``retention``: seconds sent messages and inbox records are kept before the relay
    deletes them (longer than any redelivery can take). ``publish_after_commit``: publish right after the commit, in
    the committing process (off: only the relay publishes).
    """

    enabled: bool = _option(False, _bool)
    database_url: str = _option(DEFAULT_DATABASE_URL, _database_url, repr=_masked)
    outbox_table: str = _option("container_messaging_outbox", _table_name)
    inbox_table: str = _option("container_messaging_inbox", _table_name)
    relay_batch_size: int = _option(100, _at_least_one)
    relay_polling_interval: float = _option(1.0, _seconds, converter=_float)
    retention: float = _option(7 * 24 * 3600.0, _seconds, converter=_float)
    publish_after_commit: bool = _option(True, _bool)

    def __attrs_post_init__(self) -> None:
        if self.outbox_table.lower() == self.inbox_table.lower():
            raise ConfigurationError(
                f"outbox.inbox_table: must differ from outbox.outbox_table, both are {self.inbox_table!r}"
            )

    @property
    def masked_database_url(self) -> str:
        """The database URL with its password (if any) replaced by ``***``."""
        return mask_url(self.database_url)
