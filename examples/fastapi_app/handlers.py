"""The accounts service's handlers (``scan: [examples.fastapi_app.handlers]``)."""

from __future__ import annotations

from container_messaging import distributed, event_handler
from examples.messages import BillingDetailsWereChanged


class KnownBillingDetails:
    """What accounts knows of each person's billing details, kept up to date by billing's events."""

    def __init__(self) -> None:
        self.details: dict[str, str] = {}

    @distributed
    @event_handler("billing.detailsWereChanged")
    def on_details_changed(self, event: BillingDetailsWereChanged) -> None:
        self.details[event.person_id] = event.billing_details
