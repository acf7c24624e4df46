"""Web framework integrations, each an optional extra: the only modules that import a web framework.

- :mod:`container_messaging.integrations.fastapi` (``pip install 'container-messaging[fastapi]'``): a lifespan that
  builds the container, ``Depends`` for the buses and any type the container provides, consumers in the app.
- :mod:`container_messaging.integrations.django` (``pip install 'container-messaging[django]'``): an installable
  app configured in ``settings.py``, ``get_container()`` for views and services, ``manage.py messaging ...``.
- :mod:`container_messaging.integrations.background`: one endpoint's consumer in a thread of a web process.

Importing an integration whose framework is not installed raises :class:`MissingExtraError` (an ``ImportError``
and a :class:`~container_messaging.errors.ConfigurationError`) saying which extra to install.
"""

from __future__ import annotations

from container_messaging.errors import ConfigurationError

__all__ = ["MissingExtraError", "missing_extra"]


class MissingExtraError(ConfigurationError, ImportError):
    """An integration was imported without its framework: the message says which extra to install."""


def missing_extra(extra: str, framework: str, exc: ImportError) -> MissingExtraError:
    """The error for an integration whose framework failed to import (raise it ``from exc``)."""
    return MissingExtraError(
        f"container_messaging.integrations.{extra} needs {framework}, which could not be imported ({exc}): "
        f"pip install 'container-messaging[{extra}]'",
        name=exc.name,
    )
