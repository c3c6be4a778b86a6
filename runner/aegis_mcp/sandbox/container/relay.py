"""The agent process the runner sees for a container: bytes between its terminal and the engine.

The runner starts this program (``python -I -S relay.py IO CTL MODE``) as the
agent's process, in the agent's PTY or pipes, as the agent's user. The
container already exists and is attached when it starts: ``IO`` is the
engine's attach connection (inherited), ``CTL`` one end of a socket pair whose
other end the container sandbox holds. The program copies the terminal's input
to the container and the container's output to the terminal (``pipes`` mode:
the engine's 8-byte frames split back into stdout and stderr), tells the
sandbox the terminal's size whenever it changes (``W rows cols``) and when the
container's output has ended (``E``), and exits
with the code the sandbox sends once the engine reports the container's end
(``X code``).

It imports nothing but the standard library and is run without ``site``: it
sits in front of every container start, so it starts in a few milliseconds
(the docker SDK alone costs 100 ms). Interrupt and termination signals are not
its business: the runner passes them to the container through the engine and
this program ends when the container does. On a terminal, the line
discipline is put in raw mode so that Ctrl-C reaches the container's terminal
as a byte, as ``docker run -it`` does.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import signal
import socket
import struct
import sys
import termios
import tty

CHUNK = 65536
DRAIN_SECS = 2.0
"""After the exit code, how long output still on its way may take to arrive."""
FRAME_HEADER = struct.Struct(">BxxxL")


class Demux:
    """Splits the engine's multiplexed stream (header: stream, 3 zero bytes, length)."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The complete (fd, payload) pieces that ``data`` finishes."""
        self.buffer += data
        out = []
        while len(self.buffer) >= FRAME_HEADER.size:
            stream, length = FRAME_HEADER.unpack_from(self.buffer)
            end = FRAME_HEADER.size + length
            if len(self.buffer) < end:
                break
            out.append((2 if stream == 2 else 1, self.buffer[FRAME_HEADER.size : end]))
            self.buffer = self.buffer[end:]
        return out


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError:
            return  # the terminal is gone: nobody reads any more
        view = view[written:]


def _winsize(fd: int) -> tuple[int, int] | None:
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return rows, cols


def _copy_file_input(io: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := os.read(0, CHUNK):
            io.sendall(data)
        io.shutdown(socket.SHUT_WR)


def relay(io: socket.socket, ctl: socket.socket, tty_mode: bool, use_stdin: bool) -> int:
    """Copy until the container's output ends; returns the exit code the sandbox sends."""
    sel = selectors.DefaultSelector()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGWINCH, lambda *_: None)
    sel.register(io, selectors.EVENT_READ, "io")
    sel.register(ctl, selectors.EVENT_READ, "ctl")
    sel.register(wake_r, selectors.EVENT_READ, "signal")
    if use_stdin:
        try:
            sel.register(0, selectors.EVENT_READ, "stdin")
        except PermissionError:
            # A regular file or /dev/null (epoll refuses those): always readable, so
            # copied whole now, then the container's input is closed.
            _copy_file_input(io)
    demux = None if tty_mode else Demux()
    control = b""
    code: int | None = None
    output_done = False
    while not (output_done and code is not None):
        events = sel.select(DRAIN_SECS if code is not None else None)
        if not events and code is not None:
            break  # the exit code came and the last output did not: stop waiting
        for key, _ in events:
            if key.data == "io":
                data = io.recv(CHUNK)
                if not data:
                    sel.unregister(io)
                    output_done = True
                    # The sandbox may then read the exit code sooner than the engine says it.
                    with contextlib.suppress(OSError):
                        ctl.sendall(b"E\n")
                elif demux is None:
                    _write_all(1, data)
                else:
                    for fd, payload in demux.feed(data):
                        _write_all(fd, payload)
            elif key.data == "stdin":
                try:
                    data = os.read(0, CHUNK)
                except OSError:
                    data = b""
                if data:
                    with contextlib.suppress(OSError):
                        io.sendall(data)
                else:
                    sel.unregister(0)
                    with contextlib.suppress(OSError):
                        io.shutdown(socket.SHUT_WR)
            elif key.data == "signal":
                os.read(wake_r, 512)
                size = _winsize(0) if tty_mode else None
                if size is not None:
                    with contextlib.suppress(OSError):
                        ctl.sendall(b"W %d %d\n" % size)
            else:
                data = ctl.recv(512)
                if not data:
                    # The runner is gone: no one will send the code.
                    return code if code is not None else 255
                control += data
                while b"\n" in control:
                    line, control = control.split(b"\n", 1)
                    if line.startswith(b"X "):
                        code = int(line[2:])
                        sel.unregister(ctl)
    return code if code is not None else 255


def main(argv: list[str]) -> int:
    """``relay.py IO_FD CTL_FD tty|pipes stdin|nostdin``."""
    io = socket.socket(fileno=int(argv[1]))
    ctl = socket.socket(fileno=int(argv[2]))
    tty_mode = argv[3] == "tty"
    use_stdin = argv[4] == "stdin"
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)
    saved = None
    if tty_mode and os.isatty(0):
        saved = termios.tcgetattr(0)
        tty.setraw(0)
    try:
        return relay(io, ctl, tty_mode, use_stdin)
    finally:
        if saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(0, termios.TCSADRAIN, saved)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
