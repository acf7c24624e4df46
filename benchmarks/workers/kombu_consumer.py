"""The baseline consumer: raw kombu ``Consumer(on_message=...)`` that decodes the JSON, builds the same attrs
object (snake_case keys) and acknowledges each message by hand."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import kombu

from benchmarks.common import median, percentile, write_result
from benchmarks.payloads import PROBE, WIRE_TO_FIELD, BenchCommand
from benchmarks.workers import rawkombu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--exchange", default="", help="a topic exchange to bind to; empty: the default exchange")
    parser.add_argument("--binding", default="")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--data-folder")
    parser.add_argument("--polling-interval", type=float, default=0.05)
    parser.add_argument("--latencies", action="store_true")
    parser.add_argument("--ready", help="a file touched once consuming")
    parser.add_argument("--idle", action="store_true", help="consume nothing in particular until killed")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)

    if args.latencies:
        PROBE.latencies = []
    fields = WIRE_TO_FIELD

    def on_message(message: Any) -> None:
        data = json.loads(message.body)
        command = BenchCommand(**{fields[key]: value for key, value in data.items()})
        PROBE.handled(command.sent_at)
        message.ack()

    conn = rawkombu.connection(args.url, data_folder=args.data_folder, polling=args.polling_interval)
    try:
        channel = conn.channel()
        if args.exchange:
            exchange = kombu.Exchange(args.exchange, "topic", durable=True)
            queue = kombu.Queue(args.queue, exchange, routing_key=args.binding, durable=True, auto_delete=False)
        else:
            queue = kombu.Queue(args.queue, durable=True, auto_delete=False)
        queue(channel).declare()
        consumer = kombu.Consumer(
            channel,
            queues=[queue],
            on_message=on_message,
            accept=["application/json"],
            prefetch_count=args.prefetch,
            no_ack=False,
        )
        consumer.consume()
        if args.ready:
            Path(args.ready).touch()
        deadline = time.monotonic() + args.timeout
        filesystem = args.url.startswith("filesystem")
        lost = 0
        while args.idle or PROBE.count + lost < args.count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                print(f"timed out: {PROBE.count} of {args.count} handled ({lost} lost)", flush=True)
                return 1
            try:
                conn.drain_events(timeout=min(remaining, 1.0))
            except TimeoutError:
                continue
            except ValueError as exc:
                # kombu's filesystem:// writes a message file in place: a consumer can take the file after the
                # producer created it and before it wrote it, read nothing, and delete it; that message is lost.
                if not filesystem:
                    raise
                lost += 1
                print(f"kombu filesystem:// lost a message (empty file read): {exc!r}", flush=True)
        consumer.cancel()
    finally:
        conn.release()
    latencies = PROBE.latencies or []
    write_result(
        args.result,
        {
            "count": PROBE.count,
            "lost": lost,
            "first": PROBE.first,
            "last": PROBE.last,
            "latency_median": median(latencies) if latencies else None,
            "latency_p95": percentile(latencies, 0.95) if latencies else None,
            "latency_max": max(latencies) if latencies else None,
            "stopped": time.time(),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
