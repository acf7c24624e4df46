"""What a consumer runs its handlers on: the event loop it owns (coroutine handlers) and its worker threads
(``concurrency`` above 1).

One :class:`EventLoopThread` per consumer run, started when the first coroutine handler needs it: coroutine handlers
are awaited there, not on a new loop per message. Work handed to a worker thread or to the loop runs in a copy of
the consumer's context (the message in hand, the test system's failure observer, the loop itself), and reports back
through :class:`Completions`, which the consumer's own thread reads: only that thread settles deliveries.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import queue
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

__all__ = ["Completions", "EventLoopThread", "WorkerThreads"]

T = TypeVar("T")


class EventLoopThread:
    """An asyncio event loop running in a thread of its own, started on first use, for one consumer run."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=f"asyncio-{self._name}", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedules ``coroutine`` as a task on the loop (in a copy of the caller's context)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._started())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Awaits ``coroutine`` on the loop and returns its result (or raises its exception) in the calling thread."""
        return self.submit(coroutine).result()

    def close(self) -> None:
        """Cancels what still runs on the loop, stops it and waits for its thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def cancel_all() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await loop.shutdown_asyncgens()

        asyncio.run_coroutine_threadsafe(cancel_all(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


class Completions(Generic[T]):
    """Finished work, ``(item, None)`` or ``(item, the exception it raised)``, in the order it finished; read by
    the consumer's thread."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[T, BaseException | None]] = queue.SimpleQueue()

    def put(self, item: T, error: BaseException | None = None) -> None:
        self._queue.put((item, error))

    def get(self, timeout: float | None) -> tuple[T, BaseException | None] | None:
        """The next finished item, waiting up to ``timeout`` seconds (0: not at all); None when there is none."""
        try:
            return self._queue.get(block=timeout != 0, timeout=timeout or None)
        except queue.Empty:
            return None


class WorkerThreads(Generic[T]):
    """``size`` threads running ``work(item)``, each in a copy of the context of the thread that started it; the
    outcome goes to ``completions``."""

    def __init__(self, size: int, name: str, completions: Completions[T]) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(size, thread_name_prefix=f"handler-{name}")
        self._completions = completions

    def start(self, work: Callable[[T], object], item: T) -> None:
        self._pool.submit(contextvars.copy_context().run, self._run, work, item)

    def _run(self, work: Callable[[T], object], item: T) -> None:
        try:
            work(item)
        except BaseException as error:  # carried to the consumer's thread, which re-raises it
            self._completions.put(item, error)
        else:
            self._completions.put(item)

    def close(self, *, wait: bool = True) -> None:
        """Waits for the work started to end (``wait`` False: only drops the work not started yet)."""
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
