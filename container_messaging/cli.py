"""The ``container-messaging`` command line: Ecotone's console commands for a configured container.

::

    container-messaging [--config PATH] [-v...] list
    container-messaging [--config PATH] [-v...] run NAME [--handled-message-limit N] [--execution-time-limit MS]
                                                          [--memory-limit MB] [--stop-on-failure]
                                                          [--finish-when-no-messages] [--wait-for-broker SECONDS]
                                                          [--concurrency N] [--processes N]
    container-messaging [--config PATH] [-v...] setup [NAME]
    container-messaging [--config PATH] [-v...] send-command DEST KEY PAYLOAD [--content-type T] [--header K=V ...]
    container-messaging [--config PATH] [-v...] publish-event KEY PAYLOAD [--content-type T] [--header K=V ...]
    container-messaging [--config PATH] [-v...] send-message DEST CHANNEL PAYLOAD [--content-type T] [--header K=V]
    container-messaging [--config PATH ...] asyncapi [--output FILE] [--api-version V]
    container-messaging [--config PATH ...] graph [--format mermaid|dot] [--output FILE]

The configuration file is ``--config`` or else the ``CONTAINER_MESSAGING_CONFIG`` environment variable. ``--config``
and ``-v`` may come before or after the subcommand (``container-messaging run billing -vvv``). ``PAYLOAD`` ``-``
reads standard input.

Exit codes: 0 success; 1 a failure (broker, handler, ``run --stop-on-failure`` stopped by a failed message);
2 a usage or configuration error; 130 interrupted. Errors are one line on standard error,
``container-messaging: error: <message>``, with the traceback only at ``-vvv``. Passwords in URLs are replaced by
``***`` in everything printed or logged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Final

import attrs

from container_messaging.config import CONFIG_ENV, config_path
from container_messaging.consumer import RunOptions
from container_messaging.container import MessagingContainer
from container_messaging.distributed import DistributedBus
from container_messaging.errors import ConfigurationError, EndpointError, MessagingError
from container_messaging.messages import ID, MediaType, new_message_id
from container_messaging.redaction import mask_url
from container_messaging.supervisor import Supervisor

__all__ = ["CONFIG_ENV", "EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "PROG", "build_parser", "main"]

PROG: Final = "container-messaging"

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_TABLE_TITLE: Final = "Endpoint Names"

log = logging.getLogger("container_messaging.cli")


class UsageError(Exception):
    """A command line mistake found after parsing (no configuration, bad payload): exit code 2."""


# --------------------------------------------------------------------------------------------------------------------
# Masking: every line printed or logged goes through it


_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


class _Masker:
    """Replaces the password of every URL in a text by ``***`` (and the configured URLs, whatever they hold)."""

    def __init__(self) -> None:
        self._urls: dict[str, str] = {}

    def add_url(self, url: str) -> None:
        masked = mask_url(url)
        if masked != url:
            self._urls[url] = masked

    def __call__(self, text: str) -> str:
        # Known URLs first: a password with a space or a quote would stop the pattern below before the '@'.
        for url, masked in self._urls.items():
            text = text.replace(url, masked)
        return _URL.sub(lambda match: mask_url(match.group(0)), text)


class _MaskingFormatter(logging.Formatter):
    def __init__(self, fmt: str, masker: _Masker) -> None:
        super().__init__(fmt)
        self._masker = masker

    def format(self, record: logging.LogRecord) -> str:
        return self._masker(super().format(record))


@contextmanager
def _logging(verbosity: int, masker: _Masker) -> Iterator[None]:
    """Logs to stderr: WARNING; ``-v`` INFO and ``-vv`` DEBUG for container_messaging; ``-vvv`` DEBUG everywhere."""
    root = logging.getLogger()
    package = logging.getLogger("container_messaging")
    saved = root.level, package.level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_MaskingFormatter(LOG_FORMAT, masker))
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


def _header(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def _add_global_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """``--config`` and ``-v`` on the main parser and again on each subcommand.

    A subparser writes every attribute it parsed into the shared namespace, so the subcommand's copies use their own
    ``dest`` s (``*_after``) with ``SUPPRESS`` defaults: given after the subcommand, ``-v`` adds to the count given
    before it and ``--config`` overrides the one given before it.
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
        "-v",
        "--verbose",
        dest=f"verbose{suffix}",
        action="count",
        default=argparse.SUPPRESS if after_command else 0,
        help="log more: -v INFO, -vv DEBUG, -vvv DEBUG for every library and tracebacks on errors",
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``container-messaging``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run and set up the consumer of a container_messaging service, and send it messages.",
        epilog="exit codes: 0 success, 1 failure, 2 usage or configuration error, 130 interrupted",
    )
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

    dead_letter = command("dead-letter", "List, show, replay or delete the messages that failed for good.")
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

    listing = action("list", "A table of the dead letter's entries (message id, time, handler, error).")
    listing.add_argument("--json", action="store_true", help="print the entries as JSON (for scripts)")
    show = action("show", "Everything kept about one message: failure, trace, headers and body.")
    show.add_argument("message_id", metavar="ID", help="the message id (the 'id' header)")
    show.add_argument("--json", action="store_true", help="print the entries as JSON")
    replay = action("replay", "Send a message (or --all) back to the endpoint it failed in.")
    replay.add_argument("message_id", metavar="ID", nargs="?", help="the message id")
    replay.add_argument("--all", action="store_true", help="replay every entry")
    delete = action("delete", "Remove a message from the dead letter for good.")
    delete.add_argument("message_id", metavar="ID", help="the message id")
    _add_docs_commands(commands)
    return parser


# --------------------------------------------------------------------------------------------------------------------
# Commands


def _out(masker: _Masker, line: str) -> None:
    print(masker(line), file=sys.stdout, flush=True)


def _cmd_list(container: MessagingContainer, args: argparse.Namespace, masker: _Masker) -> int:
    names = container.list()
    width = max([len(_TABLE_TITLE), *(len(name) for name in names)])
    border = f"+{'-' * (width + 2)}+"
    lines = [border, f"| {_TABLE_TITLE:<{width}} |", border, *(f"| {name:<{width}} |" for name in names)]
    if names:
        lines.append(border)
    for line in lines:
        _out(masker, line)
    return EXIT_OK


def _cmd_run(container: MessagingContainer, args: argparse.Namespace, masker: _Masker) -> int:
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
    # the start banner on stderr (stdout keeps the one result line for scripts)
    print(container.endpoint(args.name).description(options), file=sys.stderr, flush=True)
    result = container.run(args.name, **attrs.asdict(options))
    _out(masker, result.summary())
    return EXIT_FAILURE if args.stop_on_failure and result.failed else EXIT_OK


def _child_command(args: argparse.Namespace, options: RunOptions) -> list[str]:
    """The command line of one consumer process of ``run --processes``: this run without ``--processes``."""
    command = [sys.executable, "-m", "container_messaging", "--config", _config_path(args), "run", args.name]
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


def _cmd_setup(container: MessagingContainer, args: argparse.Namespace, masker: _Masker) -> int:
    from container_messaging.transports import dead_letter_queue  # noqa: PLC0415

    names: list[str] = [args.name] if args.name is not None else container.list()
    if not names:
        _out(masker, f"nothing to set up: no endpoints (configure service_name in {container.settings.source})")
        return EXIT_OK
    where = container.settings.transport.masked_url
    for name in names:
        container.setup(name)
        topology = container.topology.endpoint(name, container.routes)
        bindings = ", ".join(repr(key) for key in topology.bindings)
        _out(
            masker,
            f"{name}: declared exchange {topology.exchange!r}, queue {topology.queue!r} bound to {bindings}, "
            f"and dead letter queue {dead_letter_queue(topology.queue)!r} on {where}",
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


def _cmd_send_command(container: MessagingContainer, args: argparse.Namespace, masker: _Masker) -> int:
    payload = _read_payload(args)
    metadata, message_id = _metadata(args)
    container.get(DistributedBus).send_command(args.destination, args.routing_key, payload, args.content_type, metadata)
    _out(masker, f"sent command {args.routing_key} to {args.destination} (id {message_id})")
    return EXIT_OK


def _cmd_publish_event(container: MessagingContainer, args: argparse.Namespace, masker: _Masker) -> int:
    payload = _read_payload(args)
    metadata, message_id = _metadata(args)
    container.get(DistributedBus).publish_event(args.routing_key, payload, args.content_type, metadata)
    _out(masker, f"published event {args.routing_key} (id {message_id})")
    return EXIT_OK


def _cmd_send_message(container: MessagingContainer, args: argparse.Namespace, masker: _Masker) -> int:
    payload = _read_payload(args)
    metadata, message_id = _metadata(args)
    container.get(DistributedBus).send_message(args.destination, args.channel, payload, args.content_type, metadata)
    _out(masker, f"sent message to channel {args.channel} of {args.destination} (id {message_id})")
    return EXIT_OK


def _time(timestamp: int | None) -> str:
    return "-" if timestamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _cmd_dead_letter(container: MessagingContainer, args: argparse.Namespace, masker: _Masker) -> int:
    dead_letter = container.dead_letter(args.endpoint)
    todo = args.dead_letter_action
    if todo == "list":
        entries = dead_letter.list()
        if args.json:
            _out(masker, json.dumps([entry.as_dict() for entry in entries], indent=2))
            return EXIT_OK
        _out(masker, f"{len(entries)} dead letter entr{'y' if len(entries) == 1 else 'ies'} for {dead_letter.endpoint}")
        for entry in entries:
            error = f"{(entry.error_class or '?').rsplit('.', 1)[-1]}: {entry.error_message or ''}"
            if len(error) > 100:
                error = error[:97] + "..."
            _out(
                masker,
                f"{entry.message_id}  {_time(entry.failed_at)}  {entry.routing_key or '-'}  "
                f"{entry.handler or '-'}  {entry.reason or '-'}  {error}",
            )
        return EXIT_OK
    if todo == "show":
        entries = dead_letter.get(args.message_id)
        if args.json:
            _out(masker, json.dumps([entry.as_dict() for entry in entries], indent=2))
            return EXIT_OK
        for entry in entries:
            data = entry.as_dict()
            for key in (
                "message_id",
                "endpoint",
                "routing_key",
                "payload_type",
                "handler",
                "reason",
                "error_class",
                "error_message",
                "attempts",
                "content_type",
            ):
                _out(masker, f"{key}: {data[key]}")
            _out(masker, f"failed_at: {_time(entry.failed_at)}")
            _out(masker, "headers:")
            for key, value in sorted(data["headers"].items()):
                _out(masker, f"  {key}: {value}")
            _out(masker, "body:")
            _out(masker, data.get("body", data.get("body_base64", "")))
            _out(masker, "trace:")
            _out(masker, entry.trace or "-")
        return EXIT_OK
    if todo == "replay":
        if args.all == (args.message_id is not None):
            raise UsageError("dead-letter replay needs a message ID or --all (not both)")
        count = dead_letter.replay_all() if args.all else dead_letter.replay(args.message_id)
        _out(masker, f"replayed {count} message{'s' if count != 1 else ''} to {dead_letter.endpoint}")
        return EXIT_OK
    count = dead_letter.delete(args.message_id)
    _out(masker, f"deleted {count} dead letter entr{'y' if count == 1 else 'ies'} of {args.message_id}")
    return EXIT_OK


_Command = Callable[[MessagingContainer, argparse.Namespace, _Masker], int]

_COMMANDS: Final[Mapping[str, _Command]] = {
    "list": _cmd_list,
    "run": _cmd_run,
    "setup": _cmd_setup,
    "send-command": _cmd_send_command,
    "publish-event": _cmd_publish_event,
    "send-message": _cmd_send_message,
    "dead-letter": _cmd_dead_letter,
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


def _execute(args: argparse.Namespace, masker: _Masker) -> int:
    if args.command in _DOCS_COMMANDS:  # several services' configurations, no container of their own
        return _DOCS_COMMANDS[args.command](args)
    path = _config_path(args)
    with _current_directory_importable():
        container = MessagingContainer.from_config(path)
    try:
        masker.add_url(container.settings.transport.url)
        log.info(
            "configuration %s: service %r, transport %s",
            path,
            container.settings.service_name,
            container.settings.transport.masked_url,
        )
        return _COMMANDS[args.command](container, args, masker)
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


def _report(exc: BaseException, message: str, verbosity: int, masker: _Masker) -> None:
    if verbosity >= 3:
        sys.stderr.write(masker("".join(traceback.format_exception(exc))))
    line = " ".join(part.strip() for part in message.splitlines() if part.strip()) or type(exc).__name__
    print(masker(f"{PROG}: error: {line}"), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Runs ``container-messaging`` with ``argv`` (default: ``sys.argv[1:]``) and returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return _exit_status(exc.code)
    verbosity: int = args.verbose + getattr(args, "verbose_after", 0)
    masker = _Masker()
    with _logging(verbosity, masker):
        try:
            return _execute(args, masker)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        except (UsageError, ConfigurationError, EndpointError) as exc:
            _report(exc, str(exc), verbosity, masker)
            return EXIT_USAGE
        except MessagingError as exc:
            _report(exc, str(exc), verbosity, masker)
            return EXIT_FAILURE
        except OSError as exc:
            _report(exc, f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), verbosity, masker)
            return EXIT_FAILURE
        except Exception as exc:
            hint = "" if verbosity >= 3 else " (run with -vvv for the traceback)"
            _report(exc, f"unexpected {type(exc).__name__}: {exc}{hint}", verbosity, masker)
            return EXIT_FAILURE
