#!/usr/bin/env python
"""The portal project's manage.py, runnable from anywhere: ``python examples/django_app/manage.py messaging list``.

::

    python examples/django_app/manage.py migrate                    # the portal's table (SQLite)
    python examples/django_app/manage.py messaging setup            # the queue and the outbox tables
    python examples/django_app/manage.py runserver                  # the web process
    python examples/django_app/manage.py messaging run portal -vv   # its consumer, another process
    python examples/django_app/manage.py messaging run outbox       # the relay, another process
    container-messaging --config configs/billing.yaml run billing   # the billing service
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: ``examples`` is importable
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.portal_site.settings")
    from django.core.management import execute_from_command_line  # noqa: PLC0415 - after the path and settings

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
