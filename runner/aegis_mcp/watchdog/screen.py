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

Sequences pyte does not parse are dropped before it sees them: it would draw their
parameters as text. Claude Code 2.1 sends the kitty keyboard protocol's ``CSI < u`` /
``CSI > 5 u`` at every prompt (pyte drew a stray "u" after its prompt), and terminals
also get ``CSI = ...``, colon sub-parameters (``CSI 4:3 m``) and DCS / APC strings
(XTGETTCAP, kitty graphics).
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyte
from pyte.charsets import LAT1_MAP
from pyte.graphics import BG_AIXTERM, BG_ANSI, FG_AIXTERM, FG_ANSI
from pyte.modes import IRM
from pyte.screens import wcwidth

from ..agents.profiles import WatchRules

# Running timers and clocks: "(12s", "1m 5s", "0.3s", "14:02:31".
GENERIC_NOISE = (r"\b\d+(?:\.\d+)?\s?(?:ms|s|m|h)\b", r"\b\d{1,2}:\d{2}(?::\d{2})?\b")
MASK = "\x00"
EVALUATE_EVERY_SECS = 0.05
"""Dirty lines are compared at most this often (and at every check): spinners redraw
at about 10 Hz, a burst of output needs one comparison, not one per chunk."""
FRAME_GAP_SECS = 0.02
"""Output is compared only after a pause this long (or at the end of a synchronized
update): a frame read in two chunks is one frame. Gemini CLI (Ink) erases and rewrites
its whole frame about 12 times a second; compared half-drawn, every frame looked new."""
ALT_SCREEN = 1049 << 5
SYNC_UPDATE = 2026 << 5
"""pyte's keys for the private modes (it shifts them by 5)."""
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
UNPARSED = re.compile(
    rb"\x1b\[[0-?]*[:<=>][0-?]*[ -/]*[@-~]|\x1b[P_^X].*?(?:\x1b\\|\x07)", re.DOTALL
)
"""CSI sequences with parameter bytes pyte misreads, and control strings (DCS, APC,
PM, SOS) it would draw."""
PARTIAL = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*|[P_^X\]][^\x07\x1b]*\x1b?)?\Z")
"""An escape sequence or control string (OSC too) cut off at the end of a chunk: held
back until the rest comes."""
MAX_HELD = 65536
"""A control string cut off further back than this (an image) is passed on, not held."""


class _Screen(pyte.Screen):
    """pyte's screen, counting the scrolls (a line fed at the bottom margin) and noting
    whether the program moved the cursor up (it redraws what it drew before)."""

    scrolls = 0
    moved_up = False

    def __init__(self, columns: int, lines: int) -> None:
        self._made: dict[pyte.screens.Char, dict[str, pyte.screens.Char]] = {}
        super().__init__(columns, lines)

    def draw(self, data: str) -> None:
        # The common case, a run of narrow characters that fits on the line, with the
        # default character set and no insert mode, made cheap: a cell is made once per
        # (attributes, character), not once per cell (Gemini CLI rewrites 20 KB/s, and
        # pyte's per-cell copies were half of the watchdog's cost).
        cursor = self.cursor
        x = cursor.x
        if (
            x + len(data) > self.columns
            or x >= self.columns
            or self.charset
            or self.g0_charset is not LAT1_MAP
            or IRM in self.mode
            or not ((data.isascii() and data.isprintable()) or all(wcwidth(c) == 1 for c in data))
        ):
            super().draw(data)
            return
        if len(self._made) > MAX_TRACKED_CELLS:
            self._made.clear()
        made = self._made.setdefault(cursor.attrs, {})
        line = self.buffer[cursor.y]
        for i, char in enumerate(data):
            cell = made.get(char)
            if cell is None:
                cell = made[char] = cursor.attrs._replace(data=char)
            line[x + i] = cell
        cursor.x = x + len(data)
        self.dirty.add(cursor.y)

    def index(self) -> None:
        bottom = self.margins.bottom if self.margins else self.lines - 1
        if self.cursor.y == bottom:
            self.scrolls += 1
        super().index()

    def reverse_index(self) -> None:
        self.moved_up = True
        super().reverse_index()

    def cursor_up(self, count: int | None = None) -> None:
        self.moved_up = True
        super().cursor_up(count)

    def cursor_position(self, line: int | None = None, column: int | None = None) -> None:
        y = self.cursor.y
        super().cursor_position(line, column)
        self.moved_up = self.moved_up or self.cursor.y < y

    def cursor_to_line(self, line: int | None = None) -> None:
        y = self.cursor.y
        super().cursor_to_line(line)
        self.moved_up = self.moved_up or self.cursor.y < y


_FG = {name: code for code, name in (*FG_ANSI.items(), *FG_AIXTERM.items())}
_BG = {name: code for code, name in (*BG_ANSI.items(), *BG_AIXTERM.items())}


def _color(value: str, named: dict[str, int], extended: int) -> str:
    if value in named:
        return str(named[value])
    try:
        rgb = bytes.fromhex(value)
    except ValueError:
        return str(named["default"])
    return f"{extended};2;{rgb[0]};{rgb[1]};{rgb[2]}" if len(rgb) == 3 else str(named["default"])


def sgr(char: pyte.screens.Char) -> str:
    """The SGR sequence that draws with ``char``'s colours and attributes."""
    codes = ["0", _color(char.fg, _FG, 38), _color(char.bg, _BG, 48)]
    for on, code in (
        (char.bold, "1"),
        (char.italics, "3"),
        (char.underscore, "4"),
        (char.blink, "5"),
        (char.reverse, "7"),
        (char.strikethrough, "9"),
    ):
        if on:
            codes.append(code)
    return f"\x1b[{';'.join(codes)}m"


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
        self._held = b""
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
        self._untaken: float | None = None
        self.changes = 0
        self.noise_redraws = 0
        """Redraws that changed only noise (or nothing at all)."""

    def feed(self, data: bytes) -> bool:
        """The agent wrote ``data`` to its terminal; True if the output before it (a frame
        followed by a pause) said something new (``changed_at`` tells when)."""
        now = self._clock()
        changed = (
            now - self._fed_at >= FRAME_GAP_SECS
            and now - self._evaluated_at >= EVALUATE_EVERY_SECS
            and self.flush()
        )
        self._stream.feed(self._parseable(data))
        self._fed_at = now
        return changed

    def _parseable(self, data: bytes) -> bytes:
        """``data`` without what pyte misparses; a cut-off sequence waits for its end."""
        data = self._held + data
        self._held = b""
        partial = PARTIAL.search(data, max(0, len(data) - MAX_HELD))
        if partial is not None:
            data, self._held = data[: partial.start()], data[partial.start() :]
        return UNPARSED.sub(b"", data)

    def take_change(self) -> float | None:
        """When the screen changed, if it did since the last call (each change is taken
        once, whichever comparison found it)."""
        changed_at, self._untaken = self._untaken, None
        return changed_at

    def flush(self) -> bool:
        """Compare what is pending, unless a frame is still being drawn; True if it was
        a change."""
        screen = self._screen
        if not screen.dirty or SYNC_UPDATE in screen.mode:
            return False
        if self._clock() - self._fed_at < FRAME_GAP_SECS:
            return False
        return self._evaluate()

    @property
    def draws_in_place(self) -> bool:
        """The program draws a screen rather than lines: it uses the alternate screen or
        has moved the cursor up since it started (a line printed below its frame would
        break its redraws)."""
        return ALT_SCREEN in self._screen.mode or self._screen.moved_up

    def resize(self, rows: int, cols: int) -> None:
        """The terminal has a new size (the agent will redraw)."""
        if rows <= 0 or cols <= 0:
            return
        self._screen.resize(rows, cols)
        self._text = (self._text + [""] * rows)[:rows]
        self._masked = (self._masked + [""] * rows)[:rows]
        self._drawn_at = (self._drawn_at + [0.0] * rows)[:rows]
        self._cells.clear()

    @property
    def size(self) -> tuple[int, int]:
        """(rows, columns) of the terminal."""
        return self._screen.lines, self._screen.columns

    @property
    def scrolls(self) -> int:
        """Lines scrolled off the top so far."""
        return self._screen.scrolls

    @property
    def between_sequences(self) -> bool:
        """The agent's output did not stop inside an escape sequence or a character:
        another writer may write to the terminal now without breaking it."""
        return not self._held and not self._stream.utf8_decoder.getstate()[0]

    def render_row(self, y: int) -> str:
        """Row ``y`` drawn again as the agent drew it (colours too), from its first column."""
        line = self._screen.buffer[y]
        out = [f"\x1b[{y + 1};1H"]
        last = ""
        for x in range(self._screen.columns):
            char = line[x]
            if not char.data:
                continue  # the right half of a wide character
            style = sgr(char)
            if style != last:
                out.append(style)
                last = style
            out.append(char.data)
        out.append("\x1b[0m")
        return "".join(out)

    def cursor_sequence(self) -> str:
        """Put the cursor back where the agent left it, with its colours."""
        cursor = self._screen.cursor
        column = min(cursor.x, self._screen.columns - 1)
        return f"\x1b[{cursor.y + 1};{column + 1}H{sgr(cursor.attrs)}"

    def forget_cycles(self) -> None:
        """A new agent process: what cycled before says nothing about it, and a spinner
        the last one left on the screen is not the new one's (Gemini CLI, killed behind
        its spinner, leaves it there for the seconds its successor takes to start)."""
        self._cells.clear()
        self._drawn_at = [0.0] * len(self._drawn_at)
        self._screen.moved_up = False

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
            self.changed_at = self._untaken = self._fed_at
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
        """What the screen shows now (pending output compared first, unless a frame is
        still being drawn)."""
        self.flush()
        lines = self._screen.display
        cursor = min(self._screen.cursor.y, len(lines) - 1)
        region = "\n".join(lines[max(0, cursor - self._context) : cursor + 1])
        prompt = any(p.search(region) for p in self._prompt)
        fresh = self._clock() - BUSY_FRESH_SECS
        busy = next(
            (
                line
                for line, drawn in zip(lines, self._drawn_at, strict=False)
                if drawn >= fresh and any(b.search(line) for b in self._busy)
            ),
            None,
        )
        return ScreenView(
            prompt=prompt,
            busy_line=busy.rstrip() if busy is not None else None,
            cursor_line=lines[cursor].rstrip(),
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
            "draws_in_place": self.draws_in_place,
            "tail": self.tail(),
        }

    def tail(self, count: int = TAIL_LINES) -> list[str]:
        """The ``count`` lines up to the cursor's, as rendered."""
        lines = self._screen.display
        cursor = min(self._screen.cursor.y, len(lines) - 1)
        return [line.rstrip() for line in lines[max(0, cursor - count + 1) : cursor + 1]]
