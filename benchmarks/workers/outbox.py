"""The outbox's cost, on PostgreSQL and RabbitMQ, in alternating blocks of one process:

- send: each message in its own unit of work (an application row inserted, the command written to the outbox,
  commit, then the publish right after the commit and the row marked sent), against the same row committed and the
  command sent directly after it (the dual write an application does without an outbox), and against a direct send
  with no database at all;
- relay: N messages committed to the outbox (publishing after the commit off), then published by the relay, against
  the same N published directly in batches of the relay's batch size (``DistributedBus.batch()``, one confirm wait
  per batch).

Every message is checked to have reached the destination queue."""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from typing import Any

from dependency_injector import containers, providers
from sqlalchemy import Column, Integer, MetaData, String, Table

from benchmarks.common import Broker, write_result
from container_messaging import DistributedBus, MessagingContainer, RunOptions
from container_messaging.outbox import OutboxSettings, install

BODY = '{"personId":"p-000123","seq":123}'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--messages", type=int, required=True, help="per block and side")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)

    unique = uuid.uuid4().hex[:8]
    exchange, target, sender = f"bench.outbox.{unique}", f"benchoutbox{unique}", f"benchsender{unique}"
    transport = {"url": args.amqp_url}
    distribution = {"exchange": exchange}
    settings = OutboxSettings(
        enabled=True,
        database_url=args.database_url,
        outbox_table=f"bench_{unique}_outbox",
        inbox_table=f"bench_{unique}_inbox",
    )
    relay_settings = OutboxSettings(
        enabled=True,
        database_url=args.database_url,
        outbox_table=f"bench_{unique}_relayed",
        inbox_table=f"bench_{unique}_inbox2",
        publish_after_commit=False,
    )
    real = MessagingContainer.from_dict({"transport": transport}).transport
    outbox, deferred = install(settings, real), install(relay_settings, real)
    orders = Table(f"bench_{unique}_orders", MetaData(), Column("seq", Integer), Column("note", String(40)))
    with MessagingContainer.from_dict(
        {"service_name": target, "transport": transport, "distribution": distribution}
    ) as consumer:
        consumer.setup()  # the destination's queue, so the commands are routable

    def container_for(which: Any) -> MessagingContainer:
        app = containers.DynamicContainer()
        app.unit_of_work = providers.Object(which.unit_of_work)
        config = {"service_name": sender, "transport": transport, "distribution": distribution}
        return MessagingContainer.from_dict(config, transport=which.transport, app=app)

    sending, relaying = container_for(outbox), container_for(deferred)
    try:
        for part in (outbox, deferred):
            part.setup()
        orders.metadata.create_all(outbox.engine)
        bus, deferred_bus = sending.get(DistributedBus), relaying.get(DistributedBus)
        begin, engine = outbox.unit_of_work.begin, outbox.engine
        insert = orders.insert()
        batch = relay_settings.relay_batch_size

        def send() -> None:
            bus.send_command(target, "bench.command", BODY, "application/json")

        def in_unit_of_work(seq: int) -> None:
            with begin() as connection:
                connection.execute(insert, {"seq": seq, "note": "placed"})
                send()

        def commit_then_send(seq: int) -> None:
            with engine.begin() as connection:
                connection.execute(insert, {"seq": seq, "note": "placed"})
            send()

        def direct(_seq: int) -> None:
            send()

        def rate(step: Callable[[int], None]) -> float:
            start = time.perf_counter()
            for seq in range(args.messages):
                step(seq)
            return args.messages / (time.perf_counter() - start)

        def relayed() -> float:
            with deferred.unit_of_work.begin():
                for _ in range(args.messages):
                    deferred_bus.send_command(target, "bench.command", BODY, "application/json")
            start = time.perf_counter()
            result = deferred.relay().run(RunOptions(finish_when_no_messages=True))
            elapsed = time.perf_counter() - start
            if result.handled != args.messages:
                raise SystemExit(f"the relay published {result.handled} of {args.messages}")
            return args.messages / elapsed

        def batched() -> float:
            start = time.perf_counter()
            for first in range(0, args.messages, batch):
                with bus.batch():
                    for _ in range(min(batch, args.messages - first)):
                        send()
            return args.messages / (time.perf_counter() - start)

        for step in (in_unit_of_work, commit_then_send, direct):  # warm-up: connections, statement caches
            for seq in range(50):
                step(seq)
        figures: dict[str, list[float]] = {"outbox": [], "commit_then_send": [], "direct": [], "relay": [], "batch": []}
        for _ in range(args.blocks):
            figures["outbox"].append(rate(in_unit_of_work))
            figures["commit_then_send"].append(rate(commit_then_send))
            figures["direct"].append(rate(direct))
            figures["relay"].append(relayed())
            figures["batch"].append(batched())
        expected = 150 + args.blocks * args.messages * 5
        queued = real.queue_size(f"distributed_{target}")
        if queued != expected:
            raise SystemExit(f"{queued} messages reached the destination queue, expected {expected}")
        if outbox.pending_count() or deferred.pending_count():
            raise SystemExit("messages were left in the outbox")
        write_result(args.result, {"messages": args.messages, "blocks": args.blocks, **figures})
    finally:
        with Broker(args.amqp_url) as broker:
            broker.delete_service(target, exchange)
        orders.metadata.drop_all(outbox.engine)
        for part in (outbox, deferred):
            part.schema.drop(part.engine)
            part.close()
        sending.close()
        relaying.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
