"""The watchdog with the real agents' TUIs in a real terminal (tmux), against a stand-in
model server that can stall: Claude Code idle at its prompt, streaming a reply, and behind
its spinner while the model never answers (then restarted with ``--continue``); the
runner's warning drawn over its screen without breaking it; the same stall in Codex's and
Gemini CLI's TUIs; and in all three, a stream that sends only keep-alives.

The timeout is short (2 s, a check every 0.5 s) to keep the run short; what the watchdog
reads is asserted through ``watchdog_status``, what the user sees through tmux.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e.agents import interactive_setup
from e2e.standin import Match, Request, Script, SlowText, Stall, StandInServer, Text
from helpers import AEGIS, Tmux, call, gone, runner_socket, wait_for

TIMEOUT = 2.0
START = 90.0
"""Seconds a CLI may take to show its prompt (the machine is shared)."""
PROMPTS = {
    "claude": r"^\u276f",
    "codex": r"^\u203a ",
    "gemini": r"^ [>*] ",
}
# A line saying the agent works (its spinner).
BUSY = {"claude": r"^\S \S+…", "codex": r"esc to interrupt", "gemini": r"esc to cancel"}
# The profile's continue flag on the restarted agent's command line.
CONTINUED = {"claude": ["--continue"], "codex": ["resume", "--last"], "gemini": ["--resume"]}
REPLY = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"


# What the user types: words no CLI puts in its own context ("install" holds "stall").
HELLO, STREAM, STALL, AGAIN = "HELLO-1", "STREAM-2", "STALL-3", "AGAIN-4"
PINGS = "PINGS-5"


def script() -> Script:
    """HELLO -> an answer; STREAM -> a reply over 6 s; STALL -> nothing, ever; PINGS ->
    a stream that starts and then sends only a keep-alive a second; after the
    restart, AGAIN -> an answer (first: the resumed request may still hold STALL)."""
    return (
        Script()
        .on(Match(user_says=AGAIN), Text("answered again"), name="again")
        .on(Match(user_says=STREAM), SlowText(REPLY, chunks=12, interval=0.5), name="stream")
        .on(Match(user_says=STALL), Stall(), name="stall")
        .on(Match(user_says=PINGS), Stall(keepalive_every=1.0), name="pings")
        .on(Match(user_says=HELLO), Text("hello from the stand-in"), name="hello")
    )


@dataclass
class Session:
    """An agent's TUI under aegis-mcp in tmux."""

    name: str
    tmux: Tmux
    server: StandInServer
    sock: Path

    def status(self) -> dict[str, Any]:
        return call(self.sock, "watchdog_status")

    def agent(self) -> dict[str, Any]:
        return call(self.sock, "server_status")["agent"]

    def submit(self, text: str) -> None:
        """Type ``text``, once the TUI shows it press Enter (Codex takes keys that come in
        one burst for a paste, and a pasted Enter for a new line). Keys typed while a TUI
        starts may be lost (Gemini CLI draws its prompt before it reads them): typed again."""
        for _ in range(5):
            self.tmux.run("send-keys", "-l", text)
            try:
                wait_for(lambda: any(text in line for line in self.tmux.screen()), 5)
                break
            except AssertionError:
                continue
        time.sleep(0.5)
        self.tmux.run("send-keys", "Enter")

    def ask(self, text: str, rule: str) -> Request:
        """Submit ``text`` and wait for the model request it makes."""
        self.submit(text)
        return self.server.wait_for(lambda r: r.rule == rule, START, f"answered by {rule!r}")

    def ready_again(self) -> None:
        """Wait until the restarted agent shows its prompt and the earlier conversation
        (the last one's frozen spinner gone: Gemini CLI takes seconds to start)."""

        def ready() -> bool:
            pane = self.tmux.screen()
            return (
                any(re.match(PROMPTS[self.name], line) for line in pane)
                and not any(re.search(BUSY[self.name], line) for line in pane)
                and any("hello from the stand-in" in line for line in pane)
            )

        wait_for(ready, START, what=f"{self.name} back at its prompt")

    def restarted_for_the_stall(self) -> dict[str, Any]:
        """Wait for the watchdog's restart; the agent's status, checked: restarted for a
        stalled model request to the stand-in, with the profile's continue flag."""
        wait_for(lambda: self.agent()["restarts"] == 1, START, what="the watchdog's restart")
        agent = self.agent()
        restart = agent["restart_history"][0]
        assert restart["by"] == "watchdog"
        assert re.search(
            rf"Unresponsive: model stream stalled \d+s: 127\.0\.0\.1:{self.server.port} got a "
            r"request \d+s ago and sent nothing back; the screen shows only its spinner \(",
            restart["reason"],
        ), restart["reason"]
        assert all(a in agent["command"] for a in CONTINUED[self.name]), agent["command"]
        assert self.status()["restart_limit"]["restarts_in_window"] == 1
        return restart

    def conversation_survived(self) -> None:
        """Once the restarted agent is back, its next request carries the first turn."""
        self.ready_again()
        again = self.ask(AGAIN, "again").conversation
        texts = [(i.role, i.text) for i in again.items if i.kind == "text"]
        assert ("assistant", "hello from the stand-in") in texts, texts
        assert any(role == "user" and HELLO in text for role, text in texts), texts

    def statuses_until(self, done, what: str) -> list[dict[str, Any]]:
        """watchdog_status every tenth of a second until ``done(status)``."""
        seen = []
        deadline = time.monotonic() + START
        while not seen or not done(seen[-1]):
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {seen[-1:]}"
            time.sleep(0.1)
            seen.append(self.status())
        return seen


@pytest.fixture
def tui(agent_env, standin, workdir, aegis_env, tmp_path) -> Iterator[Any]:
    """``tui(name, lockup_action)``: the agent's TUI at its prompt, watched."""
    sessions: list[Session] = []

    def start(name: str, action: str = "restart") -> Session:
        server = standin(script())
        env = agent_env(name, server)
        interactive_setup(name, Path(env["HOME"]), workdir)
        # (Gemini CLI does not end on SIGTERM behind a stalled request: killed after 1 s.)
        Path(aegis_env["AEGIS_MCP_CONFIG"]).write_text(
            "[runner]\nstop_grace_secs = 1.0\n"
            f'[watchdog]\nheartbeat_timeout_secs = {TIMEOUT}\nlockup_action = "{action}"\n'
        )
        tmux = Tmux(tmp_path, env, rows=30, cols=100)
        # In tmux without focus events Claude Code shows a notice about them.
        tmux.start(["env", "-C", str(workdir), *AEGIS, name], {"focus-events": "on"})
        session = Session(
            name, tmux, server, runner_socket(Path(aegis_env["AEGIS_MCP_RUNTIME_DIR"]))
        )
        sessions.append(session)
        tmux.wait_for(PROMPTS[name], START)
        return session

    yield start
    for session in sessions:
        runner = session.tmux.pane_pid()
        session.tmux.close()
        wait_for(lambda pid=runner: gone(pid), what="the runner to end with its terminal")


def quiet_for(session: Session, secs: float) -> list[dict[str, Any]]:
    """Statuses until nothing has counted as progress for ``secs``."""
    return session.statuses_until(
        lambda s: s["last_activity_secs_ago"] >= secs, f"{secs}s without progress"
    )


def test_claude_idle_at_its_prompt_then_streaming_a_reply(tui):
    """Idle for 5 timeouts: Idle, left alone; then a reply streamed over 6 s: Active
    throughout (any Unresponsive check would end the run: the action is kill)."""
    session = tui("claude", action="kill")
    pid = session.agent()["pid"]
    seen = quiet_for(session, 5 * TIMEOUT)
    past_timeout = [s for s in seen if s["last_activity_secs_ago"] >= TIMEOUT + 1]
    assert past_timeout and {s["state"] for s in past_timeout} == {"Idle"}, [
        s["reason"] for s in past_timeout
    ]
    idle = seen[-1]
    assert re.match(r"waiting for your input since \d\d:\d\d, at its prompt$", idle["reason"])
    assert idle["recent_actions"] == []
    served = call(session.sock, "server_status")["watchdog"]
    assert served["state"] == "Idle" and served["reason"] == idle["reason"]
    screen = idle["signals"]["screen"]
    assert screen["prompt_visible"] and screen["busy_line"] is None
    assert screen["cursor_line"].startswith("\u276f")
    # Its background I/O (timers, its own files) is there, seen and not counted.
    io = [s["signals"]["io"] for s in past_timeout]
    assert any(i["chars_last_check"] > 0 for i in io)
    assert all(i["background_bytes_per_sec"] < i["floor_bytes_per_sec"] for i in io)

    session.ask(STREAM, "stream")
    # It draws the reply once complete: until then its spinner and token count.
    seen = session.statuses_until(
        lambda s: REPLY in "\n".join(session.tmux.screen()), "the streamed reply"
    )
    assert len(seen) >= 20, "statuses over the 6 s of the reply"
    assert {s["state"] for s in seen} == {"Active"}, [s["reason"] for s in seen]
    kinds = [s["last_activity_kind"] for s in seen]
    assert kinds.count("network") >= len(kinds) // 2, kinds
    spinner = [s["signals"]["screen"]["busy_line"] for s in seen]
    assert any(line and re.match(r"^\S \S+… \(\d+s · ↓ \d+ tokens\)$", line) for line in spinner)
    agent = session.agent()
    assert agent["pid"] == pid and agent["restarts"] == 0


def test_claude_behind_its_spinner_with_a_stalled_model(tui):
    """The model takes the request and sends nothing: the warning is drawn over Claude's
    screen without breaking it; set to restart, the watchdog restarts it with --continue
    and the conversation survives; the warnings stay in the terminal's own screen."""
    session = tui("claude", action="warn")
    session.ask(HELLO, "hello")
    session.tmux.wait_for("hello from the stand-in", START)
    session.ask(STALL, "stall")
    before = session.tmux.wait_for(r"^\S \S+…$", START)
    bottom = before[-1]
    pane = session.tmux.wait_for(r"^ aegis-mcp: Unresponsive: model stream stalled", START)
    assert pane[-1].startswith(" aegis-mcp: Unresponsive"), "on the bottom row"
    # Everything above it is where Claude drew it: the box around its prompt, the spinner.
    # (The last prompt glyph: the ones above start the user's lines in the transcript.)
    prompt_row = max(i for i, line in enumerate(before) if re.match(PROMPTS["claude"], line))
    assert pane[prompt_row].startswith("\u276f")
    assert pane[prompt_row - 1] == pane[prompt_row + 1] == "─" * 100
    spinner_row = next(i for i, line in enumerate(before) if re.match(r"^\S \S+…", line))
    assert re.match(r"^\S \S+…", pane[spinner_row]), pane
    # Some seconds later Claude's own bottom row is back, drawn from the emulator (it may
    # have changed it meanwhile: it drops its "← for agents" hint).
    restored = wait_for(
        lambda: (p := session.tmux.screen()) and "aegis-mcp" not in p[-1] and p, START
    )
    assert restored[-1].startswith("  \u23f5\u23f5 ") and bottom.startswith(restored[-1]), (
        bottom,
        restored[-1],
    )
    assert not any("aegis-mcp" in line for line in restored)

    call(session.sock, "watchdog_configure", lockup_action="restart")
    restart = session.restarted_for_the_stall()
    assert re.search(r"its spinner \(\S \S+…", restart["reason"]), restart["reason"]
    session.conversation_survived()
    # Claude left its screen at the restart and at the end: the warnings are printed.
    runner = session.tmux.pane_pid()
    os.kill(runner, signal.SIGTERM)
    wait_for(lambda: gone(runner), START, what="the run to end")
    after = "\n".join(session.tmux.screen())
    assert "aegis-mcp: Unresponsive: model stream stalled" in after, after


@pytest.mark.parametrize("name", ["claude", "codex", "gemini"])
def test_a_stream_that_sends_only_keep_alives_is_restarted(tui, name):
    """The stream starts, then only keep-alives come, one a second (Claude: the API's
    40-byte ping events; Codex and Gemini CLI: SSE comments, as a proxy sends): bytes on
    the connection, but no progress (one ping in a 0.5 s check would be 80 B/s; over 5 s
    it is 40 B/s), so the agent is restarted with its continue flag."""
    session = tui(name)
    session.ask(PINGS, "pings")
    wait_for(lambda: session.agent()["restarts"] == 1, START, what="the watchdog's restart")
    agent = session.agent()
    reason = agent["restart_history"][0]["reason"]
    assert re.search(
        rf"model stream stalled \d+s: 127\.0\.0\.1:{session.server.port} sends only "
        r"keep-alives \(below the floor\); the screen shows only its spinner",
        reason,
    ), reason
    assert all(a in agent["command"] for a in CONTINUED[name]), agent["command"]
    # (Counted when the stream ends: the restarted agent's end of it is gone.)
    pings = session.server.wait_for(lambda r: r.rule == "pings" and r.finished, START)
    assert pings.bytes_sent > 0, "keep-alives were sent"


@pytest.mark.parametrize("name", ["codex", "gemini"])
def test_a_stalled_model_behind_the_tui_is_restarted_with_continue(tui, name):
    session = tui(name)
    session.ask(HELLO, "hello")
    session.tmux.wait_for("hello from the stand-in", START)
    session.ask(STALL, "stall")
    session.restarted_for_the_stall()
    session.conversation_survived()
