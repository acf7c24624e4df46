"""The ticket service's handlers (``scan = examples.ticket``)."""

from __future__ import annotations

from container_messaging import Headers, distributed, event_handler


class TicketService:
    @distributed
    @event_handler("billing.*")
    def open_ticket(self, event: dict[str, str], metadata: Headers) -> None:
        print(
            f"[ticket] opened a ticket for {metadata['ecotone.distributed.routingKey']} of person {event['personId']}",
            flush=True,
        )
