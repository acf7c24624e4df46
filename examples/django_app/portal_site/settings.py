"""Minimal settings of the portal project: one app, the messaging app, a SQLite database that the outbox shares."""

from __future__ import annotations

import os
from pathlib import Path

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "portal-example-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]

INSTALLED_APPS = [
    "container_messaging.integrations.django",
    "examples.django_app.portal",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
ROOT_URLCONF = "examples.django_app.portal_site.urls"
# The data folder holds the database and the embedded transport's files.
DATA = Path(os.environ.get("CONTAINER_MESSAGING_DATA", ".container_messaging"))
DATA.mkdir(parents=True, exist_ok=True)
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(DATA / "portal.sqlite3")}}
USE_TZ = True

# The keys of a YAML configuration (configs/*.yaml), ${VAR:default} interpolation included.
CONTAINER_MESSAGING = {
    "service_name": "portal",
    "transport": {
        "url": "${CONTAINER_MESSAGING_URL:embedded://}",
        "data_folder": "${CONTAINER_MESSAGING_DATA:.container_messaging}",
    },
    # A command sent inside transaction.atomic() commits with the portal's rows (in DATABASES["default"], the
    # outbox's database when database_url is left out) and is published after Django's commit; what a crash leaves
    # behind, ``manage.py messaging run outbox`` publishes.
    "outbox": {"enabled": True},
}
CONTAINER_MESSAGING_AUTODISCOVER = True  # scans examples.django_app.portal.handlers
