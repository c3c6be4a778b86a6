"""A stand-in model server for the demo's ``ask`` step: a line in, a streamed reply out.

Each connection sends one request line; the server answers with ``lines`` lines,
``pause`` seconds apart, then closes (``end=""`` sends them as one long line: tokens
the agent receives but does not show yet). ``stall_after`` makes it stop sending after
that many lines (0: accept the request and never answer) while keeping the
connection open, which is how a stalled model stream looks from the agent's side.
Used by the watchdog's tests and benchmarks; it listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class StandInModel:
    """A threaded TCP server on 127.0.0.1 (port chosen by the kernel)."""

    def __init__(
        self,
        lines: int = 5,
        pause: float = 0.5,
        stall_after: int | None = None,
        end: str = "\n",
    ) -> None:
        self.lines = lines
        self.end = end
        self.pause = pause
        self.stall_after = stall_after
        self.requests: list[tuple[float, str]] = []
        """(time.time(), request line) of every request read."""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, name="stand-in-model", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            request = conn.makefile("rb").readline().decode(errors="replace").strip()
            self.requests.append((time.time(), request))
            for n in range(self.lines):
                if self.stall_after is not None and n >= self.stall_after:
                    self._closed.wait()
                    return
                if self._closed.wait(self.pause):
                    return
                reply = f"reply {n + 1} of {self.lines} to {request!r}{self.end}"
                conn.sendall(reply.encode())

    def close(self) -> None:
        """Stop listening and drop every connection."""
        self._closed.set()
        self._listener.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> StandInModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
