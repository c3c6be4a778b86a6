"""The background agent pool: a FIFO queue, at most ``max_agents`` running at once.

Each agent runs headless in its own session with its output in a private log
file. A task per running agent waits for it to end (or its timeout), reaps its
leftovers and records the result; every end frees a slot for the queue. No
error of an agent (a missing binary, a crash) reaches the host as an
exception: it becomes the agent's ``failed`` status with an ``error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..agents.command import LaunchOptions, build_argv, headless_task_args
from ..agents.profiles import AgentProfile
from ..control.protocol import NOT_FOUND, UNAVAILABLE, ControlError
from ..privileges import AgentUser
from ..processes import AgentProcess, ChildReaper, SpawnSpec
from . import validate
from .records import (
    FAILED,
    FINAL_STATUSES,
    QUEUED,
    RUNNING,
    STOPPED,
    TIMED_OUT,
    AgentRecord,
    status_view,
    summary_view,
)
from .results import OutputScanner, final_status

log = logging.getLogger(__name__)

MAX_DESCRIPTION_CHARS = 100_000
MAX_ITERATIONS = 10_000
MAX_TIMEOUT_SECS = 86_400
STOP_GRACE_SECS = 3.0
MAX_FINISHED_KEPT = 500
"""Finished agents remembered in memory; older ones are forgotten (their logs stay)."""

EventSink = Callable[[str, str, str], None]
"""``(kind, message, level)``, the shape of the runner's event log."""


@dataclass
class _Live:
    """Handles of a started agent; never persisted."""

    proc: AgentProcess
    log_fd: int
    scanner: OutputScanner
    task: asyncio.Task[None] | None = None
    stop_task: asyncio.Task[int] | None = None
    stop_reason: str | None = None


def _default_max_agents() -> int:
    return max(2, os.cpu_count() or 1)


class AgentPool:
    """Background agents started on request, queued beyond ``max_agents``."""

    def __init__(
        self,
        profiles: dict[str, AgentProfile],
        reaper: ChildReaper,
        *,
        max_agents: int | None = None,
        user: AgentUser,
        env_for: Callable[[str], dict[str, str]],
        mcp_config: Path | None,
        log_dir: Path,
        default_cwd: str,
        on_event: EventSink | None = None,
        stop_grace: float = STOP_GRACE_SECS,
        mcp_server: dict[str, Any] | None = None,
    ) -> None:
        """``env_for(agent_id)`` gives the whole environment of a pool agent;
        ``mcp_config``/``mcp_server`` are the injected MCP server (file and entry)."""
        if max_agents is not None and max_agents < 1:
            raise ValueError(f"max_agents must be at least 1, got {max_agents}")
        self.profiles = profiles
        self.max_agents = max_agents if max_agents is not None else _default_max_agents()
        self._reaper = reaper
        self._user = user
        self._env_for = env_for
        self._mcp_config = mcp_config
        self._mcp_server = mcp_server
        self.log_dir = Path(log_dir)
        self.default_cwd = default_cwd
        self._on_event = on_event
        self._stop_grace = stop_grace
        self._records: dict[str, AgentRecord] = {}
        self._queue: deque[str] = deque()
        self._live: dict[str, _Live] = {}
        self._done: dict[str, asyncio.Event] = {}
        self._listeners: list[Callable[[AgentRecord], None]] = []
        self._closing = False

    # -- requests ------------------------------------------------------------------

    async def spawn(
        self,
        description: str,
        agent_type: str = "claude",
        working_directory: str | None = None,
        max_iterations: int | None = None,
        timeout_secs: float | None = None,
    ) -> dict[str, Any]:
        """Queue a task for a new agent and start it if a slot is free; returns at once."""
        if self._closing:
            raise ControlError(UNAVAILABLE, "the agent pool is shutting down")
        description = validate.string("description", description, max_len=MAX_DESCRIPTION_CHARS)
        profile = self._profile(agent_type)
        cwd = self._working_directory(working_directory)
        if max_iterations is not None:
            max_iterations = validate.integer("max_iterations", max_iterations, 1, MAX_ITERATIONS)
            if not profile.max_iterations_args:
                raise validate.invalid(
                    f"agent_type {profile.name!r} has no way to bound its iterations: "
                    "omit max_iterations (or use timeout_secs)"
                )
        if timeout_secs is not None:
            timeout_secs = validate.number("timeout_secs", timeout_secs, 1, MAX_TIMEOUT_SECS)
        agent_id = self._new_id()
        record = AgentRecord(
            agent_id=agent_id,
            agent_type=agent_type,
            description=description,
            working_directory=cwd,
            log_file=str(self.log_dir / f"{agent_id}.log"),
            max_iterations=max_iterations,
            timeout_secs=timeout_secs,
        )
        self._records[agent_id] = record
        self._done[agent_id] = asyncio.Event()
        self._queue.append(agent_id)
        self._emit("pool.spawn", f"agent {agent_id} ({agent_type}) queued")
        self._dispatch()
        self._forget_old()
        reply = {
            "agent_id": agent_id,
            "status": record.status,
            "agent_type": record.agent_type,
            "working_directory": cwd,
            "log_file": record.log_file,
        }
        if record.status == QUEUED:
            reply["queue_position"] = self._queue.index(agent_id) + 1
        if record.error:
            reply["error"] = record.error
        return reply

    def list(self) -> list[dict[str, Any]]:
        """Every agent the pool remembers, oldest first."""
        return [summary_view(r) for r in self._records.values()]

    def status(self, agent_id: str) -> dict[str, Any]:
        """Everything about one agent."""
        record = self._record(agent_id)
        position = self._queue.index(agent_id) + 1 if record.status == QUEUED else None
        return status_view(record, position)

    async def await_agent(self, agent_id: str, timeout_secs: float) -> dict[str, Any]:
        """Wait up to ``timeout_secs`` for the agent to finish; ``done`` says whether it did."""
        record = self._record(agent_id)
        done = self._done[agent_id]
        if not done.is_set() and timeout_secs > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout_secs)
        # From the record held, not by id: a long wait may outlast its place in memory.
        position = self._queue.index(agent_id) + 1 if record.status == QUEUED else None
        return {**status_view(record, position), "done": done.is_set()}

    async def stop(self, agent_id: str) -> dict[str, Any]:
        """Stop an agent: leave the queue, or SIGINT, SIGTERM, SIGKILL over its session."""
        record = self._record(agent_id)
        if record.finished:
            message = f"agent {agent_id} had already finished ({record.status})"
        elif record.status == QUEUED:
            self._queue.remove(agent_id)
            self._finish(record, STOPPED, None)
            message = f"agent {agent_id} removed from the queue before it started"
        else:
            self._request_stop(agent_id, STOPPED)
            await self._done[agent_id].wait()
            message = f"agent {agent_id} stopped"
        return {**self.status(agent_id), "message": message}

    def stats(self) -> dict[str, Any]:
        """Counts by status, and the mean run time of the agents that ended."""
        counts = dict.fromkeys((QUEUED, RUNNING, *FINAL_STATUSES), 0)
        runs: list[float] = []
        for record in self._records.values():
            counts[record.status] = counts.get(record.status, 0) + 1
            if record.finished and record.run_secs is not None:
                runs.append(record.run_secs)
        return {
            "max_agents": self.max_agents,
            "active": counts[QUEUED] + counts[RUNNING],
            **counts,
            "total": len(self._records),
            "mean_run_secs": round(sum(runs) / len(runs), 3) if runs else None,
        }

    async def shutdown(self) -> None:
        """Empty the queue and stop every running agent (the host is exiting)."""
        self._closing = True
        while self._queue:
            self._finish(self._records[self._queue.popleft()], STOPPED, "the pool shut down")
        for agent_id in list(self._live):
            self._request_stop(agent_id, STOPPED)
        tasks = [live.task for live in self._live.values() if live.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def add_listener(self, listener: Callable[[AgentRecord], None]) -> None:
        """Call ``listener`` with each agent's record when it reaches a final status."""
        self._listeners.append(listener)

    # -- checks --------------------------------------------------------------------

    def _record(self, agent_id: str) -> AgentRecord:
        validate.string("agent_id", agent_id)
        record = self._records.get(agent_id)
        if record is None:
            raise ControlError(
                NOT_FOUND, f"no agent with id {agent_id!r}; agent_list shows the known ones"
            )
        return record

    def _profile(self, agent_type: str) -> AgentProfile:
        headless = sorted(name for name, p in self.profiles.items() if p.headless_args)
        if not isinstance(agent_type, str) or agent_type not in headless:
            known = ", ".join(headless) or "none"
            raise validate.invalid(
                f"agent_type must be one of the agents that can run a task headless "
                f"({known}), got {agent_type!r}"
            )
        return self.profiles[agent_type]

    def _working_directory(self, path: str | None) -> str:
        if path is None:
            path = self.default_cwd
        path = validate.string("working_directory", path)
        full = os.path.abspath(os.path.join(self.default_cwd, os.path.expanduser(path)))
        if not os.path.isdir(full):
            what = "does not exist" if not os.path.exists(full) else "is not a directory"
            raise validate.invalid(f"working_directory {full} {what}")
        return full

    def _new_id(self) -> str:
        while True:
            agent_id = secrets.token_hex(4)
            if agent_id not in self._records and not (self.log_dir / f"{agent_id}.log").exists():
                return agent_id

    # -- running -------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start queued agents while there are free slots."""
        while self._queue and len(self._live) < self.max_agents and not self._closing:
            self._start(self._records[self._queue.popleft()])

    def _argv(self, profile: AgentProfile, record: AgentRecord, env: dict[str, str]) -> list[str]:
        search = env.get("PATH", os.environ.get("PATH", os.defpath))
        executable = shutil.which(profile.command[0], path=search)
        if executable is None:
            raise FileNotFoundError(
                f"{profile.command[0]!r} (agent_type {profile.name!r}) was not found on PATH"
            )
        launch = LaunchOptions(
            executable=executable,
            mcp_config=self._mcp_config,
            mcp_server=self._mcp_server,
            skip_permissions=not (self._user.is_root and profile.permission_refused_as_root),
        )
        # A task starting with "-" (a Markdown list) would be read as an option;
        # a leading space changes nothing for the model and everything for the parser.
        task = (
            " " + record.description if record.description.startswith("-") else record.description
        )
        return build_argv(profile, launch, headless_task_args(profile, task, record.max_iterations))

    def _open_log(self, record: AgentRecord) -> int:
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
        return os.open(record.log_file, flags, 0o600)

    def _start(self, record: AgentRecord) -> None:
        """Start one agent; a failure to start becomes its ``failed`` status."""
        log_fd: int | None = None
        try:
            profile = self.profiles[record.agent_type]
            log_fd = self._open_log(record)
            env = self._env_for(record.agent_id)
            argv = self._argv(profile, record, env)
            scanner = OutputScanner()
            record.last_output = scanner.tail

            def on_output(data: bytes) -> None:
                scanner.feed(data)
                record.output_bytes = scanner.bytes_seen

            spec = SpawnSpec(
                argv=argv,
                env=env,
                cwd=record.working_directory,
                user=self._user,
                use_pty=False,
                stdin_devnull=True,
            )
            proc = AgentProcess(spec, self._reaper, on_output, stdout_fd=log_fd, stderr_fd=log_fd)
        except Exception as exc:
            error = f"failed to start: {exc}"
            if log_fd is not None:
                with contextlib.suppress(OSError):
                    os.write(log_fd, f"aegis-mcp: {error}\n".encode())
                os.close(log_fd)
            self._finish(record, FAILED, error)
            return
        record.status = RUNNING
        record.pid = proc.pid
        record.started_at = proc.started_at
        live = _Live(proc=proc, log_fd=log_fd, scanner=scanner)
        self._live[record.agent_id] = live
        live.task = asyncio.get_running_loop().create_task(
            self._supervise(record, live), name=f"pool-agent-{record.agent_id}"
        )
        self._emit("pool.start", f"agent {record.agent_id} started (pid {proc.pid})")

    async def _supervise(self, record: AgentRecord, live: _Live) -> None:
        """Wait for the agent to end, enforce its timeout, record how it went."""
        status, error = FAILED, "the pool lost track of the agent"
        try:
            timeout = record.timeout_secs
            if timeout is not None and not await live.proc.wait_for_exit(timeout):
                self._request_stop(record.agent_id, TIMED_OUT)
            record.exit_code = await live.proc.wait()
            await live.proc.cleanup()
            if live.stop_task is not None:
                await asyncio.gather(live.stop_task, return_exceptions=True)
            live.scanner.finish()
            outcome = live.scanner.outcome()
            record.result = outcome.text
            if live.stop_reason == TIMED_OUT:
                status = TIMED_OUT
                error = f"ran longer than timeout_secs={timeout:g} and was stopped"
            elif live.stop_reason is not None:
                status, error = live.stop_reason, None
            else:
                status, error = final_status(record.exit_code, outcome)
        except Exception as exc:
            log.exception("supervising pool agent %s", record.agent_id)
            error = f"{error}: {exc}"
        finally:
            with contextlib.suppress(OSError):
                os.close(live.log_fd)
            self._live.pop(record.agent_id, None)
            self._finish(record, status, error)
            self._dispatch()

    def _request_stop(self, agent_id: str, reason: str) -> None:
        """Begin stopping a running agent once; the first reason given is the one kept."""
        live = self._live.get(agent_id)
        if live is None or live.stop_task is not None:
            return
        live.stop_reason = reason
        live.stop_task = asyncio.get_running_loop().create_task(
            live.proc.stop(self._stop_grace, (signal.SIGINT, signal.SIGTERM)),
            name=f"pool-stop-{agent_id}",
        )

    def _finish(self, record: AgentRecord, status: str, error: str | None) -> None:
        record.status = status
        record.error = error
        record.ended_at = time.time()
        self._done[record.agent_id].set()
        level = "warning" if status in (FAILED, TIMED_OUT) else "info"
        detail = f": {error}" if error else ""
        self._emit("pool.end", f"agent {record.agent_id} {status}{detail}", level)
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:
                log.exception("pool listener failed for agent %s", record.agent_id)

    def _forget_old(self) -> None:
        finished = [r.agent_id for r in self._records.values() if r.finished]
        for agent_id in finished[: max(0, len(finished) - MAX_FINISHED_KEPT)]:
            del self._records[agent_id]
            del self._done[agent_id]

    def _emit(self, kind: str, message: str, level: str = "info") -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(kind, message, level)
        except Exception:
            # The host's event log failing must not leave an agent half-recorded.
            log.exception("pool event callback failed")
