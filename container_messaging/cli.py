"""The ``container-messaging`` command line: Ecotone's console commands for a configured container.

::

    container-messaging [--config PATH] [--app MODULE:ATTR] [-v...] list
    container-messaging [--config PATH] [-v...] run NAME [--handled-message-limit N] [--execution-time-limit MS]
                                                          [--memory-limit MB] [--stop-on-failure]
                                                          [--finish-when-no-messages] [--wait-for-broker SECONDS]
                                                          [--concurrency N] [--processes N]
    container-messaging [--config PATH] [-v...] setup [NAME]
    container-messaging [--config PATH] [-v...] send-command DEST KEY PAYLOAD [--content-type T] [--header K=V ...]
    container-messaging [--config PATH] [-v...] publish-event KEY PAYLOAD [--content-type T] [--header K=V ...]
    container-messaging [--config PATH] [-v...] send-message DEST CHANNEL PAYLOAD [--content-type T] [--header K=V]
    container-messaging [--config PATH] [-v...] dead-letter [--endpoint NAME] list [--limit N] [--json] [--full]
    container-messaging [--config PATH] [-v...] dead-letter show ID [--json] [--full]
    container-messaging [--config PATH] [-v...] dead-letter replay ID | --all
    container-messaging [--config PATH] [-v...] dead-letter delete ID
    container-messaging [--config PATH] [-v...] health [NAME] [--dead-letter-threshold N] [--timeout S] [--json]
    container-messaging [--config PATH ...] asyncapi [--output FILE] [--api-version V]
    container-messaging [--config PATH ...] graph [--format mermaid|dot] [--output FILE]
    container-messaging --version

The configuration file is ``--config`` or else the ``CONTAINER_MESSAGING_CONFIG`` environment variable. ``--app
package.module:container`` hands the application's dependency-injector container to the messaging container, so
handlers get what it provides. ``--log-format json`` writes the log lines as JSON objects; ``--otel`` traces and
measures with OpenTelemetry (:mod:`container_messaging.observability`). ``--config``, ``--app``, ``-v``,
``--log-format`` and ``--otel`` may come before or after the subcommand (``container-messaging run billing -vvv``).
``PAYLOAD`` ``-`` reads standard input. ``health`` exits 1 when unhealthy (a probe).

Errors are one line on standard error, ``container-messaging: error: <message>``, with the traceback only at
``-vvv``; the exit codes are :data:`EXIT_CODES`. Nothing printed is scanned for secrets: they are hidden where they
are held (settings, URLs: :mod:`container_messaging.redaction`). Long bodies and values are printed cut to a few
thousand characters, saying how much was cut, unless ``--full``; every output path is linear in what it prints.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

import attrs

from container_messaging import observability
from container_messaging.config import CONFIG_ENV, config_path
from container_messaging.consumer import RunOptions
from container_messaging.container import MessagingContainer
from container_messaging.deadletter import DeadLetter, DeadLetterEntry
from container_messaging.distributed import DistributedBus
from container_messaging.errors import (
    ConfigurationError,
    ContainerError,
    EndpointError,
    HandlerDefinitionError,
    MessagingError,
    ScanError,
    TransportError,
)
from container_messaging.messages import ID, TIMESTAMP, MediaType, new_message_id
from container_messaging.middleware import Middleware
from container_messaging.observability.health import DEFAULT_TIMEOUT as DEFAULT_HEALTH_TIMEOUT
from container_messaging.observability.logs import HUMAN_FORMAT, LOG_FORMATS, formatter
from container_messaging.supervisor import Supervisor

__all__ = [
    "BODY_LIMIT",
    "CONFIG_ENV",
    "EXIT_BROKER",
    "EXIT_CODES",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "TRACE_LIMIT",
    "UsageError",
    "VALUE_LIMIT",
    "build_parser",
    "main",
]

PROG: Final = "container-messaging"

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_BROKER: Final = 3
EXIT_INTERRUPTED: Final = 130

#: Every exit code and what it means: the ``--help`` epilog and the README's table say exactly this.
EXIT_CODES: Final = (
    (EXIT_OK, "success, also when the reader of the output stops early (`head -1`)"),
    (
        EXIT_FAILURE,
        "a message failed: run --stop-on-failure stopped at a failed message, the sender refused a message, "
        "no dead letter entry has that id, `health` found something unhealthy, or an unexpected error",
    ),
    (
        EXIT_USAGE,
        "usage, configuration or boot error: bad arguments, no or a wrong configuration file, a module of scan "
        "that fails to import, clashing handlers, a missing dependency, an unknown endpoint, a wrong --app",
    ),
    (EXIT_BROKER, "the broker: unreachable, refused us (credentials, vhost, permissions) or could not route a message"),
    (EXIT_INTERRUPTED, "interrupted: Ctrl-C, or a second SIGINT/SIGTERM while run finishes a message"),
)

#: What the boot of a container raises for a mistake in the configuration, the code or the command line.
_BOOT_ERRORS: Final = (ConfigurationError, ScanError, HandlerDefinitionError, ContainerError, EndpointError)

LOG_FORMAT: Final = HUMAN_FORMAT
_TABLE_TITLE: Final = "Endpoint Names"

#: Without ``--full``, the characters printed of a body, of a trace, and of any other value.
BODY_LIMIT: Final = 2000
TRACE_LIMIT: Final = 4000
VALUE_LIMIT: Final = 200
#: The widest a column of ``dead-letter list`` gets without ``--full``.
_COLUMN_LIMIT: Final = 60

log = logging.getLogger("container_messaging.cli")


class UsageError(MessagingError):
    """A command line mistake found after parsing (no configuration, bad payload, bad ``--app``): exit code 2."""


@contextmanager
def _logging(verbosity: int, log_format: str = "human") -> Iterator[None]:
    """Logs to stderr: WARNING; ``-v`` INFO and ``-vv`` DEBUG for container_messaging; ``-vvv`` DEBUG everywhere.
    ``log_format`` ``json`` writes one JSON object per line (:mod:`container_messaging.observability.logs`)."""
    root = logging.getLogger()
    package = logging.getLogger("container_messaging")
    saved = root.level, package.level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 3 else logging.WARNING)
    package.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1 else logging.NOTSET)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        package.setLevel(saved[1])


# --------------------------------------------------------------------------------------------------------------------
# Argument parsing


def _name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _header(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def _add_global_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """``--config``, ``--app`` and ``-v`` on the main parser and again on each subcommand.

    A subparser writes every attribute it parsed into the shared namespace, so the subcommand's copies use their own
    ``dest`` s (``*_after``) with ``SUPPRESS`` defaults: given after the subcommand, ``-v`` adds to the count given
    before it and ``--config`` / ``--app`` override the ones given before it.
    """
    suffix = "_after" if after_command else ""
    parser.add_argument(
        "--config",
        dest=f"config{suffix}",
        metavar="PATH",
        default=argparse.SUPPRESS if after_command else None,
        help=f"the YAML or INI configuration file (default: ${CONFIG_ENV})",
    )
    parser.add_argument(
        "--app",
        dest=f"app{suffix}",
        metavar="MODULE:ATTR",
        default=argparse.SUPPRESS if after_command else None,
        help="the application's dependency-injector container, e.g. myapp.containers:container; handlers get "
        "what it provides",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        dest=f"verbose{suffix}",
        action="count",
        default=argparse.SUPPRESS if after_command else 0,
        help="log more: -v INFO, -vv DEBUG, -vvv DEBUG for every library and tracebacks on errors",
    )
    parser.add_argument(
        "--log-format",
        dest=f"log_format{suffix}",
        choices=LOG_FORMATS,
        default=argparse.SUPPRESS if after_command else "human",
        help="how log lines on stderr look: human (the default) or json (one object per line, for log shippers)",
    )
    parser.add_argument(
        "--otel",
        dest=f"otel{suffix}",
        action="store_true",
        default=argparse.SUPPRESS if after_command else False,
        help="trace and measure with OpenTelemetry's global providers (the otel extra; set up exporters with "
        "opentelemetry-instrument or the OTEL_* variables)",
    )


def _add_sending_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("payload", metavar="PAYLOAD", help="the serialized payload; '-' reads standard input")
    parser.add_argument(
        "--content-type",
        default=MediaType.APPLICATION_JSON,
        metavar="TYPE",
        help="the payload's media type (default: %(default)s)",
    )
    parser.add_argument(
        "--header",
        dest="headers",
        type=_header,
        action="append",
        default=[],
        metavar="K=V",
        help="a metadata header; repeat for several",
    )


def _add_dead_letter_command(dead_letter: argparse.ArgumentParser) -> None:
    """``dead-letter``'s actions: list, show, replay, delete."""
    dead_letter.add_argument(
        "--endpoint", type=_name, metavar="NAME", help="the endpoint whose dead letter to use (default: the service)"
    )
    actions = dead_letter.add_subparsers(dest="dead_letter_action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=help_text)
        _add_global_options(sub, after_command=True)
        sub.add_argument(
            "--endpoint",
            type=_name,
            metavar="NAME",
            default=argparse.SUPPRESS,
            help="the endpoint whose dead letter to use (default: the service)",
        )
        return sub

    listing = action("list", "A table of the dead letter's entries, oldest first (message id, time, handler, error).")
    listing.add_argument(
        "--limit",
        type=_positive_int,
        default=50,
        metavar="N",
        help="show the first N entries (default: %(default)s); the rest are counted, not read",
    )
    listing.add_argument("--json", action="store_true", help="print the entries as JSON (for scripts)")
    listing.add_argument("--full", action="store_true", help="print every value whole (bodies, errors, headers)")
    show = action("show", "Everything kept about one message: failure, attempts, times, headers, body and trace.")
    show.add_argument("message_id", metavar="ID", help="the message id (the 'id' header)")
    show.add_argument("--json", action="store_true", help="print the entries as JSON")
    show.add_argument("--full", action="store_true", help="print the body, the trace and the headers whole")
    replay = action("replay", "Send a message (or --all) back to the endpoint it failed in.")
    replay.add_argument("message_id", metavar="ID", nargs="?", help="the message id")
    replay.add_argument("--all", action="store_true", help="replay every entry")
    delete = action("delete", "Remove a message from the dead letter for good.")
    delete.add_argument("message_id", metavar="ID", help="the message id")


def _version() -> str:
    try:
        return version("container-messaging")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "(not installed)"


def _add_health_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    health = command(
        "health",
        "Check the broker, the endpoint's queue and its dead letter; exit 1 when unhealthy (a Kubernetes probe).",
    )
    health.add_argument("name", type=_name, metavar="NAME", nargs="?", help="one endpoint (default: every endpoint)")
    health.add_argument(
        "--dead-letter-threshold",
        type=_count,
        metavar="N",
        help="unhealthy when a dead letter queue holds more than N messages (default: its size is only shown)",
    )
    health.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_HEALTH_TIMEOUT,
        metavar="S",
        help="seconds every check together may take (default: %(default)g)",
    )
    health.add_argument("--json", action="store_true", help="print the report as JSON")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``container-messaging``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run and set up the consumer of a container_messaging service, and send it messages.",
        epilog="exit codes:\n" + "\n".join(f"  {code:<5}{meaning}" for code, meaning in EXIT_CODES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    _add_global_options(parser, after_command=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _add_global_options(sub, after_command=True)
        return sub

    command("list", "List the endpoint names that can be run.")

    run = command("run", "Consume an endpoint's messages until a limit, a signal or (optionally) a failure.")
    run.add_argument("name", type=_name, metavar="NAME", help="the endpoint to run (see 'list')")
    run.add_argument(
        "--handled-message-limit", type=_positive_int, metavar="N", help="stop after N messages (handled or failed)"
    )
    run.add_argument("--execution-time-limit", type=_positive_int, metavar="MS", help="stop after MS milliseconds")
    run.add_argument("--memory-limit", type=_positive_int, metavar="MB", help="stop once the process uses MB megabytes")
    run.add_argument(
        "--stop-on-failure",
        action="store_true",
        help="stop at the first failed message, leaving it on its queue (exit code 1)",
    )
    run.add_argument("--finish-when-no-messages", action="store_true", help="stop when the queue is empty")
    run.add_argument(
        "--wait-for-broker",
        type=float,
        metavar="SECONDS",
        help="at start, try a broker that does not answer again for up to SECONDS (never one that refused us)",
    )
    run.add_argument(
        "--concurrency",
        type=_positive_int,
        default=1,
        metavar="N",
        help="handle up to N messages at once (threads for plain handlers, tasks for async ones; default 1)",
    )
    run.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        metavar="N",
        help="run N consumer processes of the endpoint, started again when one crashes (default 1)",
    )

    setup = command("setup", "Declare the exchange, the endpoint queues and their bindings.")
    setup.add_argument("name", type=_name, metavar="NAME", nargs="?", help="one endpoint (default: every endpoint)")

    send_command = command("send-command", "Send a serialized command to a service's command handler.")
    send_command.add_argument("destination", type=_name, metavar="DEST", help="the destination service name")
    send_command.add_argument("routing_key", type=_name, metavar="KEY", help="the command handler's routing key")
    _add_sending_options(send_command)

    publish_event = command("publish-event", "Publish a serialized event to every subscribed service.")
    publish_event.add_argument("routing_key", type=_name, metavar="KEY", help="the event's routing key")
    _add_sending_options(publish_event)

    send_message = command("send-message", "Send a serialized message to a service's service activator channel.")
    send_message.add_argument("destination", type=_name, metavar="DEST", help="the destination service name")
    send_message.add_argument("channel", type=_name, metavar="CHANNEL", help="the target channel name")
    _add_sending_options(send_message)

    _add_health_command(command)
    _add_dead_letter_command(command("dead-letter", "List, show, replay or delete the messages that failed for good."))
    _add_docs_commands(commands)
    return parser


# --------------------------------------------------------------------------------------------------------------------
# Commands


def _out(line: str) -> None:
    print(line, flush=True)


def _cmd_list(container: MessagingContainer, args: argparse.Namespace) -> int:
    names = container.list()
    width = max([len(_TABLE_TITLE), *(len(name) for name in names)])
    border = f"+{'-' * (width + 2)}+"
    lines = [border, f"| {_TABLE_TITLE:<{width}} |", border, *(f"| {name:<{width}} |" for name in names)]
    if names:
        lines.append(border)
    for line in lines:
        _out(line)
    return EXIT_OK


def _cmd_run(container: MessagingContainer, args: argparse.Namespace) -> int:
    options = RunOptions(
        handled_message_limit=args.handled_message_limit,
        execution_time_limit=args.execution_time_limit,
        memory_limit=args.memory_limit,
        stop_on_failure=args.stop_on_failure,
        finish_when_no_messages=args.finish_when_no_messages,
        wait_for_broker=args.wait_for_broker,
        concurrency=args.concurrency,
    )
    if args.processes > 1:
        return Supervisor(args.name, _child_command(args, options), args.processes).run()
    # the start banner on stderr (stdout keeps the one result line for scripts); with JSON logs, stderr has only JSON
    banner = container.endpoint(args.name).description(options)
    if _log_format(args) == "json":
        log.info("%s", banner, extra={"endpoint": args.name})
    else:
        print(banner, file=sys.stderr, flush=True)
    result = container.run(args.name, **attrs.asdict(options))
    _out(result.summary())
    return EXIT_FAILURE if args.stop_on_failure and result.failed else EXIT_OK


def _child_command(args: argparse.Namespace, options: RunOptions) -> list[str]:
    """The command line of one consumer process of ``run --processes``: this run without ``--processes``."""
    command = [sys.executable, "-m", "container_messaging", "--config", _config_path(args)]
    app: str | None = getattr(args, "app_after", None) or args.app
    if app:
        command += ["--app", app]
    if _log_format(args) != "human":
        command += ["--log-format", _log_format(args)]
    if getattr(args, "otel_after", False) or args.otel:
        command.append("--otel")
    command += ["run", args.name]
    verbosity: int = args.verbose + getattr(args, "verbose_after", 0)
    if verbosity:
        command.append("-" + "v" * verbosity)
    for field in attrs.fields(RunOptions):
        value = getattr(options, field.name)
        if value is None or value is False or (field.name == "concurrency" and value == 1):
            continue
        flag = "--" + field.name.replace("_", "-")
        command += [flag] if value is True else [flag, str(value)]
    return command


def _cmd_setup(container: MessagingContainer, args: argparse.Namespace) -> int:
    from container_messaging.transports import dead_letter_queue  # noqa: PLC0415

    names: list[str] = [args.name] if args.name is not None else container.list()
    if not names:
        _out(f"nothing to set up: no endpoints (configure service_name in {container.settings.source})")
        return EXIT_OK
    where = container.settings.transport.masked_url
    for name in names:
        container.setup(name)
        topology = container.topology.endpoint(name, container.routes)
        bindings = ", ".join(repr(key) for key in topology.bindings)
        _out(
            f"{name}: declared exchange {topology.exchange!r}, queue {topology.queue!r} bound to {bindings}, "
            f"and dead letter queue {dead_letter_queue(topology.queue)!r} on {where}"
        )
    return EXIT_OK


def _read_payload(args: argparse.Namespace) -> bytes:
    text: str = args.payload
    if text == "-":
        buffer = getattr(sys.stdin, "buffer", None)
        payload = buffer.read() if buffer is not None else sys.stdin.read().encode()
    else:
        payload = text.encode()
    if MediaType.base(args.content_type) == MediaType.APPLICATION_JSON:
        try:
            json.loads(payload)
        except ValueError as exc:
            raise UsageError(f"PAYLOAD is not valid JSON ({exc}); pass --content-type for another format") from None
    return payload


def _metadata(args: argparse.Namespace) -> tuple[dict[str, str], str]:
    """The ``--header`` s, with a message id (given or new) so the confirmation can show it."""
    metadata = dict(args.headers)
    metadata.setdefault(ID, new_message_id())
    return metadata, metadata[ID]


def _cmd_send_command(container: MessagingContainer, args: argparse.Namespace) -> int:
    payload = _read_payload(args)
    metadata, message_id = _metadata(args)
    container.get(DistributedBus).send_command(args.destination, args.routing_key, payload, args.content_type, metadata)
    _out(f"sent command {args.routing_key} to {args.destination} (id {message_id})")
    return EXIT_OK


def _cmd_publish_event(container: MessagingContainer, args: argparse.Namespace) -> int:
    payload = _read_payload(args)
    metadata, message_id = _metadata(args)
    container.get(DistributedBus).publish_event(args.routing_key, payload, args.content_type, metadata)
    _out(f"published event {args.routing_key} (id {message_id})")
    return EXIT_OK


def _cmd_send_message(container: MessagingContainer, args: argparse.Namespace) -> int:
    payload = _read_payload(args)
    metadata, message_id = _metadata(args)
    container.get(DistributedBus).send_message(args.destination, args.channel, payload, args.content_type, metadata)
    _out(f"sent message to channel {args.channel} of {args.destination} (id {message_id})")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------------------------
# Dead letter: what is printed of an entry is cut to a few thousand characters unless --full


def _shorten(text: str, limit: int, full: bool) -> str:
    """``text``, or its first ``limit`` characters and how many more there were."""
    if full or len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit:,} more characters; --full shows all]"


def _cell(text: str | None, full: bool, *, keep_end: bool = False) -> str:
    """One cell of a table: one line, at most ``_COLUMN_LIMIT`` characters unless ``full`` (``keep_end``: cut at
    the start, for names whose end tells most, as ``module.Class.method``)."""
    text = text or "-"
    if not full:  # the work is bounded too
        text = text[-4 * _COLUMN_LIMIT :] if keep_end else text[: 4 * _COLUMN_LIMIT]
    line = " ".join(text.split())
    if full or len(line) <= _COLUMN_LIMIT:
        return line
    return f"...{line[3 - _COLUMN_LIMIT :]}" if keep_end else f"{line[: _COLUMN_LIMIT - 3]}..."


def _time(timestamp: object) -> str:
    """Unix seconds as local time; anything else (a header from the wire may hold anything) as it is."""
    if timestamp is None:
        return "-"
    if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        try:
            return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
        except (OverflowError, OSError, ValueError):
            pass
    return _shorten(str(timestamp), VALUE_LIMIT, full=False)


def _plural(count: int, singular: str, plural: str) -> str:
    return f"{count} {singular if count == 1 else plural}"


def _entry_json(entry: DeadLetterEntry, full: bool) -> dict[str, Any]:
    data = entry.as_dict()
    for key, value in data.items():
        if isinstance(value, str):
            limit = BODY_LIMIT if key in ("body", "body_base64") else TRACE_LIMIT if key == "trace" else VALUE_LIMIT
            data[key] = _shorten(value, limit, full)
    data["headers"] = {
        key: _shorten(value, VALUE_LIMIT, full) if isinstance(value, str) else value
        for key, value in data["headers"].items()
    }
    return data


def _dead_letter_list(dead_letter: DeadLetter, args: argparse.Namespace) -> int:
    entries = dead_letter.list(args.limit + 1)  # one more than shown tells whether there are more
    if len(entries) > args.limit:
        del entries[args.limit :]
        total = max(dead_letter.count(), args.limit + 1)  # the broker's figure may lag behind a read just done
    else:
        total = len(entries)
    more = total - len(entries)
    if args.json:
        _out(json.dumps([_entry_json(entry, args.full) for entry in entries], indent=2))
        if more:
            print(f"{PROG}: {more} more entries not shown: raise --limit", file=sys.stderr, flush=True)
        return EXIT_OK
    shown = f" (the first {len(entries)})" if more else ""
    _out(f"{_plural(total, 'dead letter entry', 'dead letter entries')} for {dead_letter.endpoint}{shown}")
    if not entries:
        return EXIT_OK
    rows: list[tuple[str, ...]] = [("MESSAGE ID", "FAILED AT", "ATTEMPTS", "ROUTING KEY", "HANDLER", "REASON", "ERROR")]
    for entry in entries:
        error = f"{(entry.error_class or '?').rsplit('.', 1)[-1]}: {entry.error_message or ''}"
        rows.append(
            (
                _cell(entry.message_id, args.full),
                _time(entry.failed_at),
                str(entry.attempts or "-"),
                _cell(entry.routing_key, args.full),
                _cell(entry.handler, args.full, keep_end=True),
                _cell(entry.reason, args.full),
                _cell(error, args.full),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        _out("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]))
    if more:
        _out(f"{_plural(more, 'more entry', 'more entries')}: --limit {total} shows all")
    return EXIT_OK


def _dead_letter_show(dead_letter: DeadLetter, args: argparse.Namespace) -> int:
    entries = dead_letter.get(args.message_id)
    if args.json:
        _out(json.dumps([_entry_json(entry, args.full) for entry in entries], indent=2))
        return EXIT_OK
    for number, entry in enumerate(entries, 1):
        if len(entries) > 1:
            _out(f"{'' if number == 1 else chr(10)}entry {number} of {len(entries)} of message {entry.message_id}")
        _out(_entry_text(entry, args.full))
    return EXIT_OK


def _entry_text(entry: DeadLetterEntry, full: bool) -> str:
    def value(text: object) -> str:
        return _shorten("-" if text is None else str(text), VALUE_LIMIT, full)

    data = entry.as_dict()
    body = data.get("body")
    body_label = "body" if body is not None else "body (not UTF-8, base64)"
    sent = entry.headers.get(TIMESTAMP)
    fields = (
        ("message id", value(entry.message_id)),
        ("endpoint", value(entry.endpoint)),
        ("routing key", value(entry.routing_key)),
        ("payload type", value(entry.payload_type)),
        ("handler", value(entry.handler)),
        ("reason", value(entry.reason)),
        ("attempts", value(entry.attempts)),
        ("sent at", _time(sent)),
        ("first failed", f"{_time(entry.first_failed_at)} (the first attempt)"),
        ("failed at", f"{_time(entry.failed_at)} (the last attempt)"),
        ("error", _shorten(f"{entry.error_class or '?'}: {entry.error_message or ''}", BODY_LIMIT, full)),
        ("content type", value(entry.content_type)),
    )
    lines = [f"{label + ':':<14}{text}" for label, text in fields]
    lines.append("headers:")
    lines.extend(f"  {key}: {value(header)}" for key, header in sorted(data["headers"].items()))
    lines.append(f"{body_label} ({len(entry.body):,} bytes):")
    lines.append(_shorten(body if body is not None else data["body_base64"], BODY_LIMIT, full))
    lines.append("trace:")
    lines.append(_shorten(entry.trace or "-", TRACE_LIMIT, full))
    return "\n".join(lines)


def _cmd_dead_letter(container: MessagingContainer, args: argparse.Namespace) -> int:
    dead_letter = container.dead_letter(args.endpoint)
    todo = args.dead_letter_action
    if todo == "list":
        return _dead_letter_list(dead_letter, args)
    if todo == "show":
        return _dead_letter_show(dead_letter, args)
    if todo == "replay":
        if args.all == (args.message_id is not None):
            raise UsageError("dead-letter replay needs a message ID or --all (not both)")
        count = dead_letter.replay_all() if args.all else dead_letter.replay(args.message_id)
        _out(f"replayed {_plural(count, 'message', 'messages')} to {dead_letter.endpoint}")
        return EXIT_OK
    count = dead_letter.delete(args.message_id)
    _out(f"deleted {_plural(count, 'dead letter entry', 'dead letter entries')} of {args.message_id}")
    return EXIT_OK


def _cmd_health(container: MessagingContainer, args: argparse.Namespace) -> int:
    report = container.health(args.name, dead_letter_threshold=args.dead_letter_threshold, timeout=args.timeout)
    _out(json.dumps(report.as_dict()) if args.json else str(report))
    return EXIT_OK if report.healthy else EXIT_FAILURE


_Command = Callable[[MessagingContainer, argparse.Namespace], int]

_COMMANDS: Final[Mapping[str, _Command]] = {
    "list": _cmd_list,
    "run": _cmd_run,
    "setup": _cmd_setup,
    "send-command": _cmd_send_command,
    "publish-event": _cmd_publish_event,
    "send-message": _cmd_send_message,
    "dead-letter": _cmd_dead_letter,
    "health": _cmd_health,
}


# --------------------------------------------------------------------------------------------------------------------
# Documentation commands: asyncapi and graph read one or several services' configurations (scanning, no broker)


def _add_docs_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``asyncapi`` and ``graph``: their ``--config`` may be repeated, one per service."""

    def docs_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--config",
            dest="configs_after",
            action="append",
            metavar="PATH",
            default=argparse.SUPPRESS,
            help=f"a service's YAML or INI configuration; repeat it for several services (default: ${CONFIG_ENV})",
        )
        sub.add_argument(
            "-v",
            "--verbose",
            dest="verbose_after",
            action="count",
            default=argparse.SUPPRESS,
            help="log more: -v INFO, -vv DEBUG, -vvv DEBUG for every library and tracebacks on errors",
        )
        sub.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output")
        return sub

    asyncapi = docs_command(
        "asyncapi", "Write the AsyncAPI 3.0 document of a service, or of every service whose --config is given."
    )
    asyncapi.add_argument(
        "--api-version", default="1.0.0", metavar="V", help="the document's info.version (default: %(default)s)"
    )
    graph = docs_command("graph", "Draw who sends, publishes and handles what between the services (Mermaid or DOT).")
    graph.add_argument(
        "--format", choices=("mermaid", "dot"), default="mermaid", help="Mermaid or Graphviz DOT (default: %(default)s)"
    )


def _docs_configs(args: argparse.Namespace) -> list[str]:
    """``--config`` before the command, then every ``--config`` after it; else the one ``_config_path`` finds."""
    given: list[str] = [*([args.config] if args.config else []), *getattr(args, "configs_after", [])]
    return given or [_config_path(args)]


def _write_docs(args: argparse.Namespace, text: str, what: str) -> int:
    if args.output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return EXIT_OK
    with open(args.output, "w", encoding="utf-8") as file:
        file.write(text)
    print(f"wrote {what} to {args.output}", flush=True)
    return EXIT_OK


def _cmd_asyncapi(args: argparse.Namespace) -> int:
    from container_messaging.docs import asyncapi_document, asyncapi_json, describe_services  # noqa: PLC0415

    with _current_directory_importable():
        services = describe_services(_docs_configs(args))
    document = asyncapi_document(services, version=args.api_version)
    if args.output is not None and args.output.lower().endswith((".yaml", ".yml")):
        import yaml  # noqa: PLC0415

        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    else:
        text = asyncapi_json(document)
    names = ", ".join(service.name for service in services)
    return _write_docs(args, text, f"the AsyncAPI document of {names}")


def _cmd_graph(args: argparse.Namespace) -> int:
    from container_messaging.docs import describe_services, message_flow  # noqa: PLC0415

    with _current_directory_importable():
        flow = message_flow(describe_services(_docs_configs(args)))
    text = flow.mermaid() if args.format == "mermaid" else flow.dot()
    return _write_docs(args, text, f"the message flow of {', '.join(flow.services)} ({args.format})")


_DOCS_COMMANDS: Final[Mapping[str, Callable[[argparse.Namespace], int]]] = {
    "asyncapi": _cmd_asyncapi,
    "graph": _cmd_graph,
}


# --------------------------------------------------------------------------------------------------------------------
# main


def _config_path(args: argparse.Namespace) -> str:
    path = config_path(getattr(args, "config_after", None) or args.config)
    if path is None:
        raise UsageError(f"no configuration file: pass --config PATH or set {CONFIG_ENV}")
    return path


@contextmanager
def _current_directory_importable() -> Iterator[None]:
    """Like ``python -m``, lets ``scan`` import modules from the working directory (a console script does not)."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _load_app(spec: str) -> object:
    """The object ``package.module:attribute`` names (the attribute may be dotted), imported from the working
    directory or ``sys.path``."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name.strip() or not attribute.strip():
        raise UsageError(f"--app {spec!r}: expected MODULE:ATTRIBUTE, e.g. myapp.containers:container")
    try:
        found: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(f"{exc.name}.")):
            raise UsageError(
                f"--app {spec!r}: module {exc.name!r} not found (looked in the working directory {os.getcwd()} "
                "and sys.path)"
            ) from exc
        raise UsageError(f"--app {spec!r}: importing module {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise UsageError(
            f"--app {spec!r}: importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise UsageError(f"--app {spec!r}: module {module_name!r} has no attribute {attribute!r}") from None
    return found


def _log_format(args: argparse.Namespace) -> str:
    """``--log-format``, given before or after the subcommand."""
    log_format: str = getattr(args, "log_format_after", None) or args.log_format
    return log_format


def _middleware(args: argparse.Namespace) -> list[Middleware]:
    """With ``--otel``, OpenTelemetry tracing and metrics on the global providers (MissingExtraError without the
    otel extra: a configuration error)."""
    if not (getattr(args, "otel_after", False) or args.otel):
        return []
    return [observability.TracingMiddleware(), observability.MetricsMiddleware()]


def _execute(args: argparse.Namespace) -> int:
    if args.command in _DOCS_COMMANDS:  # several services' configurations, no container of their own
        return _DOCS_COMMANDS[args.command](args)
    path = _config_path(args)
    spec: str | None = getattr(args, "app_after", None) or args.app
    with _current_directory_importable():
        app = _load_app(spec) if spec else None
        container = MessagingContainer.from_config(path, app=app, middleware=_middleware(args))
    try:
        log.info(
            "configuration %s: service %r, transport %s",
            path,
            container.settings.service_name,
            container.settings.transport.masked_url,
        )
        return _COMMANDS[args.command](container, args)
    finally:
        try:
            container.close()
        except Exception:  # a failure to close must not hide the command's outcome
            log.warning("closing the container failed", exc_info=True)


def _exit_status(code: object) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return EXIT_FAILURE


def _report(exc: BaseException, message: str, verbosity: int) -> None:
    if verbosity >= 3:
        sys.stderr.write("".join(traceback.format_exception(exc)))
    line = " ".join(part.strip() for part in message.splitlines() if part.strip()) or type(exc).__name__
    print(f"{PROG}: error: {line}", file=sys.stderr, flush=True)


def _stdout_closed() -> int:
    """The reader of standard output went away (``| head``): stop quietly. What is still buffered goes nowhere, so
    the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real file behind sys.stdout (tests): nothing to flush
        pass
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Runs ``container-messaging`` with ``argv`` (default: ``sys.argv[1:]``) and returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # --help, --version, or a usage error argparse already printed
        return _exit_status(exc.code)
    except BrokenPipeError:
        return _stdout_closed()
    verbosity: int = args.verbose + getattr(args, "verbose_after", 0)
    with _logging(verbosity, _log_format(args)):
        try:
            return _execute(args)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            return _stdout_closed()
        except (UsageError, *_BOOT_ERRORS) as exc:
            _report(exc, str(exc), verbosity)
            return EXIT_USAGE
        except TransportError as exc:
            _report(exc, str(exc), verbosity)
            return EXIT_BROKER
        except MessagingError as exc:
            _report(exc, str(exc), verbosity)
            return EXIT_FAILURE
        except OSError as exc:
            _report(exc, f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), verbosity)
            return EXIT_FAILURE
        except Exception as exc:
            hint = "" if verbosity >= 3 else " (run with -vvv for the traceback)"
            _report(exc, f"unexpected {type(exc).__name__}: {exc}{hint}", verbosity)
            return EXIT_FAILURE
