"""The Django app: ``INSTALLED_APPS = [..., "container_messaging.integrations.django"]``."""

from __future__ import annotations

import threading
from typing import Any

from django.apps import AppConfig
from django.core.signals import setting_changed

from container_messaging.container import MessagingContainer
from container_messaging.integrations.django.conf import (
    AUTODISCOVER_SETTING,
    DATABASE_SETTING,
    SETTING,
    build_container,
    messaging_settings,
)

__all__ = ["MessagingAppConfig"]


class MessagingAppConfig(AppConfig):
    """Checks the configuration when Django starts and holds the process's shared container, built on first use."""

    name = "container_messaging.integrations.django"
    label = "container_messaging"
    verbose_name = "Messaging"
    default = True

    def __init__(self, app_name: str, app_module: Any) -> None:
        super().__init__(app_name, app_module)
        self._container: MessagingContainer | None = None
        self._lock = threading.Lock()

    def ready(self) -> None:
        messaging_settings()  # a wrong configuration stops Django's start, naming the setting and the key
        setting_changed.connect(self._setting_changed, dispatch_uid=f"{self.label}.setting_changed")

    def _setting_changed(self, *, setting: str, **_: Any) -> None:
        # override_settings in tests: the next use builds anew
        if setting in (SETTING, AUTODISCOVER_SETTING, DATABASE_SETTING):
            self.close_container()

    def get_container(self) -> MessagingContainer:
        """The shared container, built (scanning the handler modules) on the first call."""
        with self._lock:
            if self._container is None:
                self._container = build_container()
            return self._container

    def close_container(self) -> None:
        """Closes the shared container, if it was built; the next ``get_container()`` builds a new one."""
        with self._lock:
            container, self._container = self._container, None
        if container is not None:
            container.close()
