"""Signal behaviour copied from Claude Code, which the supervisor relies on.

- SIGINT while interactive: the first one interrupts whatever the agent is doing (a
  running scenario step) and prints a hint; a second within two seconds exits 130.
  Headless, the first SIGINT exits 130.
- SIGTERM exits 143 promptly; the ``finally`` blocks on the way out close MCP sessions.

Handlers raise on the main thread (Python runs them there), which unwinds any sleep,
busy loop or blocking wait in progress; ``exiting`` makes later signals harmless while
the process is already shutting down.
"""

from __future__ import annotations

import signal
import time
from types import FrameType

from aegis_mcp.demo.output import Console

SIGINT_WINDOW = 2.0
INTERRUPT_HINT = "(interrupted — press Ctrl-C again to exit)"


class StepInterrupted(Exception):
    """The user pressed Ctrl-C while a step was running."""


class SignalState:
    """What the handlers need to know about the program's current activity."""

    def __init__(self, console: Console, headless: bool) -> None:
        self.console = console
        self.headless = headless
        # True while scenario steps or tool calls run: Ctrl-C then aborts them.
        self.busy = False
        self.exiting = False
        self.last_sigint: float | None = None
        # Whether the interactive prompt should be shown again after the hint.
        self.at_prompt = False

    def on_sigint(self, signum: int, frame: FrameType | None) -> None:
        """SIGINT handler: interrupt, or exit 130 on a repeat (or at once when headless)."""
        if self.exiting:
            return
        now = time.monotonic()
        repeat = self.last_sigint is not None and now - self.last_sigint < SIGINT_WINDOW
        if self.headless or repeat:
            self.exiting = True
            raise SystemExit(130)
        self.last_sigint = now
        self.console.raw(f"\n{INTERRUPT_HINT}\n")
        if self.busy:
            raise StepInterrupted()
        if self.at_prompt:
            self.console.raw("> ")

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM handler: exit 143, letting cleanup close the MCP sessions."""
        if self.exiting:
            return
        self.exiting = True
        raise SystemExit(143)


def install(console: Console, headless: bool) -> SignalState:
    """Install the SIGINT and SIGTERM handlers; returns their shared state."""
    state = SignalState(console, headless)
    signal.signal(signal.SIGINT, state.on_sigint)
    signal.signal(signal.SIGTERM, state.on_sigterm)
    return state
