"""Telling the user that the primary agent waits for them (Idle) or is stuck (Unresponsive).

``[dashboard] notify`` in the config file: ``bell`` rings the terminal's bell,
``command`` runs ``notify_command`` (argv, no shell; ``{state}``, ``{reason}`` and
``{pid}`` filled in) such as ``notify-send``, ``none`` only marks the panel.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable

from ..config import DashboardSettings
from .model import Alert

COMMAND_TIMEOUT_SECS = 10.0


class Notifier:
    """Carries out the configured notification; failures come back as one line for the log."""

    def __init__(
        self, settings: DashboardSettings, bell: Callable[[], None], say: Callable[[str], None]
    ) -> None:
        self._settings = settings
        self._bell = bell
        self._say = say
        self._tasks: set[asyncio.Task[None]] = set()

    def alert(self, alert: Alert, pid: int | None) -> None:
        """Notify of ``alert`` (the agent of runner ``pid``)."""
        kind = self._settings.notify
        if kind == "bell":
            self._bell()
        elif kind == "command":
            values = {"state": alert.state, "reason": alert.reason, "pid": str(pid or "")}
            argv = [arg.format_map(values) for arg in self._settings.notify_command]
            task = asyncio.get_running_loop().create_task(self._run(argv))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, argv: list[str]) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            self._say(f"notify command {argv[0]!r} could not start: {exc.strerror or exc}")
            return
        try:
            _, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT_SECS)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            self._say(f"notify command {argv[0]!r} took over {COMMAND_TIMEOUT_SECS:g}s: killed")
            return
        if proc.returncode:
            detail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
            self._say(f"notify command {argv[0]!r} exited {proc.returncode} {detail[0]}".strip())
