"""The dashboard's one link to a runner: find one, follow its state stream, find one again.

Like Toolong's watcher, one object the app starts once. It looks for live
runners in the runtime directories (their lock files say who is alive), picks
the one asked for, the only one, or lets the user pick, subscribes, folds every
message into the :class:`~.model.DashboardModel`, and when the stream ends
(the runner exited, was killed, or dropped a slow reader) says so and starts
looking again: the same runner if it is still alive, else whichever appears.

The app hears of it all through :mod:`.messages`; redraws are asked for at
most every ``refresh_interval`` (a burst of a thousand netmon events makes a
handful of redraws, a lone event one at once).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from textual.message import Message

from ..control.client import AsyncControlClient, subscribe
from ..control.discovery import live_runners
from ..control.protocol import UNAVAILABLE, ControlError
from ..paths import RunnerFiles, candidate_runtime_dirs, runtime_dir
from .messages import (
    Attached,
    ChooseRunner,
    Disconnected,
    HealthAlert,
    NoRunner,
    Refresh,
    RunnerSummary,
)
from .model import DashboardModel

RUNTIME_DIR_ENV = "AEGIS_MCP_RUNTIME_DIR"
POLL_SECS = 0.5
REFRESH_INTERVAL = 0.05
YIELD_EVERY = 100
"""Messages folded before giving the screen a turn (buffered lines come without waiting)."""


def find_runners() -> list[RunnerFiles]:
    """Every live runner this user can see, newest first; only those in
    ``AEGIS_MCP_RUNTIME_DIR`` when it is set (it names where to look)."""
    dirs = [runtime_dir()] if os.environ.get(RUNTIME_DIR_ENV) else candidate_runtime_dirs()
    found = []
    for directory in dirs:
        found.extend(RunnerFiles(directory, pid) for pid in live_runners(directory))
    return found


async def describe(files: RunnerFiles) -> RunnerSummary | None:
    """What the picker shows of a runner (None when it cannot be asked)."""
    client = AsyncControlClient(files.socket)
    try:
        status = await asyncio.wait_for(client.call("server_status"), 5)
    except (ControlError, TimeoutError):
        return None
    finally:
        await client.close()
    agent = status.get("agent", {})
    return RunnerSummary(
        pid=files.pid,
        socket=str(files.socket),
        agent=agent.get("profile", "?"),
        cwd=agent.get("cwd", "?"),
        uptime_secs=status.get("runner", {}).get("uptime_secs"),
        sandbox=status.get("sandbox", {}).get("kind", "?"),
    )


def read_history() -> tuple[list[dict[str, Any]], str | None]:
    """The pool's history from its database (read-only), or why it cannot be read."""
    from ..paths import state_dir
    from ..pool.errors import PoolUnavailable
    from ..pool.history import read_history as read

    try:
        return read(state_dir()), None
    except (PoolUnavailable, OSError) as exc:
        return [], str(exc)


class RunnerLink:
    """Follows one runner at a time and tells ``post`` what happens."""

    def __init__(
        self,
        post: Callable[[Message], object],
        pid: int | None = None,
        model: DashboardModel | None = None,
        refresh_interval: float = REFRESH_INTERVAL,
    ) -> None:
        self._post = post
        self._wanted = pid
        self.model = model or DashboardModel()
        self.files: RunnerFiles | None = None
        """The runner followed now (None while looking)."""
        self._client: AsyncControlClient | None = None
        self._choice: asyncio.Future[int] | None = None
        self._refresh_interval = refresh_interval
        self._refresh_pending = False
        self._last_refresh = 0.0

    def bind(self, post: Callable[[Message], object], model: DashboardModel) -> None:
        """Report to ``post`` and fold into ``model`` (the app's, given before it runs)."""
        self._post = post
        self.model = model

    @property
    def connected(self) -> bool:
        """Whether a runner's stream is being followed."""
        return self._client is not None

    async def run(self) -> None:
        """Find, follow, and find again, until cancelled."""
        while True:
            files = await self._find()
            reason = await self._follow(files)
            self.files = None
            self._post(Disconnected(files.pid, reason))
            # Back to the same runner if it only dropped us; any other will do otherwise.
            self._wanted = files.pid

    def choose(self, pid: int) -> None:
        """The user picked runner ``pid`` from a :class:`ChooseRunner` list."""
        if self._choice is not None and not self._choice.done():
            self._choice.set_result(pid)

    async def call(self, op: str, **args: Any) -> Any:
        """Run a control operation on the followed runner (ControlError when none)."""
        if self._client is None:
            raise ControlError(UNAVAILABLE, "not connected to a runner")
        return await self._client.call(op, **args)

    # -- looking --------------------------------------------------------------------------

    async def _find(self) -> RunnerFiles:
        said_none = False
        offered: list[int] = []
        while True:
            runners = await asyncio.to_thread(find_runners)
            by_pid = {files.pid: files for files in runners}
            if self._wanted in by_pid:
                return by_pid[self._wanted]
            if len(runners) == 1:
                return runners[0]
            if not runners:
                offered = []
                if not said_none:
                    said_none = True
                    history, error = await asyncio.to_thread(read_history)
                    self._post(NoRunner(history, error))
                await asyncio.sleep(POLL_SECS)
                continue
            said_none = False
            if sorted(by_pid) != offered:
                offered = sorted(by_pid)
                summaries = [s for s in await asyncio.gather(*map(describe, runners)) if s]
                self._choice = asyncio.get_running_loop().create_future()
                self._post(ChooseRunner(summaries))
            assert self._choice is not None
            try:
                pid = await asyncio.wait_for(asyncio.shield(self._choice), POLL_SECS)
            except TimeoutError:
                continue
            if pid in by_pid:
                return by_pid[pid]
            offered = []

    # -- following ------------------------------------------------------------------------

    async def _follow(self, files: RunnerFiles) -> str:
        """Fold the runner's stream into the model until it ends; returns why it ended."""
        self.files = files
        model = self.model
        self._client = AsyncControlClient(files.socket)
        folded = 0
        try:
            async for message in subscribe(files.socket):
                alert = model.fold(message)
                if message["type"] == "state":
                    self._post(Attached(files.pid))
                elif message["type"] in ("end", "dropped"):
                    self._changed()
                    return str(message.get("reason", message["type"]))
                if alert is not None:
                    self._post(HealthAlert(alert))
                self._changed()
                folded += 1
                if folded % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            return "the runner closed the connection"
        except ControlError as exc:
            return exc.message
        finally:
            client, self._client = self._client, None
            await client.close()

    def _changed(self) -> None:
        if self._refresh_pending:
            return
        self._refresh_pending = True
        delay = max(0.0, self._last_refresh + self._refresh_interval - time.monotonic())
        asyncio.get_running_loop().call_later(delay, self._refresh)

    def _refresh(self) -> None:
        self._refresh_pending = False
        self._last_refresh = time.monotonic()
        self._post(Refresh())
