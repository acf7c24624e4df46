"""Reading the messaging configuration from Django's settings.

``settings.CONTAINER_MESSAGING``
    The configuration: a mapping with exactly the keys of a YAML configuration (``service_name``, ``scan``,
    ``transport``, ... with ``${VAR:default}`` interpolation), or the path of a YAML or INI file. Errors name
    ``settings.CONTAINER_MESSAGING`` (or the file) and the key.
``settings.CONTAINER_MESSAGING_AUTODISCOVER`` (default ``False``)
    ``True`` adds each installed app's ``handlers`` module, when it has one, to ``scan``; a string names another
    module to look for (``"messaging"`` finds ``<app>.messaging``).
``settings.CONTAINER_MESSAGING_DATABASE`` (default ``"default"``)
    With the outbox enabled (``outbox: {enabled: true}``): the Django database whose ``transaction.atomic()`` blocks
    the outbox joins (:mod:`container_messaging.integrations.django.transactions`). ``outbox.database_url`` left out
    means that database (the relay and the publish after the commit connect to it); given, it must name the same
    database. ``None``: the outbox keeps apart from Django's transactions (``UnitOfWork.begin()`` only).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

import attrs
from django.apps import apps
from django.conf import settings as django_settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.utils.module_loading import module_has_submodule

from container_messaging.config import OutboxSettings, Settings, load_settings, settings_from_dict
from container_messaging.container import MessagingContainer
from container_messaging.errors import ConfigurationError
from container_messaging.redaction import SecretUrl, mask_url

__all__ = [
    "AUTODISCOVER_SETTING",
    "DATABASE_SETTING",
    "SETTING",
    "build_container",
    "discovered_modules",
    "django_database_url",
    "messaging_settings",
    "outbox_database",
]

SETTING: Final = "CONTAINER_MESSAGING"
AUTODISCOVER_SETTING: Final = "CONTAINER_MESSAGING_AUTODISCOVER"
DATABASE_SETTING: Final = "CONTAINER_MESSAGING_DATABASE"
_SOURCE: Final = f"settings.{SETTING}"
# Django's PostgreSQL OPTIONS that are libpq connection parameters (the others are Django's own).
_LIBPQ_OPTIONS: Final = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "options",
    "application_name",
    "connect_timeout",
    "target_session_attrs",
    "service",
    "passfile",
)


def discovered_modules() -> list[str]:
    """The installed apps' modules that ``CONTAINER_MESSAGING_AUTODISCOVER`` asks to scan, in app order."""
    wanted = getattr(django_settings, AUTODISCOVER_SETTING, False)
    if wanted is False or wanted is None:
        return []
    if wanted is True:
        wanted = "handlers"
    if not isinstance(wanted, str) or not wanted.isidentifier():
        raise ConfigurationError(
            f"settings.{AUTODISCOVER_SETTING}: expected True, False or a module name like 'handlers', got {wanted!r}"
        )
    return [f"{app.name}.{wanted}" for app in apps.get_app_configs() if module_has_submodule(app.module, wanted)]


def messaging_settings() -> Settings:
    """The settings of ``settings.CONTAINER_MESSAGING``, with the discovered modules added to ``scan`` and the outbox's
    ``database_url`` defaulting to Django's database."""
    raw = getattr(django_settings, SETTING, None)
    if raw is None:
        raise ConfigurationError(
            f"{_SOURCE} is not set: give it the keys of a YAML configuration "
            "({'service_name': ..., 'scan': [...], 'transport': {'url': ...}}) or the path of a configuration file"
        )
    if isinstance(raw, str | os.PathLike):
        settings = load_settings(raw)
    elif isinstance(raw, Mapping):
        settings = settings_from_dict(raw, source=_SOURCE)
    else:
        raise ConfigurationError(
            f"{_SOURCE}: expected a mapping of settings or the path of a configuration file, got {type(raw).__name__}"
        )
    extra = [module for module in discovered_modules() if module not in settings.scan]
    if extra:
        settings = attrs.evolve(settings, scan=(*settings.scan, *extra))
    return _with_outbox_database(settings)


def outbox_database() -> str | None:
    """The alias of the Django database whose transactions the outbox joins (``CONTAINER_MESSAGING_DATABASE``), or
    None when it keeps apart."""
    alias = getattr(django_settings, DATABASE_SETTING, DEFAULT_DB_ALIAS)
    if alias is None:
        return None
    known = list(connections)
    if not isinstance(alias, str) or alias not in known:
        raise ConfigurationError(
            f"settings.{DATABASE_SETTING}: expected the alias of a database in settings.DATABASES "
            f"({', '.join(map(repr, known))}) or None, got {alias!r}"
        )
    return alias


def django_database_url(alias: str) -> str:
    """The URL of Django's database ``alias`` for the outbox: ``sqlite:////abs/path`` or ``postgresql://...``."""
    wrapper = connections[alias]
    database = wrapper.settings_dict
    where = f"settings.DATABASES[{alias!r}]"
    name = str(database.get("NAME") or "")
    if wrapper.vendor == "sqlite":
        if not name or name == ":memory:" or "mode=memory" in name:
            raise ConfigurationError(
                f"{where}: the outbox needs a SQLite file that its relay can open too, not an in-memory database"
            )
        return f"sqlite:///{os.path.abspath(name)}"
    if wrapper.vendor != "postgresql":
        raise ConfigurationError(f"{where} is {wrapper.vendor}: the outbox supports PostgreSQL and SQLite")
    host, port = str(database.get("HOST") or ""), str(database.get("PORT") or "")
    options = database.get("OPTIONS") or {}
    query = {key: str(options[key]) for key in _LIBPQ_OPTIONS if key in options}
    if host.startswith("/"):  # a Unix socket folder
        query["host"], host = host, ""
    credentials = quote(str(database.get("USER") or ""), safe="")
    if database.get("PASSWORD"):
        credentials += ":" + quote(str(database["PASSWORD"]), safe="")
    netloc = f"{credentials}@" if credentials else ""
    netloc += (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    return urlunsplit(("postgresql", netloc, "/" + quote(name, safe=""), urlencode(query), ""))


def _identity(url: str) -> tuple[str, ...]:
    """What names one database in a URL: the SQLite file, or PostgreSQL's host, port and database name."""
    parts = urlsplit(url)
    if parts.scheme.startswith("sqlite"):
        return ("sqlite", os.path.abspath(unquote(url.split(":///", 1)[-1])))
    return ("postgresql", parts.hostname or "", str(parts.port or 5432), unquote(parts.path.lstrip("/")))


def _with_outbox_database(settings: Settings) -> Settings:
    """``outbox.database_url`` defaults to the Django database the outbox joins, and may not name another one."""
    alias = outbox_database()
    if not settings.outbox.enabled or alias is None:
        return settings
    url = django_database_url(alias)
    given = settings.outbox.database_url
    if given == OutboxSettings().database_url:  # left out
        return attrs.evolve(settings, outbox=attrs.evolve(settings.outbox, database_url=SecretUrl(url)))
    if _identity(given.reveal()) != _identity(url):
        raise ConfigurationError(
            f"{_SOURCE}: outbox.database_url {given} is not Django's database {alias!r} ({mask_url(url)}), whose "
            f"transactions the outbox joins: leave outbox.database_url out, or set settings.{DATABASE_SETTING} = "
            "None to keep the outbox apart from Django's transactions"
        )
    return settings


def build_container() -> MessagingContainer:
    """A new container from Django's settings (the caller closes it); views use the shared ``get_container()``.
    With the outbox enabled, its unit of work follows the atomic blocks of ``CONTAINER_MESSAGING_DATABASE``."""
    settings = messaging_settings()
    container = MessagingContainer(settings)
    alias = outbox_database()
    if settings.outbox.enabled and alias is not None:
        # The outbox extra (SQLAlchemy) is imported only when the outbox is on.
        from container_messaging.integrations.django.transactions import DjangoTransaction  # noqa: PLC0415
        from container_messaging.outbox import UnitOfWork  # noqa: PLC0415

        try:
            container.get(UnitOfWork).follow(DjangoTransaction(alias))
        except BaseException:
            container.close()
            raise
    return container
