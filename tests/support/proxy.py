"""A loopback TCP proxy to a broker that a test can break: cut every connection at once (as when a broker connection
drops), or blackhole them (nothing forwarded either way and nothing closed, as in a network partition: every
connection made meanwhile is accepted and hears nothing either)."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading

__all__ = ["TcpProxy"]


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target`` until told otherwise; ``close()`` ends it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._pairs: list[tuple[socket.socket, socket.socket | None]] = []
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._running = True
        self._blackholed = threading.Event()
        self.cuts = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def url(self, url: str) -> str:
        """``url`` with the target's address replaced by the proxy's."""
        host, port = self._target
        return url.replace(f"{host}:{port}", f"127.0.0.1:{self.port}")

    def _loop(self) -> None:
        self._server.setblocking(False)
        self._selector.register(self._server, selectors.EVENT_READ, None)
        while self._running:
            for key, _ in self._selector.select(timeout=0.1):
                if key.data is None:
                    self._accept()
                    continue
                source, destination = key.fileobj, key.data
                try:
                    data = source.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        raise ConnectionResetError
                    if destination is not False and not self._blackholed.is_set():
                        destination.sendall(data)
                except OSError:
                    self._drop(source, destination)  # type: ignore[arg-type]

    def _accept(self) -> None:
        client, _ = self._server.accept()
        if self._blackholed.is_set():  # accepted, and then nothing: read and dropped
            with self._lock:
                self._pairs.append((client, None))
            self._selector.register(client, selectors.EVENT_READ, False)
            return
        upstream = socket.create_connection(self._target)
        with self._lock:
            self._pairs.append((client, upstream))
        self._selector.register(client, selectors.EVENT_READ, upstream)
        self._selector.register(upstream, selectors.EVENT_READ, client)

    def _drop(self, a: socket.socket, b: socket.socket | bool | None) -> None:
        for sock in (a, b):
            if isinstance(sock, socket.socket):
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(sock)
                sock.close()

    def blackhole(self) -> None:
        """From now on nothing is forwarded, either way, on any connection; none is closed."""
        self._blackholed.set()

    def cut(self) -> None:
        """Closes every open connection (both ends); new ones are accepted and forwarded (unless blackholed)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            for sock in (client, upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
        self.cuts += 1

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=5)
        self.cut()
        self._server.close()
