"""The message classes the example services share (each service could equally keep its own copy)."""

from __future__ import annotations

import attrs


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
