"""Scenario 8, one repetition: thread-safe publishing (16 threads with confirms, ``batch(100)`` with confirms) against
raw kombu's single-thread publish without confirms, and against raw kombu publishing 16 or 100 messages per confirm
wait (the most the broker gives any client that waits for its confirms that way); the consumer against a raw kombu
consumer (confirms off, like for like); a 10 ms I/O-bound handler (plain and coroutine) at concurrency 16 against 1;
and ``run --processes 2`` against 1 process on a CPU-bound handler (wall time of the ``container-messaging``
command, start-up included)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kombu

from benchmarks.common import write_result
from benchmarks.workers.rawkombu import connection, headers
from container_messaging import DistributedBus, MessagingContainer

SCAN = "benchmarks.handlers.concurrency"


def container(url: str, service: str, exchange: str, *, confirm: bool, prefetch: int = 100) -> MessagingContainer:
    return MessagingContainer.from_dict(
        {
            "service_name": service,
            "scan": [SCAN],
            "transport": {"url": url, "confirm_publish": confirm, "prefetch_count": prefetch},
            "distribution": {"exchange": exchange},
        }
    )


def rate(count: int, call: Callable[[], None]) -> float:
    start = time.perf_counter()
    call()
    return count / (time.perf_counter() - start)


def purge(url: str, queue: str) -> None:
    with kombu.Connection(url) as conn:
        conn.default_channel.queue_purge(queue)


def raw_publish(url: str, queue: str, count: int) -> float:
    """Raw kombu, one thread, no confirms: a persistent message with the framework's headers per publish."""
    with connection(url) as conn:
        producer = kombu.Producer(conn.default_channel)
        kombu.Queue(queue, durable=True)(conn.default_channel).declare()
        body = json.dumps({"n": 1}).encode()

        def send() -> None:
            for _ in range(count):
                producer.publish(
                    body,
                    routing_key=queue,
                    headers=headers("command", "bench.noop", "bench", queue),
                    content_type="application/json",
                    content_encoding="binary",
                    delivery_mode=2,
                    retry=False,
                )

        result = rate(count, send)
    purge(url, queue)
    return result


def raw_confirmed(url: str, exchange: str, routing_key: str, count: int, per_wait: int) -> float:
    """Raw kombu (its py-amqp channel), one thread, confirms on: ``per_wait`` messages published the way the
    framework publishes them (persistent, mandatory, on its topic exchange), then one wait for all their confirms,
    and again. By hand, what group commit does for ``per_wait`` senders each waiting for its own confirm, and what
    ``batch(per_wait)`` does: the broker's persistence and confirms bound it, whatever the client."""
    acked = 0

    def on_ack(tag: int, multiple: bool) -> None:
        nonlocal acked
        acked = max(acked, tag)

    with connection(url) as conn:
        channel = conn.channel()
        channel.confirm_select()
        channel.events["basic_ack"].add(on_ack)
        body = json.dumps({"n": 1}).encode()

        def send() -> None:
            sent = 0
            while sent < count:
                for _ in range(per_wait):
                    header = headers("command", "bench.noop", "bench", routing_key)
                    message = channel.prepare_message(
                        body, 0, "application/json", "binary", header, {"delivery_mode": 2, "message_id": header["id"]}
                    )
                    channel.basic_publish(message, exchange=exchange, routing_key=routing_key, mandatory=True)
                sent += per_wait
                while acked < sent:
                    conn.drain_events(timeout=30)

        return rate(count // per_wait * per_wait, send)


def fw_threads(bus: DistributedBus, service: str, count: int, threads: int) -> float:
    """``threads`` threads through one bus, each send waiting for its own confirm."""
    per_thread = count // threads
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            for n in range(per_thread):
                bus.convert_and_send_command(service, "bench.noop", {"n": n})
        except BaseException as exc:
            errors.append(exc)

    def send() -> None:
        workers = [threading.Thread(target=sender) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    result = rate(per_thread * threads, send)
    if errors:
        raise SystemExit(f"a sender failed: {errors[0]!r}")
    return result


def fw_batches(bus: DistributedBus, service: str, count: int, size: int) -> float:
    def send() -> None:
        for _ in range(count // size):
            with bus.batch():
                for n in range(size):
                    bus.convert_and_send_command(service, "bench.noop", {"n": n})

    return rate(count // size * size, send)


def preload(bus: DistributedBus, service: str, key: str, count: int) -> None:
    for start in range(0, count, 500):
        with bus.batch():
            for n in range(start, min(count, start + 500)):
                bus.convert_and_send_command(service, key, {"n": n})


def raw_consume(url: str, queue: str, count: int) -> float:
    """Raw kombu: a consumer (prefetch 100) decoding each JSON body and acknowledging it."""
    taken = 0

    def on_message(message: Any) -> None:
        nonlocal taken
        json.loads(message.body)
        message.ack()
        taken += 1

    with connection(url) as conn:
        consumer = kombu.Consumer(
            conn.default_channel,
            queues=[kombu.Queue(queue, no_declare=True)],
            on_message=on_message,
            prefetch_count=100,
            accept=["application/json"],
        )

        def consume() -> None:
            with consumer:
                while taken < count:
                    conn.drain_events(timeout=30)

        return rate(count, consume)


def fw_consume(fw: MessagingContainer, service: str, count: int, concurrency: int = 1) -> float:
    result = None

    def consume() -> None:
        nonlocal result
        result = fw.run(service, handled_message_limit=count, concurrency=concurrency)

    measured = rate(count, consume)
    if result is None or result.handled != count:
        raise SystemExit(f"the consumer handled {result} of {count}")
    return measured


def processes(url: str, service: str, exchange: str, count: int, processes: int, bus: DistributedBus) -> float:
    """Wall rate of ``container-messaging run SERVICE --finish-when-no-messages [--processes N]`` over ``count``
    preloaded CPU-bound messages (process start-up included)."""
    preload(bus, service, "bench.cpu", count)
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "bench.yaml"
        config.write_text(
            json.dumps(
                {
                    "service_name": service,
                    "scan": [SCAN],
                    "transport": {"url": url, "confirm_publish": False},
                    "distribution": {"exchange": exchange},
                }
            )
        )
        command = [
            sys.executable,
            "-m",
            "container_messaging",
            "--config",
            str(config),
            "run",
            service,
            "--finish-when-no-messages",
        ]
        if processes > 1:
            command += ["--processes", str(processes)]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=600)
        return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--io-count", type=int, required=True)
    parser.add_argument("--cpu-count", type=int, required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    url, service, exchange, count = args.url, args.service, args.exchange, args.count

    confirmed = container(url, service, exchange, confirm=True)
    unconfirmed = container(url, service, exchange, confirm=False, prefetch=100)
    queue = confirmed.topology.queue(service)
    confirmed.setup()
    figures: dict[str, float] = {}
    try:
        bus = confirmed.get(DistributedBus)
        fast_bus = unconfirmed.get(DistributedBus)
        fw_threads(bus, service, 320, 16)  # warm-up
        purge(url, queue)
        figures["raw_publish"] = raw_publish(url, f"{queue}.raw", count)
        figures["threads16_confirms"] = fw_threads(bus, service, count, 16)
        purge(url, queue)
        figures["batch100_confirms"] = fw_batches(bus, service, count, 100)
        purge(url, queue)
        figures["raw_confirmed16"] = raw_confirmed(url, exchange, service, count, 16)
        figures["raw_confirmed100"] = raw_confirmed(url, exchange, service, count, 100)
        purge(url, queue)

        preload(fast_bus, service, "bench.noop", count)
        figures["raw_consume"] = raw_consume(url, queue, count)
        preload(fast_bus, service, "bench.noop", count)
        figures["fw_consume"] = fw_consume(unconfirmed, service, count)

        for key, label in (("bench.sleep", "sleep"), ("bench.sleepAsync", "sleep_async")):
            preload(fast_bus, service, key, args.io_count)
            figures[f"{label}_c1"] = fw_consume(unconfirmed, service, args.io_count, 1)
            preload(fast_bus, service, key, args.io_count * 4)
            figures[f"{label}_c16"] = fw_consume(unconfirmed, service, args.io_count * 4, 16)

        figures["cpu_p1"] = processes(url, service, exchange, args.cpu_count, 1, fast_bus)
        figures["cpu_p2"] = processes(url, service, exchange, args.cpu_count, 2, fast_bus)
    finally:
        with kombu.Connection(url) as conn:
            for name in (queue, f"{queue}.raw", f"{queue}.dead_letter"):
                conn.default_channel.queue_delete(name)
            conn.default_channel.exchange_delete(exchange)
        confirmed.close()
        unconfirmed.close()
    write_result(args.result, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
