"""The user's terminal: raw mode while an agent owns it, and window sizes."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import struct
import termios
import tty


def is_terminal(fd: int) -> bool:
    """Whether ``fd`` is a terminal."""
    try:
        return os.isatty(fd)
    except OSError:
        return False


def get_winsize(fd: int) -> bytes | None:
    """The raw ``struct winsize`` of a terminal, or None."""
    try:
        return fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return None


def set_winsize(fd: int, winsize: bytes) -> None:
    """Copy a ``struct winsize`` to a terminal (the kernel signals its foreground group)."""
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, winsize)


def winsize_tuple(winsize: bytes | None) -> tuple[int, int] | None:
    """(rows, columns) of a raw winsize."""
    if not winsize:
        return None
    rows, cols, _, _ = struct.unpack("HHHH", winsize)
    return rows, cols


class RawMode:
    """Puts a terminal in raw mode and guarantees it is put back.

    Restoration is registered with ``atexit`` as well as done by ``restore()``,
    so that an exception or ``sys.exit`` anywhere still leaves the user's shell
    usable; ``restore()`` is idempotent.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._saved: list | None = None

    def enter(self) -> None:
        """Switch to raw mode."""
        self._saved = termios.tcgetattr(self.fd)
        atexit.register(self.restore)
        tty.setraw(self.fd, termios.TCSANOW)

    def restore(self) -> None:
        """Put the saved settings back."""
        if self._saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self.fd, termios.TCSAFLUSH, self._saved)
            self._saved = None
