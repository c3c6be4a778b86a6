"""What the agent's terminal says, and whether that changed: the PTY stream through pyte.

Agents redraw in place all the time: a spinner glyph, a running timer, a token
counter, the same prompt box again. Counting bytes written calls all of that life;
comparing rendered screens does not. Each line the emulator marks dirty is compared
with what it said before:

1. spans matched by a noise pattern (the built-in timers and clocks, and the
   profile's own, see ``WatchRules.noise``) are masked first;
2. of the cells that still differ, those that only cycle are ignored: a digit
   replaced by a digit (a counter), a cell taking a value it showed a moment ago
   while it keeps changing (a spinner glyph), one visible glyph replaced by another
   with nothing else on the line changing (a spinner's first turn).

Anything else (new text, a cleared or resized screen) is a change of what the screen
says: progress. So is every scroll, whatever the lines say: output is flowing (a test
runner's "test 41 ok" scrolling up differs from the line before only in digits).

The profile's ``prompt`` and ``busy`` patterns, matched on the rendered lines, say
whether the agent shows its input prompt or says it is working. A busy line counts
only while it is being redrawn (a live spinner): a frozen one is what is left on the
terminal when other output (the runner's own messages, an earlier agent process)
broke the agent's redrawing in place.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyte

from ..agents.profiles import WatchRules

# Running timers and clocks: "(12s", "1m 5s", "0.3s", "14:02:31".
GENERIC_NOISE = (r"\b\d+(?:\.\d+)?\s?(?:ms|s|m|h)\b", r"\b\d{1,2}:\d{2}(?::\d{2})?\b")
MASK = "\x00"
EVALUATE_EVERY_SECS = 0.05
"""Dirty lines are compared at most this often (and at every check): spinners redraw
at about 10 Hz, a burst of output needs one comparison, not one per chunk."""
HISTORY = 12
"""Values remembered per cell: a spinner's whole cycle."""
CYCLING_SECS = 2.0
"""A cell that changed less recently than this is not cycling."""
MAX_CYCLING_CELLS = 4
"""Lines with more changed cells than this changed for real."""
MAX_TRACKED_CELLS = 4096
BUSY_FRESH_SECS = 3.0
"""A busy line not redrawn for this long is a leftover, not a live spinner."""
DEFAULT_SIZE = (24, 80)
TAIL_LINES = 8
"""Lines up to the cursor shown in the status: what prompt and busy patterns look at."""


class _Screen(pyte.Screen):
    """pyte's screen, counting the scrolls (a line fed at the bottom margin)."""

    scrolls = 0

    def index(self) -> None:
        bottom = self.margins.bottom if self.margins else self.lines - 1
        if self.cursor.y == bottom:
            self.scrolls += 1
        super().index()


@dataclass
class _Cell:
    values: deque[str] = field(default_factory=lambda: deque(maxlen=HISTORY))
    changed_at: float = 0.0


@dataclass(frozen=True)
class ScreenView:
    """What the screen shows at one moment."""

    prompt: bool
    """A prompt pattern is on the cursor's line (or just above it)."""
    busy_line: str | None
    """The first line a busy pattern matched."""
    cursor_line: str


class ScreenWatcher:
    """A terminal emulator fed with the agent's output, telling progress from redraws."""

    def __init__(
        self,
        rules: WatchRules,
        size: tuple[int, int] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        rows, cols = size or DEFAULT_SIZE
        self._clock = clock
        self._screen = _Screen(cols, rows)
        self._stream = pyte.ByteStream(self._screen)
        # The profile's own patterns first: they may need the digits a timer mask takes.
        self._noise = [re.compile(p) for p in (*rules.noise, *GENERIC_NOISE)]
        self._prompt = [re.compile(p, re.MULTILINE) for p in rules.prompt]
        self._busy = [re.compile(p) for p in rules.busy]
        self._context = rules.prompt_context_lines
        self._text = [""] * rows
        self._masked = [""] * rows
        self._drawn_at = [0.0] * rows
        self._cells: dict[tuple[int, int], _Cell] = {}
        self._scrolls = 0
        self._fed_at = 0.0
        self._evaluated_at = 0.0
        self.changed_at: float | None = None
        """When what the screen says last changed."""
        self.changes = 0
        self.noise_redraws = 0
        """Redraws that changed only noise (or nothing at all)."""

    def feed(self, data: bytes) -> bool:
        """The agent wrote ``data`` to its terminal; True if the screen now says something new."""
        now = self._clock()
        self._stream.feed(data)
        self._fed_at = now
        if now - self._evaluated_at < EVALUATE_EVERY_SECS:
            return False
        return self._evaluate()

    def flush(self) -> bool:
        """Compare what is still pending; True if it was a change."""
        return self._evaluate() if self._screen.dirty else False

    def resize(self, rows: int, cols: int) -> None:
        """The terminal has a new size (the agent will redraw)."""
        if rows <= 0 or cols <= 0:
            return
        self._screen.resize(rows, cols)
        self._text = (self._text + [""] * rows)[:rows]
        self._masked = (self._masked + [""] * rows)[:rows]
        self._drawn_at = (self._drawn_at + [0.0] * rows)[:rows]
        self._cells.clear()

    def forget_cycles(self) -> None:
        """A new agent process: what cycled before says nothing about it."""
        self._cells.clear()

    def _evaluate(self) -> bool:
        screen = self._screen
        self._evaluated_at = self._clock()
        changed = screen.scrolls != self._scrolls
        self._scrolls = screen.scrolls
        cols = screen.columns
        for y in sorted(screen.dirty):
            if y >= len(self._text):
                continue
            line = screen.buffer[y]
            text = "".join(line[x].data for x in range(cols))
            masked = text
            for pattern in self._noise:
                masked = pattern.sub(MASK, masked)
            # A mask shortens the line by what it hid: compare without the padding.
            masked = masked.rstrip()
            old = self._masked[y]
            self._text[y] = text
            self._masked[y] = masked
            self._drawn_at[y] = self._fed_at
            if masked != old and not self._only_cycles(y, old, masked):
                changed = True
        screen.dirty.clear()
        if changed:
            self.changes += 1
            self.changed_at = self._fed_at
        else:
            self.noise_redraws += 1
        return changed

    def _only_cycles(self, y: int, old: str, new: str) -> bool:
        """Whether every cell that differs between two renderings of line ``y`` just cycles."""
        if len(old) != len(new):
            return False
        diffs = [x for x, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
        if len(diffs) > MAX_CYCLING_CELLS:
            return False
        if len(self._cells) > MAX_TRACKED_CELLS:
            self._cells.clear()
        now = self._fed_at
        lone = len(diffs) == 1
        noise = True
        for x in diffs:
            a, b = old[x], new[x]
            cell = self._cells.setdefault((y, x), _Cell())
            cycled = b in cell.values and now - cell.changed_at <= CYCLING_SECS
            counter = a.isdigit() and b.isdigit()
            glyph = lone and not a.isspace() and not b.isspace() and MASK not in (a, b)
            if not cell.values:
                cell.values.append(a)
            cell.values.append(b)
            cell.changed_at = now
            if not (cycled or counter or glyph):
                noise = False
        return noise

    def view(self) -> ScreenView:
        """What the screen shows now (pending output compared first)."""
        self.flush()
        cursor = min(self._screen.cursor.y, len(self._text) - 1)
        region = "\n".join(self._text[max(0, cursor - self._context) : cursor + 1])
        prompt = any(p.search(region) for p in self._prompt)
        fresh = self._clock() - BUSY_FRESH_SECS
        busy = next(
            (
                line
                for line, drawn in zip(self._text, self._drawn_at, strict=True)
                if drawn >= fresh and any(b.search(line) for b in self._busy)
            ),
            None,
        )
        return ScreenView(
            prompt=prompt,
            busy_line=busy.rstrip() if busy is not None else None,
            cursor_line=self._text[cursor].rstrip(),
        )

    def status(self, view: ScreenView | None = None) -> dict[str, Any]:
        """The reading ``watchdog_status`` shows (calibration is done by looking at it)."""
        view = view or self.view()
        now = self._clock()
        return {
            "emulator": "pyte",
            "size": [self._screen.lines, self._screen.columns],
            "changes": self.changes,
            "noise_redraws": self.noise_redraws,
            "changed_secs_ago": None
            if self.changed_at is None
            else round(now - self.changed_at, 2),
            "prompt_visible": view.prompt,
            "busy_line": view.busy_line,
            "cursor_line": view.cursor_line,
            "cursor": [self._screen.cursor.y, self._screen.cursor.x],
            "tail": self.tail(),
        }

    def tail(self, count: int = TAIL_LINES) -> list[str]:
        """The ``count`` lines up to the cursor's, as rendered."""
        cursor = min(self._screen.cursor.y, len(self._text) - 1)
        return [line.rstrip() for line in self._text[max(0, cursor - count + 1) : cursor + 1]]
