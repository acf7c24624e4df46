"""Django integration: ``pip install 'container-messaging[django]'``.

::

    # settings.py
    INSTALLED_APPS = [..., "container_messaging.integrations.django"]
    CONTAINER_MESSAGING = {
        "service_name": "portal",
        "scan": ["portal.messaging"],
        "transport": {"url": "${CONTAINER_MESSAGING_URL:embedded://}"},
    }
    CONTAINER_MESSAGING_AUTODISCOVER = True  # also scan each installed app's ``handlers`` module

    # views.py
    from container_messaging import DistributedBus
    from container_messaging.integrations.django import get_container

    get_container().get(DistributedBus).convert_and_send_command("billing", "billing.changeDetails", command)

The configuration is checked when Django starts (``AppConfig.ready``); the shared container is built on first use
and lives as long as the process. ``manage.py messaging list | run NAME | setup [NAME] | dead-letter ...`` are the
console commands (see :mod:`container_messaging.integrations.django.management.commands.messaging`). With the
outbox enabled, what is sent inside ``transaction.atomic()`` commits with it and is published after Django's commit
(:mod:`container_messaging.integrations.django.transactions`).
"""

from __future__ import annotations

from typing import cast

from container_messaging.integrations import missing_extra

try:
    from django.apps import apps as app_registry  # not "apps": the submodule apps.py would shadow it
    from django.core.exceptions import AppRegistryNotReady
except ImportError as exc:
    raise missing_extra("django", "Django", exc) from exc

from container_messaging.container import MessagingContainer
from container_messaging.errors import ConfigurationError
from container_messaging.integrations.django.apps import MessagingAppConfig

__all__ = ["APP", "close_container", "get_container"]

APP = "container_messaging.integrations.django"


def _app_config() -> MessagingAppConfig:
    try:
        config = app_registry.get_app_config(MessagingAppConfig.label)
    except LookupError:
        raise ConfigurationError(f"add {APP!r} to settings.INSTALLED_APPS to use the messaging container") from None
    except AppRegistryNotReady as exc:
        raise ConfigurationError(
            "the messaging container was asked for before Django's apps were ready: ask for it in a view or a "
            "service, not when a models or apps module is imported"
        ) from exc
    return cast(MessagingAppConfig, config)


def get_container() -> MessagingContainer:
    """The process's shared messaging container (built on the first call): ``get_container().get(DistributedBus)``."""
    return _app_config().get_container()


def close_container() -> None:
    """Closes the shared container; the next :func:`get_container` builds a new one from the settings."""
    _app_config().close_container()
