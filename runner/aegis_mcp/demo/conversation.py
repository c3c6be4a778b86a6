"""The per-directory conversation log that ``--continue`` resumes.

One JSON object per line (``{"role", "text", "ts", "session_id"}``) in
``$AEGIS_DEMO_HOME/conversations/<sha256(cwd)[:16]>.jsonl``. The log must survive the
agent being killed at any moment (that is what a hot reload does), so every turn is one
``os.write`` to an ``O_APPEND`` descriptor: a line is either all there or absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

from aegis_mcp.demo.output import append_json_line


def demo_home() -> str:
    """``$AEGIS_DEMO_HOME``, else ``$XDG_STATE_HOME/aegis-mcp/demo`` (``~/.local/state``)."""
    home = os.environ.get("AEGIS_DEMO_HOME")
    if home:
        return home
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(state, "aegis-mcp", "demo")


def conversation_path(cwd: str) -> str:
    """Where the conversation for working directory ``cwd`` is kept."""
    digest = hashlib.sha256(os.fsencode(cwd)).hexdigest()[:16]
    return os.path.join(demo_home(), "conversations", f"{digest}.jsonl")


class Conversation:
    """The turns so far; appends go straight to disk when a log file is available."""

    def __init__(self, path: str | None, turns: list[dict]) -> None:
        self.path = path
        self.turns = turns
        # Set by the caller once known (it may come from the loaded turns).
        self.session_id = ""

    @classmethod
    def open(cls, cwd: str, resume: bool) -> tuple[Conversation, str | None]:
        """Load (``resume``) or start afresh (truncating) the log for ``cwd``.

        Returns the conversation and a warning when the log cannot be used; the demo then
        keeps the conversation in memory only.
        """
        path = conversation_path(cwd)
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            if resume:
                turns = _read_turns(path)
            else:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                os.close(fd)
                turns = []
        except OSError as exc:
            return cls(None, []), f"conversation log unavailable ({path}): {exc}"
        return cls(path, turns), None

    def append(self, role: str, text: str) -> None:
        """Record one turn; a failed write is not worth stopping the agent for."""
        turn = {"role": role, "text": text, "ts": time.time(), "session_id": self.session_id}
        self.turns.append(turn)
        if self.path is None:
            return
        try:
            append_json_line(self.path, turn)
        except OSError:
            self.path = None


def _read_turns(path: str) -> list[dict]:
    """Turns from the log; a torn or foreign line is skipped rather than fatal."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()
    except FileNotFoundError:
        return []
    turns = []
    for line in lines:
        try:
            turn = json.loads(line)
        except ValueError:
            continue
        if isinstance(turn, dict):
            turns.append(turn)
    return turns
