"""A framework producer process: ``DistributedBus.send_command`` / ``publish_event`` N times, optionally in
``bus.batch()`` blocks. The clock starts after the publisher connection is open (both sides warm up alike)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.common import write_result
from benchmarks.payloads import COMMAND_KEY, EVENT_KEY, body
from container_messaging import DistributedBus, MessagingContainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--service", required=True, help="this sender's own service name")
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--kind", choices=["command", "event"], default="command")
    parser.add_argument("--destination", help="the service commands go to")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--batch", type=int, default=0, help="messages per bus.batch() block (0: no batch)")
    parser.add_argument("--rate", type=float, default=0.0, help="paced commands per second (0: as fast as possible)")
    parser.add_argument("--confirm", choices=["on", "off"], default="on")
    parser.add_argument("--data-folder")
    parser.add_argument("--polling-interval", type=float, default=0.05)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)

    transport: dict[str, Any] = {
        "url": args.url,
        "confirm_publish": args.confirm == "on",
        "polling_interval": args.polling_interval,
    }
    if args.data_folder:
        transport["data_folder"] = args.data_folder
    container = MessagingContainer.from_dict(
        {"service_name": args.service, "transport": transport, "distribution": {"exchange": args.exchange}}
    )
    with container:
        bus = container.get(DistributedBus)
        container.transport.declare_exchange(args.exchange)  # opens the publisher connection before the clock
        count, batch, destination = args.count, args.batch, args.destination
        first = time.time()
        if args.rate:  # paced: message i leaves at first + i / rate
            for i in range(count):
                delay = first + i / args.rate - time.time()
                if delay > 0:
                    time.sleep(delay)
                bus.send_command(destination, COMMAND_KEY, body(i, time.time()), "application/json")
        elif args.kind == "command":
            if batch:
                for start in range(0, count, batch):
                    with bus.batch():
                        for i in range(start, min(count, start + batch)):
                            bus.send_command(destination, COMMAND_KEY, body(i, time.time()), "application/json")
            else:
                for i in range(count):
                    bus.send_command(destination, COMMAND_KEY, body(i, time.time()), "application/json")
        elif batch:
            for start in range(0, count, batch):
                with bus.batch():
                    for i in range(start, min(count, start + batch)):
                        bus.publish_event(EVENT_KEY, body(i, time.time()), "application/json")
        else:
            for i in range(count):
                bus.publish_event(EVENT_KEY, body(i, time.time()), "application/json")
        last = time.time()
    write_result(args.result, {"first_publish": first, "last_publish": last, "count": count})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
