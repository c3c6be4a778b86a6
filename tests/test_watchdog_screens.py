"""The real agents' screens as the watchdog's terminal emulator reads them, from byte
sequences read off Claude Code 2.1.332, Codex 0.171 and Gemini CLI 0.61 in tmux (its
``pipe-pane``), and the runner's messages drawn over such a screen in a real PTY.

The end-to-end tests (``tests/e2e/test_watchdog_tui.py``) run the CLIs themselves;
these pin down each thing they showed, one at a time, without them.
"""

from __future__ import annotations

import asyncio
import os
import select
import tty

import pyte

from aegis_mcp.agents.profiles import BUILTIN_PROFILES
from aegis_mcp.runner.notices import TerminalNotices
from aegis_mcp.watchdog.screen import ScreenWatcher
from helpers import ManualClock

ROWS, COLS = 30, 100
PROMPT = "\u276f"


def watcher(profile: str) -> tuple[ScreenWatcher, ManualClock]:
    clock = ManualClock()
    return ScreenWatcher(BUILTIN_PROFILES[profile].watch, (ROWS, COLS), clock), clock


def shown(screen: ScreenWatcher, clock: ManualClock, *chunks: bytes) -> bool:
    """Feed one frame (in ``chunks`` a millisecond apart, a check landing between them),
    then pause: did what the screen says change (as the watchdog takes it, whichever
    comparison found it)?"""
    for chunk in chunks:
        screen.feed(chunk)
        clock.tick(0.001)
        screen.flush()
    clock.tick(0.1)
    screen.flush()
    return screen.take_change() is not None


# Claude Code re-enables the kitty keyboard protocol (CSI < u, CSI > 5 u) and
# modifyOtherKeys (CSI > 4;2 m) at each prompt.
KEYBOARD = b"\x1b[?2004h\x1b[<u\x1b[>5u\x1b[>4;2m"
# Its box around its prompt (rows 27-29 of 30), the cursor after its prompt glyph, as
# it draws it: absolute home, relative moves.
CLAUDE_BOX = (
    "\x1b[H\r\x1b[26B" + "─" * COLS + "\r\x1b[1B"
    f"{PROMPT}\xa0\x1b[7m \x1b[27m\r\x1b[1B" + "─" * COLS + "\r\x1b[1B"
    "\x1b[38;5;246m  \u23f5\u23f5 auto mode on (shift+tab to cycle)\x1b[39m\x1b[28;3H"
).encode()


def claude_spinner_frame(row: int, glyph: str, timer: str = "") -> bytes:
    spinner = f"\x1b[38;5;174m{glyph}\x1b[3GZigzagging…{timer}"
    return f"\x1b[H\r\x1b[{row - 1}B{spinner}\x1b[28;3H".encode()


def test_claude_prompt_with_its_keyboard_protocol_sequences():
    screen, clock = watcher("claude")
    frame = KEYBOARD + CLAUDE_BOX
    # Cut inside an escape sequence, as a PTY read may cut it.
    assert shown(screen, clock, frame[:5], frame[5:17], frame[17:])
    view = screen.view()
    # pyte alone drew the "u" of CSI < u after the prompt.
    assert view.prompt and view.cursor_line == PROMPT and view.busy_line is None
    assert screen.draws_in_place
    # Other sequences pyte would draw as text: XTVERSION's reply, kitty graphics,
    # colon sub-parameters, CSI = ...
    assert shown(
        screen,
        clock,
        b"\x1b[1;1H\x1bP>|xterm(3",
        b"90)\x1b\\\x1b_Gi=1;AAAA\x1b\\\x1b[4:3m\x1b[=1;1uok\x1b[0m",
    )
    assert screen.tail(count=30)[0] == "ok"


def test_claude_spinner_glyphs_timer_and_shimmer_are_noise():
    screen, clock = watcher("claude")
    shown(screen, clock, CLAUDE_BOX)
    assert shown(screen, clock, claude_spinner_frame(24, "·"))
    glyphs = "·✢*✶✻✽✻✶*✢"
    changed = []
    for i in range(700):  # 70 s at 10 frames a second
        secs = i // 10
        # The timer shows after some seconds; "(59s)" becomes "(1m 0s)".
        timer = "" if secs < 20 else f" ({secs}s)" if secs < 60 else f" (1m {secs - 60}s)"
        if shown(screen, clock, claude_spinner_frame(24, glyphs[i % 10], timer)):
            changed.append(i)
        if i % 7 == 0:
            # The verb's shimmer: one letter redrawn in another colour.
            assert not shown(screen, clock, b"\x1b[H\r\x1b[23B\x1b[7G\x1b[38;5;216mg\x1b[28;3H")
    assert changed == [], changed
    view = screen.view()
    assert view.prompt, "the prompt stays visible below the spinner"
    assert view.busy_line is not None and view.busy_line.startswith("✢ Zigzagging… (1m 9s)")


def test_a_spinner_left_by_the_last_agent_process_is_not_the_new_ones():
    screen, clock = watcher("gemini")
    frame = " ⠋ Thinking... (esc to cancel, 2s)"
    shown(screen, clock, f"\x1b[20;1H{frame}\x1b[22;4H".encode())
    assert screen.view().busy_line == frame
    # Killed behind its spinner; its successor takes seconds to draw anything.
    screen.forget_cycles()
    clock.tick(0.5)
    assert screen.view().busy_line is None


def gemini_frame(lines: list[str]) -> bytes:
    """Ink's redraw: erase the last frame's lines bottom up, then write the new one."""
    erase = "\x1b[2K\x1b[1A" * (len(lines) - 1) + "\x1b[2K\x1b[G"
    return (erase + "\r\n".join(lines)).encode()


def test_gemini_rewriting_its_whole_frame_is_noise():
    screen, clock = watcher("gemini")
    shown(screen, clock, b"\r\n" * 10)
    spinner = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
    changed = []
    for i in range(100):
        lines = [
            " > STALL",
            f" {spinner[i % 10]} Thinking... (esc to cancel, {i // 10}s)      ? for shortcuts",
            "─" * COLS,
            " *   Type your message or @path/to/file",
        ]
        frame = gemini_frame(lines)
        # A PTY read cuts the frame: half erased, half written.
        if shown(screen, clock, frame[: len(frame) // 2], frame[len(frame) // 2 :]):
            changed.append(i)
    assert changed == [0], changed
    view = screen.view()
    assert view.prompt and view.busy_line is not None
    assert screen.draws_in_place, "it moves the cursor up to redraw"


def test_codex_working_line_in_a_synchronized_update_is_noise():
    screen, clock = watcher("codex")
    shown(screen, clock, b"\x1b[?1049h\x1b[27;1H\xe2\x80\xba Ask Codex to do anything\x1b[27;3H")
    changed = []
    for i in range(60):
        glyph = "•◦"[i // 5 % 2]
        frame = (
            f"\x1b[?2026h\x1b[24;1H{glyph} Working ({i // 10}s • esc to interrupt)"
            "\x1b[27;3H\x1b[?25h\x1b[?2026l"
        ).encode()
        # Inside a synchronized update nothing is compared, even after a pause.
        screen.feed(frame[:30])
        clock.tick(0.1)
        assert not screen.flush() and screen.take_change() is None
        if shown(screen, clock, frame[30:]):
            changed.append(i)
    assert changed == [0], changed
    view = screen.view()
    assert view.prompt and view.busy_line is not None and screen.draws_in_place


def test_lines_printed_by_a_line_oriented_agent_do_not_draw_in_place():
    screen, clock = watcher("demo")
    shown(screen, clock, "> hello\r\n✻ Thinking…\r\x1b[2K✽ ok\r\n> ".encode())
    assert not screen.draws_in_place


# -- the runner's messages over such a screen ----------------------------------------


class Terminal:
    """What the user's terminal shows: everything the agent and the runner wrote."""

    def __init__(self) -> None:
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.master, self.slave = os.openpty()
        # As the runner leaves it: raw, no newline translation.
        tty.setraw(self.slave)

    def take(self) -> bytes:
        data = b""
        while select.select([self.master], [], [], 0.05)[0]:
            data += os.read(self.master, 65536)
        self.stream.feed(data)
        return data

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


def test_a_message_is_drawn_over_the_bottom_row_then_the_row_comes_back():
    agent, clock = watcher("claude")
    term = Terminal()
    agent_bytes = CLAUDE_BOX + claude_spinner_frame(24, "✢")
    shown(agent, clock, agent_bytes)
    term.stream.feed(agent_bytes)
    notices = TerminalNotices(lambda: agent, raw_terminal=True, fd=term.slave, show_secs=0.3)
    notices.agent_started()
    drawn_before = term.screen.display

    async def scenario() -> None:
        notices.say("Unresponsive: model stream stalled 6s")
        term.take()
        shown_rows = term.screen.display
        assert shown_rows[-1].startswith(" aegis-mcp: Unresponsive: model stream stalled 6s")
        assert shown_rows[:-1] == drawn_before[:-1], "nothing else moved"
        assert (term.screen.cursor.y, term.screen.cursor.x) == (27, 2), "cursor put back"
        # The agent goes on drawing where it thinks it draws, colours and all.
        frame = claude_spinner_frame(24, "✶")
        shown(agent, clock, frame)
        term.stream.feed(frame)
        await asyncio.sleep(0.6)
        term.take()

    try:
        asyncio.run(scenario())
        rows = [line.rstrip() for line in term.screen.display]
        assert rows[:28] == agent.tail(count=28), "the terminal shows what the agent drew"
        assert term.screen.display[-1] == drawn_before[-1], "the agent's own bottom row"
        assert term.screen.buffer[ROWS - 1][4].fg == "949494", "with its colour (246)"
        assert term.screen.display[23].startswith("✶ Zigzagging…")
        assert term.take() == b"", "nothing printed while the agent draws"
        notices.agent_ended()
        assert b"aegis-mcp: Unresponsive: model stream stalled 6s\r\n" in term.take()
    finally:
        term.close()


def test_a_message_to_a_line_oriented_agent_is_a_line_of_its_own():
    agent, clock = watcher("demo")
    shown(agent, clock, b"> ")
    term = Terminal()
    try:
        notices = TerminalNotices(lambda: agent, raw_terminal=True, fd=term.slave)
        notices.agent_started()
        notices.say("restart limit reached")
        assert term.take() == b"\r\naegis-mcp: restart limit reached\r\n"
        notices.agent_ended()
        assert term.take() == b"", "said once"
    finally:
        term.close()
