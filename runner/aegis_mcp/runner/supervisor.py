"""The runner: supervises one primary agent for the length of a run.

This module is the run's life cycle: starting the agent, restarting it,
stopping it, the signals the runner gets, and the watchdog's hand on it. It
owns the in-memory state that everything else reads (through the control
socket or the snapshot file). The control operations on that state are in
:mod:`.ops`, its shapes in :mod:`.status`, the agents' MCP injection in
:mod:`aegis_mcp.agents.injection`, sandboxes and monitoring in
:mod:`.confinement`. It never imports the MCP server or the dashboard; they
reach it only through the control protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..agents.command import LaunchOptions, build_argv, restart_args
from ..agents.injection import McpInjection
from ..control.authority import POOL, Caller
from ..control.client import SOCKET_ENV
from ..control.protocol import (
    NAMESPACE_OPS,
    NETMON_OPS,
    POOL_OPS,
    PRIMARY_AGENT_ID,
    UNAVAILABLE,
    ControlError,
    OpHandler,
    Request,
)
from ..hooks_lib import find_hooks_for
from ..paths import RunnerFiles, UnsafeDirectoryError, runtime_dir, state_dir
from ..privileges import become_subreaper
from ..processes import AGENT_ID_ENV, RUNNER_PID_ENV, AgentProcess, ChildReaper, SpawnSpec
from ..terminal import RawMode, get_winsize, set_winsize, winsize_tuple
from ..watchdog.monitor import Watchdog
from ..watchdog.restart_limit import RestartLimit
from .audit import RequestAudit
from .confinement import Confinement
from .control_server import ControlServer
from .errors import ConfinementError, RestartRefused
from .feed import StateFeed
from .identity import AgentTokens, Identifier, Peer
from .input import InputForwarder
from .notices import TerminalNotices
from .ops import runner_ops, stream_ops
from .plan import RunPlan
from .pool_agents import PoolAgent, PoolAgents
from .resources import ResourceSampler
from .runtime_files import RunnerLock, clean_stale
from .state import EventLog, SnapshotWriter
from .status import snapshot_data

if TYPE_CHECKING:
    import psutil

    from ..pool.service import PoolService
    from .notices import AgentScreen


class Supervisor:
    """One run: the primary agent, its restarts, the watchdog and the control socket."""

    def __init__(self, plan: RunPlan) -> None:
        self.plan = plan
        self.pid = os.getpid()
        self.started_at = time.time()
        self.files = RunnerFiles(runtime_dir(), self.pid)
        user = plan.user
        self.owner = (user.uid, user.gid) if user.drop else None
        self.agent: AgentProcess | None = None
        self.agent_args = list(plan.agent_args)
        self.status = "starting"
        self.exit_code: int | None = None
        self.restarts: list[dict[str, Any]] = []
        self.restart_limit = self._new_restart_limit()
        """Every restart of the primary agent passes it, whoever asks."""
        self._restart_request: dict[str, Any] | None = None
        self._shutdown_signal: int | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self.events: EventLog
        self.feed: StateFeed
        self.watchdog: Watchdog
        self.snapshot: SnapshotWriter
        self.server: ControlServer
        # Checked (and copied if need be) for the agent's user before any start.
        self.hooks, hooks_problem = find_hooks_for(user, self.files.hooks_copy)
        self.notices = TerminalNotices(self._agent_screen, raw_terminal=plan.use_pty)
        self.injection = McpInjection(
            plan.profile,
            LaunchOptions(plan.executable, skip_permissions=plan.skip_permissions),
            enabled=plan.inject_mcp,
            overlay=self.files.overlay,
            socket=self.files.socket,
            runner_pid=self.pid,
            cwd=plan.cwd,
            hooks=self.hooks,
            owner=self.owner,
            say=self._say,
            settings_overlay=self.files.settings_overlay,
            user_env=plan.user.env() if plan.user.drop else {},
        )
        self.confinement = Confinement(
            self.pid, plan, self.files, self.hooks, self._say, hooks_problem=hooks_problem
        )
        self.pool_service: PoolService | None = None
        self.tokens = AgentTokens()
        self.audit: RequestAudit
        self.pool_agents: PoolAgents
        self.resources = ResourceSampler()
        self._tasks: set[asyncio.Future[Any]] = set()

    # -- life cycle ----------------------------------------------------------

    async def run(self) -> int:
        """Run until the agent ends for good; returns the exit code for the runner."""
        loop = asyncio.get_running_loop()
        stale = clean_stale(self.files.directory, self.pid)
        lock = RunnerLock(self.files, self.owner)
        become_subreaper()
        reaper = ChildReaper(loop)
        self.events = EventLog(self.files.events, self.owner)
        self.snapshot = SnapshotWriter(self.files.snapshot, lambda: snapshot_data(self), self.owner)
        self.events.subscribe(lambda _event: self.snapshot.request())
        self.feed = StateFeed(lambda: snapshot_data(self))
        self.events.subscribe(self.feed.event)
        if stale:
            self.events.emit(
                "runner.cleanup", f"removed the runtime files of {stale} dead runner(s)"
            )
        for notice in self.plan.notices:
            self._say(notice)
        self.watchdog = Watchdog(
            self.plan.watchdog,
            self,
            lambda: self.plan.interactive,
            # A terminal is watched through an emulator with the profile's screen rules.
            rules=self.plan.profile.watch if self.plan.use_pty else None,
            terminal_size=winsize_tuple(get_winsize(sys.stdout.fileno())),
        )
        self.audit = RequestAudit(self.events.emit)
        self.pool_agents = PoolAgents(
            lambda: self.pool_service.pool if self.pool_service is not None else None,
            self.events.emit,
            self.confinement.current_stats,
            self.plan.watchdog,
            self._new_restart_limit,
        )
        self.server = ControlServer(
            self.files.socket,
            {self.plan.user.uid, os.geteuid()},
            self.owner,
            self._on_request,
            Identifier(self.pid, self.tokens),
        )
        for op, handler in runner_ops(self, lambda: self.server.ops).items():
            self.server.register(op, handler)
        for op, opener in stream_ops(self.feed).items():
            self.server.register_stream(op, opener)
        await self.server.start()
        self.injection.write_overlay()
        # Served from the start, answered once monitoring is set up (a BPF compile
        # may take a while): the netmon mode is known from then on, and a pool agent
        # spawned meanwhile would start unseen by the sources (and outside the cgroup
        # an egress policy is enforced on).
        monitoring_ready = asyncio.Event()
        self.server.register_lazy(POOL_OPS, lambda: self._pool_ops(reaper), monitoring_ready)
        self.server.register_lazy(NAMESPACE_OPS, _namespace_ops)
        self.server.register_lazy(NETMON_OPS, self._netmon_ops, monitoring_ready)
        # Earlier runs may have left pool history (perhaps orphans): take it
        # over soon after the agent has started rather than on the first pool
        # call, and off the start-up path (finding the state dir costs imports).
        take_over = loop.call_later(0.5, self._take_over_pool, reaper)
        raw = RawMode(sys.stdin.fileno()) if self.plan.use_pty else None
        forwarder: InputForwarder | None = None
        watchdog_task = asyncio.create_task(self.watchdog.run())
        self._install_signal_handlers(loop)
        try:
            await self._clean_leftovers()
            await self.confinement.start()
            if self.confinement.stats is not None:
                self.confinement.stats.add_listener(self.feed.netmon_event)
            monitoring_ready.set()
            self.confinement.start_checks(self.watchdog_tree, self.events.emit)
            if raw is not None:
                raw.enter()
                forwarder = InputForwarder(loop, sys.stdin.fileno(), self.watchdog.user_input)
            self.events.emit(
                "runner.start",
                f"aegis-mcp {__version__} supervising {self.plan.profile.name}",
                socket=str(self.files.socket),
            )
            await self._supervise(reaper, forwarder)
        except ConfinementError as exc:
            self._say(str(exc))
            self.exit_code = 1
        finally:
            monitoring_ready.set()
            watchdog_task.cancel()
            self.watchdog.close()
            self.pool_agents.close()
            take_over.cancel()
            if self.pool_service is not None:
                await self.pool_service.shutdown()
            await self.confinement.close()
            if forwarder is not None:
                forwarder.close()
            self.notices.close()
            if raw is not None:
                raw.restore()
            self._remove_signal_handlers(loop)
            self.status = "exited"
            self.events.emit("runner.exit", f"agent ended with exit code {self.exit_code}")
            # The last state sent still shows the pool: its database closes after.
            self.feed.close("the runner is exiting")
            await self.server.close()
            # In this order: a snapshot still pending reads the pool's store, and
            # the files it would write are removed with the lock.
            self.snapshot.close()
            if self.pool_service is not None:
                self.pool_service.close()
            reaper.close()
            self.events.close()
            lock.release()
        return self.exit_code if self.exit_code is not None else 1

    async def _supervise(self, reaper: ChildReaper, forwarder: InputForwarder | None) -> None:
        restart: dict[str, Any] | None = None
        while True:
            if self._shutdown_signal is not None:
                # Asked to stop while the set-up (a BPF compile) was still running.
                self.exit_code = 128 + self._shutdown_signal
                return
            try:
                agent = self._start(reaper, restart)
            except OSError as exc:
                self._say(f"cannot start {self.plan.executable}: {exc.strerror or exc}")
                self.events.emit("agent.start_failed", str(exc), "error")
                self.exit_code = 126 if isinstance(exc, PermissionError) else 127
                return
            if forwarder is not None:
                forwarder.target(agent.master_fd)
            code = await agent.wait()
            if forwarder is not None:
                forwarder.target(None)
            self.exit_code = code
            await agent.cleanup()
            self.notices.agent_ended()
            restart, self._restart_request = self._restart_request, None
            if self._stop_task is not None:
                await self._stop_task
                self._stop_task = None
            if restart is None or self._shutdown_signal is not None:
                self.status = "exited"
                self.events.emit("agent.exit", f"agent exited with code {code}", exit_code=code)
                return
            self.events.emit(
                "agent.stopped_for_restart", f"agent stopped (exit code {code}) for a restart"
            )

    async def _clean_leftovers(self) -> None:
        """A root runner removes what dead runners left (never a live one's) before its
        own set-up: namespaces, cgroups and their programs, the processes in them."""
        if os.geteuid() != 0:
            return
        from ..cleanup.sweep import sweep

        report = await asyncio.to_thread(sweep, quick=True)
        if report.removed:
            names = ", ".join(f"{e['kind']} {e['id']}" for e in report.removed)
            killed = f" (killed {report.killed} process(es) left in them)" if report.killed else ""
            self.events.emit("runner.cleanup", f"removed what dead runners left: {names}{killed}")
        for error in report.errors:
            self.events.emit("runner.cleanup_failed", error["error"], "warning")

    def _start(self, reaper: ChildReaper, restart: dict[str, Any] | None) -> AgentProcess:
        plan = self.plan
        prompt = restart.get("prompt") if restart else None
        if restart is not None:
            # What was launched becomes the base for the next restart.
            self.agent_args = restart_args(plan.profile, self.agent_args, prompt)
        argv = build_argv(plan.profile, self.injection.launch, self.agent_args)
        env = self._agent_env()
        self.injection.env_for(plan.profile, env)
        spec = SpawnSpec(
            argv=argv,
            env=env,
            cwd=plan.cwd,
            user=plan.user,
            use_pty=plan.use_pty,
            winsize=get_winsize(sys.stdout.fileno()) if plan.use_pty else None,
            # Started from the event loop's thread, which lives as long as the runner.
            die_with_runner=True,
        )
        spec = self.confinement.wrap_primary(spec)
        agent = AgentProcess(spec, reaper, self._on_output)
        self.agent = agent
        self.notices.agent_started()
        self.status = "running"
        self.watchdog.agent_started()
        if restart is not None:
            record = {
                "number": len(self.restarts) + 1,
                "ts": time.time(),
                "reason": restart["reason"],
                "by": restart["by"],
                "caller": restart["caller"],
                "prompt": prompt,
                "pid": agent.pid,
                "latency_secs": round(time.time() - restart["requested_at"], 4),
            }
            self.restarts.append(record)
            self.events.emit(
                "agent.restarted",
                f"agent restarted (#{record['number']}): {restart['reason']}",
                pid=agent.pid,
                restart=record["number"],
            )
        else:
            self.events.emit("agent.start", f"started {' '.join(argv)}", pid=agent.pid)
        return agent

    def _netmon_ops(self) -> dict[str, OpHandler]:
        from ..netmon.ops import netmon_ops

        confinement = self.confinement
        return netmon_ops(
            confinement.current_stats,
            confinement.mode,
            self._pids_of,
            lambda: {"reason": confinement.netmon_reason, "coverage": confinement.coverage()},
        )

    def _pids_of(self, caller: Caller) -> set[int] | None:
        """The processes whose traffic ``caller`` may see (None: all of the run's)."""
        if caller.kind != POOL:
            return None
        return self.pool_agent(caller.agent_id or "").pids()

    def pool_agent(self, agent_id: str) -> PoolAgent:
        """A running pool agent of this runner, as it acts on itself."""
        return self.pool_agents.get(agent_id)

    def _pool_ops(self, reaper: ChildReaper) -> dict[str, OpHandler]:
        """The background agent pool, made on first use; its agents get the primary
        agent's treatment (user, environment, MCP injection) and its state is kept
        in the state directory's SQLite database."""
        if self.pool_service is not None:
            return self.pool_service.ops
        from ..pool.errors import PoolUnavailable
        from ..pool.service import open_pool

        plan = self.plan
        try:
            service = open_pool(
                state_dir(),
                plan.config.profiles,
                reaper,
                user=plan.user,
                env_for=self._agent_env,
                cwd=plan.cwd,
                max_agents=plan.config.pool.max_agents,
                max_depth=plan.config.pool.max_spawn_depth,
                launch_for=self.injection.launch_for,
                inject_env=self.injection.env_for,
                on_output=self._pool_output,
                on_event=lambda kind, message, level: self.events.emit(kind, message, level),
                stop_grace=plan.config.runner.stop_grace_secs,
                worktrees_dir=self._worktrees_dir(),
                sandbox_for=self.confinement.sandbox_for,
            )
        except (PoolUnavailable, UnsafeDirectoryError) as exc:
            # Called eagerly at start: report it; the next pool call tries again.
            self.events.emit("pool.unavailable", str(exc), "error")
            raise ControlError(UNAVAILABLE, str(exc)) from None
        service.pool.add_listener(lambda record: self._pool_agent_ended(record.agent_id))
        self.pool_service = service
        return service.ops

    def _pool_agent_ended(self, agent_id: str) -> None:
        # What its processes left behind speaks for nobody from now on.
        self.tokens.revoke(agent_id)
        self.pool_agents.ended(agent_id)
        self._background(self.confinement.agent_ended(agent_id))

    def _pool_output(self, agent_id: str, data: bytes) -> None:
        agent = self.pool_agents.known(agent_id)
        if agent is not None:
            agent.output(data)

    def _background(self, coro: Any) -> None:
        # The loop keeps only weak references to tasks: hold them until done.
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take_over_pool(self, reaper: ChildReaper) -> None:
        try:
            if not (state_dir() / "pool.db").exists():
                return
        except UnsafeDirectoryError as exc:
            self.events.emit("pool.unavailable", str(exc), "error")
            return
        with contextlib.suppress(ControlError):
            self._pool_ops(reaper)

    def _worktrees_dir(self) -> Path | None:
        # git runs as the agent's user, who cannot enter root's state directory.
        if not self.plan.user.drop:
            return None
        return Path(self.plan.user.home) / ".local" / "state" / "aegis-mcp" / "worktrees"

    def _agent_env(self, agent_id: str = PRIMARY_AGENT_ID) -> dict[str, str]:
        """An agent's environment: the runner's, its user's, and who it is (its id and
        its token, which nothing else carries); its MCP injection adds the rest."""
        env = dict(os.environ)
        env.update(self.plan.user.env() if self.plan.user.drop else {})
        env[SOCKET_ENV] = str(self.files.socket)
        env[RUNNER_PID_ENV] = str(self.pid)
        env[AGENT_ID_ENV] = agent_id
        # Always set: an outer run's token (aegis-mcp under aegis-mcp) is replaced.
        self.tokens.into(env, agent_id)
        return env

    # -- restarts and stopping -----------------------------------------------

    def _new_restart_limit(self) -> RestartLimit:
        """A start limit of ``[runner] restart_limit_*``: the primary agent's, each pool
        agent's."""
        runner = self.plan.config.runner
        return RestartLimit(runner.restart_limit_burst, runner.restart_limit_interval_secs)

    def request_restart(
        self,
        reason: str,
        prompt: str | None,
        by: str,
        delay: float = 0.0,
        caller: str | None = None,
    ) -> dict[str, Any]:
        """Stop the agent (after ``delay``) and start it again with continue; ``caller``
        names who asked, for the record."""
        if self.agent is None or not self.agent.running:
            raise RestartRefused("no agent is running")
        if self._shutdown_signal is not None:
            raise RestartRefused("the runner is shutting down")
        if self._restart_request is not None:
            raise RestartRefused("a restart is already in progress")
        refusal = self.restart_limit.acquire()
        if refusal is not None:
            message = (
                f"not restarting the agent (asked by {by}: {reason}): {refusal}; the agent "
                "keeps running ([runner] restart_limit_burst and restart_limit_interval_secs "
                "set the limit)"
            )
            self.events.emit("agent.restart_limit", message, "error")
            self._say(message)
            raise RestartRefused(message)
        self._restart_request = {
            "reason": reason,
            "prompt": prompt,
            "by": by,
            "caller": caller or by,
            "requested_at": time.time(),
        }
        self.watchdog.cancel_pending()
        self.status = "restarting"
        self.events.emit("agent.restart_requested", f"restart requested by {by}: {reason}")
        self._stop_task = asyncio.create_task(self._stop_agent(delay))
        return {
            "restarting": True,
            "restart_number": len(self.restarts) + 1,
            "reason": reason,
            "prompt": prompt,
            "continue_args": list(self.plan.profile.syntax.continue_args),
            "message": "The agent will be stopped and started again, continuing its conversation.",
        }

    async def _stop_agent(
        self, delay: float, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
    ) -> None:
        agent = self.agent
        if agent is None:
            return
        # The delay lets a restart tool's reply travel back to the agent first.
        if delay:
            await asyncio.sleep(delay)
        await agent.stop(self.plan.config.runner.stop_grace_secs, signals)

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGINT, self._forward, signal.SIGINT)
        loop.add_signal_handler(signal.SIGQUIT, self._forward, signal.SIGQUIT)
        loop.add_signal_handler(signal.SIGTERM, self._shutdown, signal.SIGTERM)
        loop.add_signal_handler(signal.SIGHUP, self._shutdown, signal.SIGHUP)
        if self.plan.use_pty:
            loop.add_signal_handler(signal.SIGWINCH, self._resize)

    def _remove_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP, signal.SIGWINCH):
            loop.remove_signal_handler(sig)

    def _forward(self, sig: int) -> None:
        # Ctrl-C in a terminal that is not in raw mode reaches us, not the
        # agent (it has its own session): pass it on, like a shell would.
        if self.agent is not None:
            self.agent.send_signal(sig)

    def _shutdown(self, sig: int) -> None:
        if self._shutdown_signal is not None:
            if self.agent is not None:
                self.agent.kill_session(signal.SIGKILL)
            return
        self._shutdown_signal = sig
        self.status = "stopping"
        self.events.emit(
            "runner.signal", f"received {signal.Signals(sig).name}: stopping the agent"
        )
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._stop_agent(0, (sig, signal.SIGTERM)))

    def _resize(self) -> None:
        size = get_winsize(sys.stdout.fileno())
        if size and self.agent is not None and self.agent.master_fd is not None:
            set_winsize(self.agent.master_fd, size)
            self.watchdog.resize(*winsize_tuple(size))

    # -- watchdog target -----------------------------------------------------

    def watchdog_tree(self) -> list[psutil.Process] | None:
        """The primary agent's tree (None between agent processes)."""
        agent = self.agent
        if agent is None or not agent.running or self._restart_request is not None:
            return None
        return agent.tree()

    def watchdog_net_received(self, pids: set[int]) -> int | None:
        """What netmon saw these processes receive, when a netmon mode is on."""
        stats = self.confinement.current_stats()
        return stats.received_by(pids) if stats is not None else None

    def watchdog_restart(self, reason: str) -> bool:
        """Hot-reload on the watchdog's behalf."""
        try:
            self.request_restart(reason, None, "watchdog")
        except RestartRefused:
            return False
        return True

    def watchdog_kill(self, reason: str) -> None:
        """Kill the agent's session; the run ends with its exit code."""
        self.events.emit("watchdog.kill", reason, "error")
        self._say(reason)
        if self.agent is not None:
            self.agent.kill_session(signal.SIGKILL)

    def watchdog_event(self, kind: str, message: str, level: str) -> None:
        """Record a watchdog event; warnings and errors are also shown on stderr."""
        self.events.emit(kind, message, level)
        if level in ("warning", "error"):
            self._say(message)

    # -- the control socket and the agent's output ----------------------------

    def _on_request(
        self,
        request: Request,
        caller: Caller | None,
        peer: Peer,
        allowed: bool,
        reason: str | None,
    ) -> None:
        self.audit.record(request, caller, peer, allowed, reason)
        if not (request.activity and allowed and caller is not None):
            return
        # A tool call is a sign of life of the agent that made it.
        if caller.kind == POOL:
            agent = self.pool_agents.known(caller.agent_id or "")
            if agent is not None:
                agent.tool_call()
        else:
            self.watchdog.activity("tool_call")

    def _on_output(self, data: bytes) -> None:
        self.watchdog.output(data)

    def _say(self, message: str) -> None:
        self.notices.say(message)

    def _agent_screen(self) -> AgentScreen | None:
        watchdog = getattr(self, "watchdog", None)
        return watchdog.screen if watchdog is not None else None


def _namespace_ops() -> dict[str, OpHandler]:
    from ..cleanup.ops import cleanup_ops
    from ..sandbox.netns.ops import namespace_ops

    return {**namespace_ops(), **cleanup_ops()}
