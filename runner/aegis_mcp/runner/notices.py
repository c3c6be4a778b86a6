"""The runner's messages in the terminal the agent draws on.

A line printed into a screen that Claude Code, Codex or Gemini CLI keeps redrawing in
place breaks it: they redraw by cursor moves from where they think their frame is, so
a line that scrolled the screen leaves every later frame drawn a line or two off (seen
with Claude Code 2.1 in tmux: spinner glyphs and reply text landing in the middle of
other lines, for good). Such an agent's messages are drawn instead over the bottom row
of the screen, reverse video, with the cursor and colours put back where the agent
left them; redrawn for ``SHOW_SECS`` (a new agent process repaints its whole screen),
then the row is drawn again as the agent drew it, from the watchdog's terminal
emulator. Each message is also printed as a plain line once no agent draws over the
main screen (between agent processes, at the end of the run), so the terminal keeps
it. An agent that prints lines (the demo agent, a shell, ``aegis-mcp run -- CMD``), a
session without a terminal emulator (``--no-watchdog``) or stderr that is not a
terminal get the plain line at once, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from typing import Protocol

SHOW_SECS = 8.0
"""How long a message stays over the agent's bottom row."""
REDRAW_SECS = 1.0
PREFIX = "aegis-mcp: "


class AgentScreen(Protocol):
    """What the notices need of the emulator of the agent's terminal."""

    @property
    def draws_in_place(self) -> bool:
        """The agent redraws a screen rather than printing lines."""

    @property
    def between_sequences(self) -> bool:
        """The agent's output did not stop inside an escape sequence."""

    @property
    def size(self) -> tuple[int, int]:
        """(rows, columns)."""

    @property
    def scrolls(self) -> int:
        """Lines scrolled off the top so far."""

    def render_row(self, y: int) -> str:
        """Row ``y`` as the agent drew it."""

    def cursor_sequence(self) -> str:
        """Put the cursor and colours back where the agent left them."""


def plain_line(message: str, raw_terminal: bool) -> bytes:
    """``message`` as a line of its own (in raw mode a bare newline would not return
    the cursor, and the agent may have left it mid-line)."""
    return (f"\r\n{PREFIX}{message}\r\n" if raw_terminal else f"{PREFIX}{message}\n").encode()


class TerminalNotices:
    """Shows the runner's messages without breaking the agent's screen."""

    def __init__(
        self,
        screen: Callable[[], AgentScreen | None],
        raw_terminal: bool,
        fd: int = 2,
        clock: Callable[[], float] = time.monotonic,
        show_secs: float = SHOW_SECS,
    ) -> None:
        self._screen = screen
        self._show_secs = show_secs
        self._raw = raw_terminal
        self._fd = fd
        self._clock = clock
        self._agent_running = False
        self._pending: list[str] = []
        """Shown over an agent's screen; to be printed once the main screen is back."""
        self._shown: str | None = None
        self._shown_until = 0.0
        self._shown_at_scrolls = 0
        self._task: asyncio.Task[None] | None = None

    def say(self, message: str) -> None:
        """Tell the user ``message``."""
        screen = self._overlay_screen()
        if screen is None:
            self._write(plain_line(message, self._raw))
            return
        self._pending.append(message)
        self._shown = " ".join(message.split())
        self._shown_until = self._clock() + self._show_secs
        self._draw(screen)
        if self._task is None or self._task.done():
            with contextlib.suppress(RuntimeError):  # no running loop: drawn once
                self._task = asyncio.get_running_loop().create_task(self._keep_shown())

    def agent_started(self) -> None:
        """An agent process now owns the terminal."""
        self._agent_running = True

    def agent_ended(self) -> None:
        """The agent process ended: its screen is gone, the main screen shows again."""
        self._agent_running = False
        self._print_pending()

    def close(self) -> None:
        """The run ends: nothing more over the agent's screen; what it hid is printed."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._shown = None
        self._print_pending()

    def _overlay_screen(self) -> AgentScreen | None:
        if not self._raw or not self._agent_running or not os.isatty(self._fd):
            return None
        screen = self._screen()
        if screen is None or not screen.draws_in_place:
            return None
        return screen

    def _draw(self, screen: AgentScreen) -> None:
        if self._shown is None or not screen.between_sequences:
            return  # the next round draws it: the agent is mid-sequence
        rows, cols = screen.size
        text = f" {PREFIX}{self._shown} "[: max(cols - 1, 1)].ljust(cols - 1)
        self._shown_at_scrolls = screen.scrolls
        self._write(f"\x1b[{rows};1H\x1b[0;7m{text}\x1b[0m{screen.cursor_sequence()}".encode())

    def _restore(self, screen: AgentScreen) -> bool:
        """Draw again, as the agent drew it, the row the message covered (it moved up
        with the screen if the agent scrolled since); False if the agent is mid-sequence."""
        if not screen.between_sequences:
            return False
        rows, _cols = screen.size
        row = rows - 1 - (screen.scrolls - self._shown_at_scrolls)
        if row >= 0:
            self._write(f"{screen.render_row(row)}{screen.cursor_sequence()}".encode())
        return True

    async def _keep_shown(self) -> None:
        while self._clock() < self._shown_until:
            await asyncio.sleep(min(REDRAW_SECS, max(self._shown_until - self._clock(), 0)))
            screen = self._overlay_screen()
            if screen is not None and self._clock() < self._shown_until:
                self._draw(screen)
        self._shown = None
        for _ in range(20):
            screen = self._overlay_screen()
            if screen is None or self._restore(screen):
                return
            await asyncio.sleep(0.05)

    def _print_pending(self) -> None:
        pending, self._pending = self._pending, []
        for message in pending:
            self._write(plain_line(message, self._raw))

    def _write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            os.write(self._fd, data)
