"""Interactive mode: a banner, a ``> `` prompt, and a line-by-line conversation on stdin.

Works on a terminal and on a pipe alike (every write is flushed). EOF on stdin ends the
session with exit code 0, which is also what happens when the terminal goes away.
"""

from __future__ import annotations

import os
import sys

from aegis_mcp.demo import scenario
from aegis_mcp.demo.agent import Agent
from aegis_mcp.demo.steps import MaxTurnsExceeded

PROMPT = "> "


def handle_line(agent: Agent, line: str) -> None:
    """One line typed at the prompt."""
    text = line.strip()
    if not text:
        return
    agent.begin_turn()
    try:
        if text.startswith("/"):
            agent.interruptible(agent.command, text)
        else:
            agent.answer(text)
    except scenario.ScenarioError as exc:
        agent.console.err(f"demo: invalid scenario: {exc}")
    except MaxTurnsExceeded as exc:
        agent.console.err(agent.max_turns_message(exc))


def _read_line() -> str:
    """The next line of input, or "" at EOF (also when the terminal is gone)."""
    if sys.stdin is None:
        return ""
    try:
        return sys.stdin.readline()
    except (OSError, ValueError):
        return ""


def run(agent: Agent, steps: list[scenario.Step]) -> int:
    """The interactive session; returns the exit code (``/exit`` raises SystemExit)."""
    console = agent.console
    console.out(f"aegis demo agent (pid {os.getpid()})")
    if agent.opts.continuing:
        console.info(f"continuing conversation ({len(agent.conversation.turns)} turns)")
    if steps:
        agent.begin_turn()
        try:
            agent.interruptible(agent.runner.run, steps)
        except MaxTurnsExceeded as exc:
            console.err(agent.max_turns_message(exc))
    if agent.opts.prompt:
        handle_line(agent, agent.opts.prompt)
    signals = agent.signals
    while True:
        with console.lock:
            signals.at_prompt = True
            console.out(PROMPT, end="")
        line = _read_line()
        signals.at_prompt = False
        if not line:
            return 0
        handle_line(agent, line)
