"""The background agent pool: a FIFO queue, at most ``max_agents`` running at once.

Each agent runs headless in its own session with its output in a private log
file. A task per running agent waits for it to end (or its timeout), reaps its
leftovers and records the result; every end frees a slot for the queue. An
agent may be restarted (:meth:`AgentPool.restart`, its own ``restart_claude``):
the same task starts it again headless with its profile's continue form and the
new prompt, in the same slot, log, environment and sandbox. No
error of an agent (a missing binary, a crash) reaches the host as an
exception: it becomes the agent's ``failed`` status with an ``error``.

Every state change is written through to the pool database (``PoolStore``),
shared by all pools on one state directory. Each pool owns the agents it
started (its records in memory are the truth for them) and reads the others'
from the database. A spawn that cannot be saved is refused; a later change
that cannot be saved (disk full) stays in memory, marked dirty, and is
written again every second until it goes through. A new pool takes over the
agents of pools that died (see ``orphans``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import signal
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..agents.command import (
    LaunchOptions,
    build_argv,
    headless_task_args,
    not_runnable,
    resolve_executable,
    restart_args,
)
from ..agents.profiles import AgentProfile
from ..agents.syntax import PromptNotAccepted
from ..control import validate
from ..files import create_new
from ..privileges import AgentUser
from ..processes import AgentProcess, ChildReaper, SpawnSpec
from ..safe_paths import UnsafeDirectoryError, private_dir
from . import agent_rows, liveness, orphans
from .errors import AgentNotFound, AgentStuck, PoolError, PoolUnavailable, RestartRefused
from .records import (
    ACTIVE_STATUSES,
    DESCRIPTION_PREVIEW_CHARS,
    FAILED,
    FINAL_STATUSES,
    LOST,
    ORPHANED,
    QUEUED,
    RUNNING,
    STOPPED,
    TIMED_OUT,
    AgentRecord,
    status_view,
    summary_view,
)
from .requests import check_spawn
from .results import OutputScanner, final_status
from .sandbox import SandboxFor, in_sandbox
from .store import PoolStore
from .worktree import Git, Worktree
from .writer import RecordWriter

log = logging.getLogger(__name__)

STOP_GRACE_SECS = 3.0
MAX_FINISHED_KEPT = 500
"""Finished agents kept in memory (and listed); older ones stay in the database."""
UPKEEP_SECS = 1.0
"""How often output tails and failed writes are saved and orphans looked at."""
FOREIGN_POLL_SECS = 0.5
"""How often ``agent_await`` re-reads an agent of another pool."""

DEFAULT_MAX_DEPTH = 2
"""Spawn depth: agents of the user or the primary agent are at 1, theirs at 2, and so on."""
MAX_RESTART_HISTORY = 20

EventSink = Callable[[str, str, str], None]
"""``(kind, message, level)``, the shape of the runner's event log."""
LaunchFor = Callable[[AgentProfile, LaunchOptions], LaunchOptions]
"""The host's MCP injection: a profile's launch options with the server added."""


@dataclass
class _Live:
    """Handles of a started agent; never persisted."""

    proc: AgentProcess
    log_fd: int
    scanner: OutputScanner
    env: dict[str, str]
    args: list[str]
    """The agent arguments of the process running now (a restart continues from them)."""
    on_output: Callable[[bytes], None]
    task: asyncio.Task[None] | None = None
    stop_task: asyncio.Task[Any] | None = None
    stop_reason: str | None = None
    session: str | None = None
    """The conversation id it was started with, when its profile names one."""
    restart: dict[str, Any] | None = None
    """A restart asked for and not carried out yet."""
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _default_max_agents() -> int:
    return max(2, os.cpu_count() or 1)


def _timed_out_error(record: AgentRecord) -> str:
    return f"ran longer than timeout_secs={record.timeout_secs:g} and was stopped"


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
        inject_env: Callable[[AgentProfile, dict[str, str]], None] | None = None,
        store: PoolStore | None = None,
        sandbox_for: SandboxFor | None = None,
        worktrees_dir: Path | None = None,
        launch_for: LaunchFor | None = None,
        max_depth: int = DEFAULT_MAX_DEPTH,
        on_output: Callable[[str, bytes], None] | None = None,
    ) -> None:
        """``env_for(agent_id)`` gives the whole environment of a pool agent;
        ``mcp_config``/``mcp_server`` are the injected MCP server (file and entry),
        or ``launch_for`` gives each profile its own injection (it wins).
        ``max_depth`` bounds how deep agents may spawn agents (see ``ops``);
        ``on_output(agent_id, data)`` sees every agent's output.
        ``store`` is the pool database (default: a private in-memory one, no history);
        ``sandbox_for`` provides sandboxes (see ``sandbox``); worktrees go in
        ``worktrees_dir`` (default: ``worktrees`` beside the database, or the logs).

        Agents that pools on the same database left behind when they died are
        taken over at once (orphaned or lost).
        """
        if max_agents is not None and max_agents < 1:
            raise ValueError(f"max_agents must be at least 1, got {max_agents}")
        self.profiles = profiles
        self.max_agents = max_agents if max_agents is not None else _default_max_agents()
        self._reaper = reaper
        self._user = user
        self._env_for = env_for
        self._mcp_config = mcp_config
        self._mcp_server = mcp_server
        self._launch_for = launch_for
        self.max_depth = max_depth
        self._on_output = on_output
        self._inject_env = inject_env
        self.log_dir = Path(log_dir)
        self.default_cwd = default_cwd
        self._on_event = on_event
        self._stop_grace = stop_grace
        self.store = store if store is not None else PoolStore.in_memory()
        self._me = self.store.me
        self._sandbox_for = sandbox_for
        self.worktrees_dir = worktrees_dir or (
            (self.store.directory or self.log_dir.parent) / "worktrees"
        )
        self._git = Git(reaper, user)
        self._records: dict[str, AgentRecord] = {}
        """The agents this pool owns (started, or taken over as orphans)."""
        self._queue: deque[str] = deque()
        self._live: dict[str, _Live] = {}
        self._done: dict[str, asyncio.Event] = {}
        self._listeners: list[Callable[[AgentRecord], None]] = []
        self._closing = False
        self._writer = RecordWriter(self.store, self._emit, UPKEEP_SECS)
        self._stopping: set[str] = set()
        self._upkeep: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        for kind, message, level in self.store.notices:
            self._emit(kind, message, level)
        try:
            self._take_over_dead()
        except PoolUnavailable as exc:
            # Not fatal here: every listing tries again, and says why it fails.
            self._emit("pool.store_error", str(exc), "error")

    # -- requests ------------------------------------------------------------------

    async def spawn(
        self,
        description: str,
        agent_type: str = "claude",
        working_directory: str | None = None,
        max_iterations: int | None = None,
        timeout_secs: float | None = None,
        sandbox: str = "none",
        isolation: str = "none",
        spawned_by: str | None = None,
        depth: int = 1,
    ) -> dict[str, Any]:
        """Queue a task for a new agent and start it if a slot is free; returns at once.

        With ``isolation="worktree"`` the agent gets its own git worktree and
        branch (made here, so that a bad repository is reported to the caller).
        ``spawned_by`` and ``depth`` record who asked (checked by the caller).
        """
        if self._closing:
            raise PoolUnavailable("the agent pool is shutting down")
        request = check_spawn(
            self.profiles,
            self.default_cwd,
            self._sandbox_for,
            user=self._user,
            description=description,
            agent_type=agent_type,
            working_dir=working_directory,
            max_iterations=max_iterations,
            timeout_secs=timeout_secs,
            sandbox=sandbox,
            isolation=isolation,
        )
        agent_id = self._new_id()
        record = AgentRecord(
            agent_id=agent_id,
            agent_type=request.profile.name,
            description=request.description,
            working_directory=request.working_directory,
            log_file=str(self.log_dir / f"{agent_id}.log"),
            max_iterations=request.max_iterations,
            timeout_secs=request.timeout_secs,
            runner_pid=self._me.pid,
            runner_started=self._me.started,
            sandbox=request.sandbox,
            isolation=request.isolation,
            spawned_by=spawned_by,
            depth=depth,
        )
        by = f" for {spawned_by}" if spawned_by else ""
        queued = f"agent {agent_id} ({record.agent_type}) queued{by}"
        tree: Worktree | None = None
        if request.isolation == "worktree":
            tree = await self._git.create(request.working_directory, agent_id, self.worktrees_dir)
            record.worktree, record.branch = tree.path, tree.branch
            record.base_commit, record.working_directory = tree.base_commit, tree.cwd
        try:
            if self._closing:
                raise PoolUnavailable("the agent pool is shutting down")
            # Saved before it exists in memory: a spawn the database refused leaves no trace.
            self._writer.insert(record, ("pool.spawn", queued, "info"))
        except PoolUnavailable:
            if tree is not None:
                await self._git.remove(tree)
            raise
        self._records[agent_id] = record
        self._done[agent_id] = asyncio.Event()
        self._queue.append(agent_id)
        self._emit("pool.spawn", queued)
        self._dispatch()
        self._forget_old()
        reply: dict[str, Any] = {
            "agent_id": agent_id,
            "status": record.status,
            "agent_type": record.agent_type,
            "working_directory": record.working_directory,
            "log_file": record.log_file,
            "sandbox": record.sandbox,
            "isolation": record.isolation,
            "spawned_by": record.spawned_by,
            "depth": record.depth,
        }
        if tree is not None:
            reply.update(worktree=tree.path, branch=tree.branch, base_commit=tree.base_commit)
        if record.status == QUEUED:
            reply["queue_position"] = self._queue.index(agent_id) + 1
        if record.error:
            reply["error"] = record.error
        return reply

    def list(self) -> list[dict[str, Any]]:
        """Every agent on the database (of every pool): the active ones and the
        latest finished ones, oldest first."""
        self._take_over_dead()
        records = {
            r.agent_id: r
            for r in agent_rows.load_summaries(
                self.store, MAX_FINISHED_KEPT, DESCRIPTION_PREVIEW_CHARS + 1
            )
        }
        # Ours from memory: fresher (the tail) and present even if a write failed.
        records.update(self._records)
        return [summary_view(r) for r in sorted(records.values(), key=lambda r: r.created_at)]

    def status(self, agent_id: str) -> dict[str, Any]:
        """Everything about one agent (this pool's or another's)."""
        record = self._lookup(agent_id)
        return status_view(record, self._queue_position(record))

    async def await_agent(self, agent_id: str, timeout_secs: float) -> dict[str, Any]:
        """Wait up to ``timeout_secs`` for the agent to finish; ``done`` says whether it did."""
        record = self._lookup(agent_id)
        deadline = time.monotonic() + timeout_secs
        # Another pool's agent: its changes are only seen in the database.
        while not self._owns(record) and not record.finished:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.sleep(min(FOREIGN_POLL_SECS, remaining))
            record = self._lookup(agent_id)
        done = self._done.get(agent_id)
        remaining = deadline - time.monotonic()
        if self._owns(record) and done is not None and not done.is_set() and remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), remaining)
        # From the record held, not by id: a long wait may outlast its place in memory.
        return {**status_view(record, self._queue_position(record)), "done": record.finished}

    async def stop(self, agent_id: str) -> dict[str, Any]:
        """Stop an agent: leave the queue, or SIGINT, SIGTERM, SIGKILL over its session."""
        record = self._lookup(agent_id)
        if record.finished:
            message = f"agent {agent_id} had already finished ({record.status})"
        elif not self._owns(record):
            raise validate.invalid(
                f"agent {agent_id} belongs to another aegis-mcp process (pid "
                f"{record.runner_pid}), which is still running it: stop it through that one"
            )
        elif record.status == QUEUED:
            self._queue.remove(agent_id)
            self._finish(record, STOPPED, None)
            message = f"agent {agent_id} removed from the queue before it started"
        elif record.status == ORPHANED:
            await self._stop_orphan(record, STOPPED)
            message = (
                f"agent {agent_id} (orphaned) stopped by pid; its exit code is unknown "
                "(it was not this process's child)"
            )
        else:
            self._request_stop(agent_id, STOPPED)
            await self._done[agent_id].wait()
            message = f"agent {agent_id} stopped"
        return {**status_view(record, None), "message": message}

    def restart(
        self, agent_id: str, reason: str, prompt: str | None, by: str, delay: float = 0.0
    ) -> dict[str, Any]:
        """Stop a running agent of this pool (after ``delay``) and start it again headless
        with its continue form and ``prompt``: its conversation goes on, in the same slot.

        Raises RestartRefused when it is not running here or is already stopping, and
        ValueError (PromptNotAccepted) when its command line has no place for a prompt.
        """
        record = self._lookup(agent_id)
        live = self._live.get(agent_id)
        if live is None or not self._owns(record) or record.status != RUNNING:
            raise RestartRefused(f"agent {agent_id} is {record.status}, not running here")
        if live.restart is not None:
            raise RestartRefused(f"a restart of agent {agent_id} is already in progress")
        if live.stop_task is not None:
            raise RestartRefused(f"agent {agent_id} is being stopped")
        profile = self.profiles[record.agent_type]
        if prompt is not None and not profile.takes_prompt:
            raise PromptNotAccepted(f"{profile.name} is a plain command: it takes no prompt")
        restart_args(profile, live.args, prompt, live.session)  # raises where no prompt can go
        number = record.restarts + 1
        live.restart = {
            "number": number,
            "reason": reason,
            "prompt": prompt,
            "by": by,
            "requested_at": time.time(),
        }
        live.stop_task = asyncio.get_running_loop().create_task(
            self._stop_after(live, delay), name=f"pool-restart-{agent_id}"
        )
        self._emit("pool.restart_requested", f"agent {agent_id}: restart requested by {by}")
        return {
            "restarting": True,
            "agent_id": agent_id,
            "restart_number": number,
            "reason": reason,
            "prompt": prompt,
            "continue_args": (
                [a.replace("{session}", live.session) for a in profile.resume_session_args]
                if live.session is not None and profile.resume_session_args
                else list(profile.syntax.continue_args)
            ),
            "message": (
                "This background agent will be stopped and started again headless, "
                "continuing its conversation."
            ),
        }

    async def _stop_after(self, live: _Live, delay: float) -> None:
        # The delay lets the restart tool's reply reach the agent before it is stopped.
        if delay:
            await asyncio.sleep(delay)
        await live.proc.stop(self._stop_grace, (signal.SIGINT, signal.SIGTERM))

    def process(self, agent_id: str) -> AgentProcess | None:
        """The process a running agent of this pool runs in now (None otherwise)."""
        live = self._live.get(agent_id)
        if live is None or live.restart is not None:
            return None
        return live.proc

    def restart_history(self, agent_id: str) -> list[dict[str, Any]]:
        """The restarts of a running agent of this pool, oldest first."""
        live = self._live.get(agent_id)
        return list(live.history) if live is not None else []

    def command(self, agent_id: str) -> list[str] | None:
        """The command line a running agent of this pool runs with now."""
        live = self._live.get(agent_id)
        return live.proc.spec.command if live is not None else None

    def record(self, agent_id: str) -> AgentRecord:
        """The record of ``agent_id`` (this pool's, else the database's)."""
        return self._lookup(agent_id)

    def configure(self, max_agents: int | None = None, max_depth: int | None = None) -> None:
        """Change the pool's limits; more room starts queued agents at once."""
        if max_agents is not None:
            self.max_agents = max_agents
        if max_depth is not None:
            self.max_depth = max_depth
        self._dispatch()

    def stats(self) -> dict[str, Any]:
        """Counts by status over the whole database, this pool's share, and the mean
        run time of the agents that ended."""
        totals = agent_rows.status_totals(self.store)
        counts = dict.fromkeys((QUEUED, RUNNING, ORPHANED, *FINAL_STATUSES), 0)
        counts.update({status: total[0] for status, total in totals.items()})
        # Changes not saved yet (the disk is full) are counted as memory has them.
        stored_statuses = agent_rows.stored_statuses(self.store, self._writer.dirty)
        for agent_id in self._writer.dirty:
            record = self._records.get(agent_id)
            stored = stored_statuses.get(agent_id)
            if record is None or stored == record.status:
                continue
            if stored is not None:
                counts[stored] -= 1
            counts[record.status] = counts.get(record.status, 0) + 1
        run_sum = sum(totals.get(s, (0, 0.0, 0))[1] for s in FINAL_STATUSES)
        run_count = sum(totals.get(s, (0, 0.0, 0))[2] for s in FINAL_STATUSES)
        mine = [r.status for r in self._records.values()]
        return {
            "max_agents": self.max_agents,
            "max_spawn_depth": self.max_depth,
            "active": counts[QUEUED] + counts[RUNNING],
            **counts,
            "total": sum(counts.values()),
            "mean_run_secs": round(run_sum / run_count, 3) if run_count else None,
            "this_pool": {
                "pid": self._me.pid,
                "queued": mine.count(QUEUED),
                "running": mine.count(RUNNING),
                "orphaned": mine.count(ORPHANED),
            },
            "database": self.store.where,
            "database_error": self._writer.error,
        }

    async def shutdown(self) -> None:
        """Empty the queue and stop every running agent (the host is exiting).

        Orphans taken over are left running: the next pool takes them over again.
        """
        self._closing = True
        while self._queue:
            self._finish(self._records[self._queue.popleft()], STOPPED, "the pool shut down")
        for agent_id in list(self._live):
            self._request_stop(agent_id, STOPPED)
        tasks = [live.task for live in self._live.values() if live.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in [self._upkeep, *self._tasks]:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self.flush()

    def add_listener(self, listener: Callable[[AgentRecord], None]) -> None:
        """Call ``listener`` with each agent's record when it reaches a final status."""
        self._listeners.append(listener)

    def flush(self) -> int:
        """Save what could not be saved before; returns how many agents still wait."""
        return self._writer.flush(self._records)

    def owns(self, agent_id: str) -> bool:
        """Whether ``agent_id`` is one of this pool's agents (its output tail is in memory)."""
        return agent_id in self._records

    # -- checks --------------------------------------------------------------------

    def _owns(self, record: AgentRecord) -> bool:
        return self._records.get(record.agent_id) is record

    def _lookup(self, agent_id: str) -> AgentRecord:
        """Our record, else the database's (taking it over first if its pool died)."""
        validate.string("agent_id", agent_id)
        record = self._records.get(agent_id)
        if record is not None:
            return record
        record = agent_rows.load(self.store, agent_id)
        if (
            record is not None
            and record.status in ACTIVE_STATUSES
            and not liveness.alive(record.runner_pid, record.runner_started)
        ):
            # Its pool died: take it over (with the others of dead pools) before answering.
            self._take_over_dead()
            record = self._records.get(agent_id) or agent_rows.load(self.store, agent_id)
        if record is None:
            raise AgentNotFound(f"no agent with id {agent_id!r}; agent_list shows the known ones")
        return record

    def _queue_position(self, record: AgentRecord) -> int | None:
        if record.status != QUEUED or record.agent_id not in self._queue:
            return None
        return self._queue.index(record.agent_id) + 1

    def _new_id(self) -> str:
        # Unique across every pool on the database, and no file of an older agent reused.
        while True:
            agent_id = secrets.token_hex(4)
            if (
                agent_id not in self._records
                and not (self.log_dir / f"{agent_id}.log").exists()
                and not (self.worktrees_dir / agent_id).exists()
                and not agent_rows.id_taken(self.store, agent_id)
            ):
                return agent_id

    # -- running -------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start queued agents while there are free slots."""
        while self._queue and len(self._live) < self.max_agents and not self._closing:
            self._start(self._records[self._queue.popleft()])

    def _launch(self, profile: AgentProfile, env: dict[str, str]) -> LaunchOptions:
        search = env.get("PATH", os.environ.get("PATH", os.defpath))
        executable = resolve_executable(profile.command[0], search)
        if executable is None:
            name = profile.command[0]
            raise FileNotFoundError(
                f"{name!r} (agent_type {profile.name!r}) {not_runnable(name, search)}"
            )
        launch = LaunchOptions(
            executable=executable,
            mcp_config=self._mcp_config,
            mcp_server=self._mcp_server,
            skip_permissions=profile.skips_permissions(self._user.is_root),
        )
        return self._launch_for(profile, launch) if self._launch_for is not None else launch

    def _task_args(
        self, profile: AgentProfile, record: AgentRecord, session: str | None
    ) -> list[str]:
        # A task starting with "-" (a Markdown list) would be read as an option;
        # a leading space changes nothing for the model and everything for the parser.
        task = (
            " " + record.description if record.description.startswith("-") else record.description
        )
        return headless_task_args(profile, task, record.max_iterations, session)

    def _spec(self, record: AgentRecord, argv: list[str], env: dict[str, str]) -> SpawnSpec:
        spec = SpawnSpec(
            argv=argv,
            env=env,
            cwd=record.working_directory,
            user=self._user,
            use_pty=False,
            stdin_devnull=True,
        )
        return in_sandbox(record.sandbox, record.agent_id, spec, self._sandbox_for)

    def _open_log(self, record: AgentRecord) -> int:
        try:
            private_dir(self.log_dir)
        except UnsafeDirectoryError as exc:
            raise UnsafeDirectoryError(f"refusing the pool log directory: {exc}") from None
        # Agent ids are chosen so that their log does not exist yet.
        return create_new(Path(record.log_file), flags=os.O_WRONLY | os.O_APPEND)

    def _start(self, record: AgentRecord) -> None:
        """Start one agent; a failure to start becomes its ``failed`` status."""
        log_fd: int | None = None
        try:
            profile = self.profiles[record.agent_type]
            log_fd = self._open_log(record)
            env = self._env_for(record.agent_id)
            if self._inject_env is not None:
                # Agents that take the server through their environment (gemini).
                self._inject_env(profile, env)
            # Its own conversation: its restart must resume this one, never the latest
            # in the directory (the user's, or another agent's).
            session = str(uuid.uuid4()) if profile.session_args else None
            args = self._task_args(profile, record, session)
            argv = build_argv(profile, self._launch(profile, env), args)
            scanner = OutputScanner()
            record.last_output = scanner.tail
            on_output = self._output_sink(record, scanner)
            spec = self._spec(record, argv, env)
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
        self._started(record, proc)
        live = _Live(
            proc=proc,
            log_fd=log_fd,
            scanner=scanner,
            env=env,
            args=args,
            on_output=on_output,
            session=session,
        )
        self._live[record.agent_id] = live
        live.task = asyncio.get_running_loop().create_task(
            self._supervise(record, live), name=f"pool-agent-{record.agent_id}"
        )
        message = f"agent {record.agent_id} started (pid {proc.pid})"
        self._save(record, ("pool.start", message, "info"))
        self._emit("pool.start", message)
        self._ensure_upkeep()

    def _output_sink(self, record: AgentRecord, scanner: OutputScanner) -> Callable[[bytes], None]:
        agent_id = record.agent_id

        def on_output(data: bytes) -> None:
            scanner.feed(data)
            record.output_bytes = scanner.bytes_seen
            # Saved by the upkeep task: a write per chunk would cost more than the agent.
            self._writer.dirty.add(agent_id)
            if self._on_output is not None:
                self._on_output(agent_id, data)

        return on_output

    @staticmethod
    def _started(record: AgentRecord, proc: AgentProcess) -> None:
        record.pid = proc.pid
        record.pid_started = liveness.process_start(proc.pid)
        if record.started_at is None:
            record.started_at = proc.started_at

    def _relaunch(self, record: AgentRecord, live: _Live, restart: dict[str, Any]) -> None:
        """Start the agent again, continuing its conversation with the restart's prompt."""
        profile = self.profiles[record.agent_type]
        args = restart_args(profile, live.args, restart["prompt"], live.session)
        argv = build_argv(profile, self._launch(profile, live.env), args)
        note = f"aegis-mcp: restart #{restart['number']}: {restart['reason']}\n"
        with contextlib.suppress(OSError):
            os.write(live.log_fd, note.encode())
        proc = AgentProcess(
            self._spec(record, argv, live.env),
            self._reaper,
            live.on_output,
            stdout_fd=live.log_fd,
            stderr_fd=live.log_fd,
        )
        live.proc, live.args, live.stop_task = proc, args, None
        record.restarts = restart["number"]
        self._started(record, proc)
        entry = {
            "number": restart["number"],
            "ts": time.time(),
            "reason": restart["reason"],
            "by": restart["by"],
            "prompt": restart["prompt"],
            "pid": proc.pid,
            "latency_secs": round(time.time() - restart["requested_at"], 4),
        }
        live.history = [*live.history, entry][-MAX_RESTART_HISTORY:]
        message = f"agent {record.agent_id} restarted (#{entry['number']}, pid {proc.pid})"
        self._save(record, ("pool.restarted", message, "info"))
        self._emit("pool.restarted", message)

    async def _supervise(self, record: AgentRecord, live: _Live) -> None:
        """Wait for the agent to end, enforce its timeout, record how it went; start it
        again when it was stopped for a restart."""
        status, error = FAILED, "the pool lost track of the agent"
        try:
            relaunch_error = await self._run_until_done(record, live)
            live.scanner.finish()
            outcome = live.scanner.outcome()
            record.result = outcome.text
            if relaunch_error is not None:
                status, error = FAILED, relaunch_error
            elif live.stop_reason == TIMED_OUT:
                status, error = TIMED_OUT, _timed_out_error(record)
            elif live.stop_reason is not None:
                status, error = live.stop_reason, None
            else:
                status, error = final_status(record.exit_code, outcome)
            await self._fill_changes(record)
        except Exception as exc:
            log.exception("supervising pool agent %s", record.agent_id)
            error = f"{error}: {exc}"
        finally:
            with contextlib.suppress(OSError):
                os.close(live.log_fd)
            self._live.pop(record.agent_id, None)
            self._finish(record, status, error)
            self._dispatch()

    async def _run_until_done(self, record: AgentRecord, live: _Live) -> str | None:
        """Wait for the agent's process to end (stopping it at its timeout), starting it
        again for each restart; returns why a restart could not start it, if so."""
        timeout = record.timeout_secs
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if left is not None and not await live.proc.wait_for_exit(left):
                self._request_stop(record.agent_id, TIMED_OUT)
            record.exit_code = await live.proc.wait()
            await live.proc.cleanup()
            if live.stop_task is not None:
                await asyncio.gather(live.stop_task, return_exceptions=True)
            restart, live.restart = live.restart, None
            if restart is None or live.stop_reason is not None or self._closing:
                return None
            try:
                self._relaunch(record, live, restart)
            except Exception as exc:
                return f"failed to restart: {exc}"

    def _request_stop(self, agent_id: str, reason: str) -> None:
        """Begin stopping a running agent once; the first reason given is the one kept."""
        live = self._live.get(agent_id)
        if live is None or live.stop_reason is not None:
            return
        live.stop_reason = reason
        if live.stop_task is not None:
            return  # stopping for a restart already: it will not start again
        live.stop_task = asyncio.get_running_loop().create_task(
            live.proc.stop(self._stop_grace, (signal.SIGINT, signal.SIGTERM)),
            name=f"pool-stop-{agent_id}",
        )

    def _finish(self, record: AgentRecord, status: str, error: str | None) -> None:
        record.status = status
        record.error = error
        record.ended_at = time.time()
        level = "warning" if status in (FAILED, TIMED_OUT, LOST) else "info"
        detail = f": {error}" if error else ""
        message = f"agent {record.agent_id} {status}{detail}"
        self._save(record, ("pool.end", message, level))
        done = self._done.get(record.agent_id)
        if done is not None:
            done.set()
        self._emit("pool.end", message, level)
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:
                log.exception("pool listener failed for agent %s", record.agent_id)

    def _forget_old(self) -> None:
        # Unsaved records stay until saved: memory is their only copy.
        finished = [
            r.agent_id
            for r in self._records.values()
            if r.finished and r.agent_id not in self._writer.dirty
        ]
        for agent_id in finished[: max(0, len(finished) - MAX_FINISHED_KEPT)]:
            del self._records[agent_id]
            self._done.pop(agent_id, None)

    # -- orphans of dead pools -------------------------------------------------------

    def _take_over_dead(self) -> None:
        """Take over the active agents of pools that died: orphaned if their process
        still runs, else lost."""
        for record, message in orphans.claim_dead(self.store, self._records):
            self._emit(f"pool.{record.status}", message, "warning")
            if record.status == ORPHANED:
                self._records[record.agent_id] = record
                self._done[record.agent_id] = asyncio.Event()
                self._ensure_upkeep()
            elif record.worktree is not None:
                self._records[record.agent_id] = record
                self._background(self._record_changes(record))

    async def _fill_changes(self, record: AgentRecord) -> None:
        if record.worktree is not None and record.base_commit is not None:
            record.changes = await self._git.changes(record.worktree, record.base_commit)

    async def _record_changes(self, record: AgentRecord) -> None:
        """Fill in the worktree changes of an agent that ended out of our sight."""
        await self._fill_changes(record)
        self._save(record, None)

    async def _stop_orphan(self, record: AgentRecord, reason: str) -> None:
        if record.agent_id in self._stopping:
            await self._done[record.agent_id].wait()
            return
        self._stopping.add(record.agent_id)
        try:
            assert record.pid is not None
            gone = await orphans.stop(record.pid, record.pid_started, self._stop_grace)
        finally:
            self._stopping.discard(record.agent_id)
        if not gone:
            raise AgentStuck(
                f"agent {record.agent_id} (pid {record.pid}) survived SIGKILL (a process in "
                "uninterruptible sleep?): look at it with `ps -o stat,wchan -p PID`",
            )
        if record.finished:
            return  # the watcher saw it go first
        await self._fill_changes(record)
        error = _timed_out_error(record) if reason == TIMED_OUT else None
        record.note = orphans.ended_note("was stopped by pid")
        self._finish(record, reason, error)

    async def _watch_orphans(self) -> None:
        """End the orphans that exited (lost) or outlived their timeout (stopped)."""
        for record in [r for r in self._records.values() if r.status == ORPHANED]:
            if record.agent_id in self._stopping:
                continue
            if not liveness.alive(record.pid, record.pid_started):
                await self._fill_changes(record)
                record.note = orphans.ended_note("exited")
                self._finish(record, LOST, orphans.lost_error(record))
            elif record.timeout_secs is not None and (record.run_secs or 0) > record.timeout_secs:
                self._background(self._stop_orphan(record, TIMED_OUT))

    # -- saving --------------------------------------------------------------------

    def _save(self, record: AgentRecord, event: tuple[str, str, str] | None) -> None:
        """Write one of our records through; on failure the upkeep task retries."""
        if not self._writer.save(record, event):
            self._ensure_upkeep()

    # -- background ----------------------------------------------------------------

    def _ensure_upkeep(self) -> None:
        """Run the upkeep task while there is something to look after."""
        if self._upkeep is not None and not self._upkeep.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # built outside a loop: started by the first request
        self._upkeep = loop.create_task(self._upkeep_loop(), name="pool-upkeep")

    async def _upkeep_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(UPKEEP_SECS)
            self.flush()
            try:
                await self._watch_orphans()
            except Exception:
                log.exception("watching orphaned pool agents")
            has_orphans = any(r.status == ORPHANED for r in self._records.values())
            if not (self._live or self._writer.pending or has_orphans):
                return

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()  # built outside a loop: that extra is skipped
            return
        # Held until done: the loop keeps only weak references to tasks.
        self._tasks.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            message = str(exc) if isinstance(exc, PoolError) else repr(exc)
            self._emit("pool.error", message, "error")

    def _emit(self, kind: str, message: str, level: str = "info") -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(kind, message, level)
        except Exception:
            # The host's event log failing must not leave an agent half-recorded.
            log.exception("pool event callback failed")
