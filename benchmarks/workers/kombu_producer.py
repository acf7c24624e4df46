"""The baseline producer: raw kombu ``Producer.publish``, persistent, application/json, with headers of the same
size as the framework's. The clock starts after the connection is open and the exchange declared."""

from __future__ import annotations

import argparse
import time

import kombu

from benchmarks.common import write_result
from benchmarks.payloads import body
from benchmarks.workers import rawkombu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--exchange", default="", help="a topic exchange; empty: the default exchange")
    parser.add_argument("--routing-key", required=True)
    parser.add_argument("--kind", choices=["command", "event"], default="command")
    parser.add_argument("--routing-header", required=True, help="the routing-key header (as the framework's)")
    parser.add_argument("--target", help="the target service header (commands)")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--confirm", choices=["on", "off"], default="off")
    parser.add_argument("--mandatory", action="store_true")
    parser.add_argument("--rate", type=float, default=0.0, help="paced messages per second (0: as fast as possible)")
    parser.add_argument("--data-folder")
    parser.add_argument("--polling-interval", type=float, default=0.05)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)

    conn = rawkombu.connection(
        args.url, confirm=args.confirm == "on", data_folder=args.data_folder, polling=args.polling_interval
    )
    try:
        channel = conn.channel()
        producer = kombu.Producer(channel)
        if args.exchange:
            kombu.Exchange(args.exchange, "topic", durable=True)(channel).declare()
        exchange, routing_key, mandatory = args.exchange, args.routing_key, args.mandatory
        kind, header, target, rate = args.kind, args.routing_header, args.target, args.rate
        first = time.time()
        for i in range(args.count):
            if rate:  # paced: message i leaves at first + i / rate
                delay = first + i / rate - time.time()
                if delay > 0:
                    time.sleep(delay)
            headers = rawkombu.headers(kind, header, "benchsender", target)
            producer.publish(
                body(i, time.time()),
                exchange=exchange,
                routing_key=routing_key,
                headers=headers,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                mandatory=mandatory,
                message_id=headers["id"],
            )
        last = time.time()
    finally:
        conn.release()
    write_result(args.result, {"first_publish": first, "last_publish": last, "count": args.count})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
