"""Minimal settings of the portal project: no database, one app, the messaging app."""

from __future__ import annotations

import os

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
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

# The keys of a YAML configuration (configs/*.yaml), ${VAR:default} interpolation included.
CONTAINER_MESSAGING = {
    "service_name": "portal",
    "transport": {
        "url": "${CONTAINER_MESSAGING_URL:embedded://}",
        "data_folder": "${CONTAINER_MESSAGING_DATA:.container_messaging}",
    },
}
CONTAINER_MESSAGING_AUTODISCOVER = True  # scans examples.django_app.portal.handlers
