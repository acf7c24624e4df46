"""The portal's handlers, found by ``CONTAINER_MESSAGING_AUTODISCOVER`` (each installed app's ``handlers``)."""

from __future__ import annotations

from django.core.cache import cache

from container_messaging import distributed, event_handler
from examples.messages import BillingDetailsWereChanged


def cache_key(person_id: str) -> str:
    return f"billing-details:{person_id}"


@distributed
@event_handler("billing.detailsWereChanged")
def remember_billing_details(event: BillingDetailsWereChanged) -> None:
    """Keeps what billing says in Django's cache, where the view reads it."""
    cache.set(cache_key(event.person_id), event.billing_details, timeout=None)
