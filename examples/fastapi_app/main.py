"""The accounts service as a FastAPI app, sending ``billing.changeDetails`` to the billing example service.

Run it (with ``pip install uvicorn``), from the repository root::

    uvicorn --factory examples.fastapi_app.main:create_app                 # the web process only
    container-messaging --config examples/fastapi_app/accounts.yaml run accounts   # its consumer, another process
    container-messaging --config configs/billing.yaml run billing                  # the billing service

    curl -X POST localhost:8000/people/123/billing-details -H 'content-type: application/json' \\
        -d '{"billingDetails": "IBAN-0001"}'
    curl localhost:8000/people/123/billing-details

``create_app(consumers=["accounts"])`` runs the accounts consumer inside the web process instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from container_messaging.integrations.fastapi import (
    DistributedBusDep,
    MessagingConfig,
    from_messaging,
    messaging_lifespan,
    run_blocking,
)
from examples.fastapi_app.handlers import KnownBillingDetails
from examples.messages import ChangeBillingDetails

CONFIG = Path(__file__).with_name("accounts.yaml")


class BillingDetailsBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    billing_details: str = Field(alias="billingDetails", min_length=1)


def create_app(config: MessagingConfig = CONFIG, *, consumers: Iterable[str] = ()) -> FastAPI:
    """The app; ``consumers`` (e.g. ``["accounts"]``) run inside it, in background threads."""
    app = FastAPI(title="accounts", lifespan=messaging_lifespan(config, consumers=consumers))

    @app.post("/people/{person_id}/billing-details", status_code=202)
    async def change_billing_details(
        person_id: str, body: BillingDetailsBody, bus: DistributedBusDep
    ) -> dict[str, str]:
        command = ChangeBillingDetails(person_id, body.billing_details)
        await run_blocking(bus.convert_and_send_command, "billing", "billing.changeDetails", command)
        return {"sent": "billing.changeDetails", "to": "billing"}

    @app.get("/people/{person_id}/billing-details")
    def billing_details(
        person_id: str, known: Annotated[KnownBillingDetails, from_messaging(KnownBillingDetails)]
    ) -> dict[str, str]:
        if person_id not in known.details:
            raise HTTPException(404, f"no billing details known for person {person_id!r} yet")
        return {"personId": person_id, "billingDetails": known.details[person_id]}

    return app
