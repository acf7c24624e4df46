"""Reading the messaging configuration from Django's settings.

``settings.CONTAINER_MESSAGING``
    The configuration: a mapping with exactly the keys of a YAML configuration (``service_name``, ``scan``,
    ``transport``, ... with ``${VAR:default}`` interpolation), or the path of a YAML or INI file. Errors name
    ``settings.CONTAINER_MESSAGING`` (or the file) and the key.
``settings.CONTAINER_MESSAGING_AUTODISCOVER`` (default ``False``)
    ``True`` adds each installed app's ``handlers`` module, when it has one, to ``scan``; a string names another
    module to look for (``"messaging"`` finds ``<app>.messaging``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

import attrs
from django.apps import apps
from django.conf import settings as django_settings
from django.utils.module_loading import module_has_submodule

from container_messaging.config import Settings, load_settings, settings_from_dict
from container_messaging.container import MessagingContainer
from container_messaging.errors import ConfigurationError

__all__ = ["AUTODISCOVER_SETTING", "SETTING", "build_container", "discovered_modules", "messaging_settings"]

SETTING: Final = "CONTAINER_MESSAGING"
AUTODISCOVER_SETTING: Final = "CONTAINER_MESSAGING_AUTODISCOVER"
_SOURCE: Final = f"settings.{SETTING}"


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
    """The settings of ``settings.CONTAINER_MESSAGING``, with the discovered modules added to ``scan``."""
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
    return attrs.evolve(settings, scan=(*settings.scan, *extra)) if extra else settings


def build_container() -> MessagingContainer:
    """A new container from Django's settings (the caller closes it); views use the shared ``get_container()``."""
    return MessagingContainer(messaging_settings())
