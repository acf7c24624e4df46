"""One endpoint's consumer in a background thread of a web process: for small deployments.

The usual deployment runs each consumer as its own process (``container-messaging run NAME``, or
``manage.py messaging run NAME``), scaled and restarted apart from the web workers. A small deployment may run it
inside the web process instead: :class:`BackgroundConsumer` starts ``container.endpoint(name).run()`` in a daemon
thread and stops it after the message in hand. The run loop installs no signal handlers outside the main thread:
the web server keeps its own and stops the consumer from its shutdown hook. Every web worker process runs its own
consumer; they share the queue as competing consumers.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Final

from container_messaging.consumer import RunOptions, RunResult
from container_messaging.container import MessagingContainer

__all__ = ["BackgroundConsumer"]

log = logging.getLogger("container_messaging.integrations")

_STOP_POLL_SECONDS: Final = 0.1


class BackgroundConsumer:
    """Runs endpoint ``name`` of ``container`` in a daemon thread until :meth:`stop` (or a run limit)."""

    def __init__(self, container: MessagingContainer, name: str, options: RunOptions | None = None) -> None:
        self.name = name
        self._consumer = container.endpoint(name)  # an unknown endpoint is an EndpointError here, not in the thread
        self._options = options or RunOptions()
        self._thread = threading.Thread(target=self._run, name=f"container-messaging {name}", daemon=True)
        self.result: RunResult | None = None
        self.error: BaseException | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped" if self.result or self.error else "not started"
        return f"<BackgroundConsumer {self.name!r} {state}>"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()
        log.info("endpoint %r consuming in background thread %r", self.name, self._thread.name)

    def _run(self) -> None:
        try:
            self.result = self._consumer.run(self._options)
        except BaseException as exc:  # the thread's end: nothing above it would report the error
            self.error = exc
            log.error("background consumer of endpoint %r stopped by an error: %s", self.name, exc, exc_info=exc)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stops the consumer after the message in hand; True when it stopped within ``timeout`` seconds.

        When it did not (a handler still running), its thread is left to the process's exit; the message in hand is
        not acknowledged, so the broker keeps it for the next consumer.
        """
        deadline = time.monotonic() + timeout
        # stop() again on each poll: a stop asked before run() started would be reset by run()'s own start
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._consumer.stop("the application is shutting down")
            self._thread.join(min(_STOP_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        if self._thread.is_alive():
            log.warning(
                "background consumer of endpoint %r did not stop within %.1f s; its unacknowledged message stays on "
                "the broker",
                self.name,
                timeout,
            )
            return False
        return True
