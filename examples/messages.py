"""The message classes the example services share (each service could equally keep its own copy)."""

from __future__ import annotations

import attrs


def short_id(message_id: str) -> str:
    """The end of a message id, for printing: a UUID v7 starts with its timestamp, so ids made in the same
    millisecond share their start; their last group is random."""
    return f"...{message_id[-12:]}"


@attrs.frozen
class ChangeBillingDetails:
    """Command: sent by the user service to the billing service as ``billing.changeDetails``."""

    person_id: str
    billing_details: str


@attrs.frozen
class BillingDetailsWereChanged:
    """Event: published by the billing service as ``billing.detailsWereChanged``."""

    person_id: str
    billing_details: str
