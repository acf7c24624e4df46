"""``manage.py messaging``: the ``container-messaging`` console commands for the container of Django's settings.

::

    manage.py messaging list
    manage.py messaging run NAME [--handled-message-limit N] [--execution-time-limit MS] [--memory-limit MB]
                                 [--stop-on-failure] [--finish-when-no-messages] [-v | -vv | -vvv]
    manage.py messaging setup [NAME]
    manage.py messaging dead-letter [--endpoint NAME] list [--json]
    manage.py messaging dead-letter [--endpoint NAME] show ID
    manage.py messaging dead-letter [--endpoint NAME] replay (ID | --all)
    manage.py messaging dead-letter [--endpoint NAME] delete ID

Each command builds its own container from the settings and closes it at the end. ``-v`` logs INFO, ``-vv`` DEBUG
for container_messaging, ``-vvv`` DEBUG for every library (Django's ``--verbosity 2`` and ``3`` give ``-v`` and
``-vv``). Exit codes as the ``container-messaging`` command: 1 a failure (broker, ``--stop-on-failure``), 2 a
configuration or usage error, 130 interrupted.
"""

from __future__ import annotations

import json
import logging
import time
from argparse import ArgumentParser
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from container_messaging.config import OUTBOX_ENDPOINT
from container_messaging.consumer import RunOptions
from container_messaging.container import MessagingContainer
from container_messaging.errors import ConfigurationError, EndpointError, MessagingError
from container_messaging.integrations.django.conf import build_container

__all__ = ["Command"]

EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextmanager
def _logging(verbosity: int, stream: OutputWrapper) -> Iterator[None]:
    """Logs to the command's stderr: ``-v`` INFO, ``-vv`` DEBUG for container_messaging, ``-vvv`` DEBUG everywhere."""
    if verbosity <= 0:
        yield
        return
    handler = logging.StreamHandler(stream)
    handler.terminator = ""  # the OutputWrapper ends each line itself
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger = logging.getLogger() if verbosity >= 3 else logging.getLogger("container_messaging")
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbosity == 1 else logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


def _time(timestamp: int | None) -> str:
    return "-" if timestamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


class Command(BaseCommand):
    help = "Run and set up this service's consumers and manage its dead letter (the container-messaging commands)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

        def command(name: str, help_text: str) -> ArgumentParser:
            sub = commands.add_parser(name, help=help_text, description=help_text)
            sub.add_argument(
                "-v",
                dest="verbose",
                action="count",
                default=0,
                help="log more: -v INFO, -vv DEBUG, -vvv DEBUG for every library",
            )
            return sub

        command("list", "List the endpoint names that can be run.")

        run = command("run", "Consume an endpoint's messages until a limit, a signal or (optionally) a failure.")
        run.add_argument("name", metavar="NAME", help="the endpoint to run (see 'list')")
        run.add_argument("--handled-message-limit", type=int, metavar="N", help="stop after N messages")
        run.add_argument("--execution-time-limit", type=int, metavar="MS", help="stop after MS milliseconds")
        run.add_argument("--memory-limit", type=int, metavar="MB", help="stop once the process uses MB megabytes")
        run.add_argument(
            "--stop-on-failure", action="store_true", help="stop at the first failed message, leaving it queued"
        )
        run.add_argument("--finish-when-no-messages", action="store_true", help="stop when the queue is empty")

        setup = command("setup", "Declare the exchange, the endpoint queues and their bindings.")
        setup.add_argument("name", metavar="NAME", nargs="?", help="one endpoint (default: every endpoint)")

        dead_letter = command("dead-letter", "List, show, replay or delete the messages that failed for good.")
        dead_letter.add_argument("--endpoint", metavar="NAME", help="whose dead letter (default: the service's)")
        actions = dead_letter.add_subparsers(dest="action", metavar="ACTION", required=True)
        listing = actions.add_parser("list", help="one line per entry: id, time, routing key, handler, reason, error")
        listing.add_argument("--json", action="store_true", help="the entries as JSON")
        show = actions.add_parser("show", help="everything kept about one message, as JSON")
        show.add_argument("message_id", metavar="ID", help="the message id (the 'id' header)")
        replay = actions.add_parser("replay", help="send a message (or --all) back to the endpoint it failed in")
        replay.add_argument("message_id", metavar="ID", nargs="?", help="the message id")
        replay.add_argument("--all", action="store_true", help="replay every entry")
        delete = actions.add_parser("delete", help="remove a message from the dead letter for good")
        delete.add_argument("message_id", metavar="ID", help="the message id")

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = max(options["verbose"], options["verbosity"] - 1)
        try:
            with _logging(verbosity, self.stderr):
                container = build_container()
                try:
                    commands = {
                        "list": self._list,
                        "run": self._run,
                        "setup": self._setup,
                        "dead-letter": self._dead_letter,
                    }
                    commands[options["command"]](container, options)
                finally:
                    container.close()
        except KeyboardInterrupt:
            raise CommandError("interrupted", returncode=EXIT_INTERRUPTED) from None
        except (ConfigurationError, EndpointError) as exc:
            raise CommandError(str(exc), returncode=EXIT_USAGE) from exc
        except MessagingError as exc:
            raise CommandError(str(exc), returncode=EXIT_FAILURE) from exc

    def _out(self, line: str) -> None:
        self.stdout.write(line)

    def _list(self, container: MessagingContainer, options: dict[str, Any]) -> None:
        for name in container.list():
            self._out(name)

    def _run(self, container: MessagingContainer, options: dict[str, Any]) -> None:
        try:
            run_options = RunOptions(
                options["handled_message_limit"],
                options["execution_time_limit"],
                options["memory_limit"],
                options["stop_on_failure"],
                options["finish_when_no_messages"],
            )
        except ConfigurationError as exc:  # a run option that is not a positive number, named
            raise CommandError(str(exc), returncode=EXIT_USAGE) from exc
        result = container.endpoint(options["name"]).run(run_options)
        self._out(f"{result.endpoint}: handled {result.handled}, failed {result.failed} ({result.stop_reason})")
        if options["stop_on_failure"] and result.failed:
            raise CommandError(f"endpoint {result.endpoint!r} stopped on a failed message", returncode=EXIT_FAILURE)

    def _setup(self, container: MessagingContainer, options: dict[str, Any]) -> None:
        names = [options["name"]] if options["name"] is not None else container.list()
        if not names:
            self._out("nothing to set up: no endpoints (configure service_name)")
        for name in names:
            container.setup(name)
            if name == OUTBOX_ENDPOINT and container.settings.outbox.enabled:
                self._out(f"{name}: created the outbox and inbox tables where missing")
            else:
                self._out(f"{name}: declared the exchange, the queue, its bindings and its dead letter queue")

    def _dead_letter(self, container: MessagingContainer, options: dict[str, Any]) -> None:
        dead_letter = container.dead_letter(options["endpoint"])
        action, message_id = options["action"], options.get("message_id") or ""
        if action == "list":
            entries = dead_letter.list()
            if options["json"]:
                self._out(json.dumps([entry.as_dict() for entry in entries], indent=2))
                return
            self._out(
                f"{len(entries)} dead letter entr{'y' if len(entries) == 1 else 'ies'} for {dead_letter.endpoint}"
            )
            for entry in entries:
                error = f"{(entry.error_class or '?').rsplit('.', 1)[-1]}: {entry.error_message or ''}"
                self._out(
                    f"{entry.message_id}  {_time(entry.failed_at)}  {entry.routing_key or '-'}  "
                    f"{entry.handler or '-'}  {entry.reason or '-'}  {error[:100]}"
                )
        elif action == "show":
            self._out(json.dumps([entry.as_dict() for entry in dead_letter.get(message_id)], indent=2))
        elif action == "replay":
            if options["all"] == bool(message_id):
                raise CommandError("dead-letter replay needs a message ID or --all (not both)", returncode=EXIT_USAGE)
            count = dead_letter.replay_all() if options["all"] else dead_letter.replay(message_id)
            self._out(f"replayed {count} message{'s' if count != 1 else ''} to {dead_letter.endpoint}")
        else:
            count = dead_letter.delete(message_id)
            self._out(f"deleted {count} dead letter entr{'y' if count == 1 else 'ies'} of {message_id}")
