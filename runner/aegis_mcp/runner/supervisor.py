"""The runner: supervises one primary agent for the length of a run.

It owns the in-memory state that everything else reads (through the control
socket or the snapshot file): the agent process and its restarts, the
watchdog, and the runtime files. It never imports the MCP server or the
dashboard; they reach it only through the control protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..agents.command import LaunchOptions, build_argv, replace_prompt
from ..control import validate
from ..control.client import SOCKET_ENV
from ..control.protocol import (
    INVALID_ARGUMENT,
    NAMESPACE_OPS,
    NETMON_OPS,
    POOL_OPS,
    PRIMARY_AGENT_ID,
    UNAVAILABLE,
    ControlError,
    OpHandler,
    Request,
)
from ..files import write_atomic
from ..hooks_lib import find_hooks, preload_into
from ..paths import RunnerFiles, runtime_dir, state_dir
from ..privileges import become_subreaper
from ..processes import AgentProcess, ChildReaper, SpawnSpec
from ..terminal import RawMode, get_winsize, set_winsize
from ..watchdog.health import TreeSample, TreeSampler
from ..watchdog.monitor import Watchdog
from . import ops_watchdog
from .confinement import Confinement, SandboxUnavailable
from .control_server import ControlServer
from .input import InputForwarder
from .plan import RunPlan
from .runtime_files import RunnerLock, clean_stale
from .state import EventLog, SnapshotWriter

if TYPE_CHECKING:
    from ..pool import AgentPool

MAX_REASON = 2000
MAX_PROMPT = 100_000


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
        self._restart_request: dict[str, Any] | None = None
        self._shutdown_signal: int | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self.events: EventLog
        self.watchdog: Watchdog
        self.snapshot: SnapshotWriter
        self.server: ControlServer
        self.hooks = find_hooks()
        self.mcp_injection = "off"
        # How every agent of the run is launched; the overlay adds the MCP server.
        self.launch = LaunchOptions(plan.executable, skip_permissions=plan.skip_permissions)
        self.confinement = Confinement(self.pid, plan, self.files, self.hooks, self._say)
        self.pool: AgentPool | None = None
        self._pool_table: dict[str, OpHandler] | None = None
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
        self.snapshot = SnapshotWriter(self.files.snapshot, self.snapshot_data, self.owner)
        self.events.subscribe(lambda _event: self.snapshot.request())
        if stale:
            self.events.emit("runner.cleanup", f"removed {len(stale)} stale runtime file(s)")
        for notice in self.plan.notices:
            self._say(notice)
        self.watchdog = Watchdog(self.plan.watchdog, self, lambda: self.plan.interactive)
        self.server = ControlServer(
            self.files.socket, {self.plan.user.uid, os.geteuid()}, self.owner, self._on_request
        )
        ops_watchdog.register(self)
        self._register_ops()
        await self.server.start()
        self._write_overlay()
        self.server.register_lazy(POOL_OPS, lambda: self._pool_ops(reaper))
        self.server.register_lazy(NAMESPACE_OPS, _namespace_ops)
        # Earlier runs may have left pool history (perhaps orphans): take it
        # over soon after the agent has started rather than on the first pool
        # call, and off the start-up path (finding the state dir costs imports).
        loop.call_later(0.5, self._take_over_pool, reaper)
        raw = RawMode(sys.stdin.fileno()) if self.plan.use_pty else None
        forwarder: InputForwarder | None = None
        watchdog_task = asyncio.create_task(self.watchdog.run())
        self._install_signal_handlers(loop)
        try:
            await self._clean_stale_namespaces()
            await self.confinement.start()
            # Served once monitoring is set up: its mode is known from then on.
            self.server.register_lazy(NETMON_OPS, self._netmon_ops)
            if raw is not None:
                raw.enter()
                forwarder = InputForwarder(loop, sys.stdin.fileno(), self.watchdog.user_input)
            self.events.emit(
                "runner.start",
                f"aegis-mcp {__version__} supervising {self.plan.profile.name}",
                socket=str(self.files.socket),
            )
            await self._supervise(reaper, forwarder)
        except SandboxUnavailable as exc:
            self._say(str(exc))
            self.exit_code = 1
        finally:
            watchdog_task.cancel()
            self.watchdog.cancel_pending()
            if self.pool is not None:
                await self.pool.shutdown()
                self.pool.store.close()
            await self.confinement.close()
            if forwarder is not None:
                forwarder.close()
            if raw is not None:
                raw.restore()
            self._remove_signal_handlers(loop)
            self.status = "exited"
            self.events.emit("runner.exit", f"agent ended with exit code {self.exit_code}")
            await self.server.close()
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

    def _start(self, reaper: ChildReaper, restart: dict[str, Any] | None) -> AgentProcess:
        plan = self.plan
        prompt = restart.get("prompt") if restart else None
        argv = build_argv(
            plan.profile, self.launch, self.agent_args, restart=restart is not None, prompt=prompt
        )
        if (
            restart is not None
            and plan.profile.takes_prompt
            and (prompt is not None or not plan.headless)
        ):
            # What was launched becomes the base for the next restart.
            self.agent_args = replace_prompt(plan.profile, self.agent_args, prompt)
        spec = SpawnSpec(
            argv=argv,
            env=self._agent_env(),
            cwd=plan.cwd,
            user=plan.user,
            use_pty=plan.use_pty,
            winsize=get_winsize(sys.stdout.fileno()) if plan.use_pty else None,
            confine=self.confinement.confine(),
        )
        agent = AgentProcess(spec, reaper, self._on_output)
        self.agent = agent
        self.status = "running"
        self.watchdog.agent_started()
        if restart is not None:
            record = {
                "number": len(self.restarts) + 1,
                "ts": time.time(),
                "reason": restart["reason"],
                "by": restart["by"],
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

    async def _clean_stale_namespaces(self) -> None:
        """Remove what crashed runners left (namespaces, veths, nft tables): only theirs."""
        from ..sandbox.netns.namespaces import cleanup_namespaces, leftovers_possible

        if os.geteuid() != 0 or not leftovers_possible():
            return

        try:
            result = await asyncio.to_thread(cleanup_namespaces)
        except (OSError, RuntimeError) as exc:
            self.events.emit("netns.cleanup_failed", str(exc), "warning")
            return
        removed = result.get("removed", [])
        if removed:
            self.events.emit("netns.cleanup", f"removed stale namespaces: {', '.join(removed)}")

    def _netmon_ops(self) -> dict[str, OpHandler]:
        from ..netmon.ops import netmon_ops

        return netmon_ops(self.confinement.current_stats, self.confinement.mode)

    def _pool_ops(self, reaper: ChildReaper) -> dict[str, OpHandler]:
        """The background agent pool, made on first use; its agents get the primary
        agent's treatment (user, environment, MCP injection) and its state is kept
        in the state directory's SQLite database."""
        if self._pool_table is not None:
            return self._pool_table
        from ..pool import AgentPool, FileLocks, PoolStore, pool_ops

        directory = state_dir()
        try:
            store = PoolStore.open(directory)
        except ControlError as exc:
            # Called eagerly at start: report it; the next pool call tries again.
            self.events.emit("pool.unavailable", exc.message, "error")
            raise
        log_dir = directory / "pool-logs"
        log_dir.mkdir(mode=0o700, exist_ok=True)
        pool = AgentPool(
            self.plan.config.profiles,
            reaper,
            max_agents=self.plan.config.pool.max_agents,
            user=self.plan.user,
            env_for=self._agent_env,
            mcp_config=self.launch.mcp_config,
            mcp_server=self.launch.mcp_server,
            log_dir=log_dir,
            default_cwd=self.plan.cwd,
            on_event=lambda kind, message, level: self.events.emit(kind, message, level),
            stop_grace=self.plan.config.runner.stop_grace_secs,
            store=store,
            worktrees_dir=self._worktrees_dir(),
            confine_for=self.confinement.confine_for,
        )
        pool.add_listener(
            lambda record: self._background(self.confinement.agent_ended(record.agent_id))
        )
        self.pool = pool
        self._pool_table = pool_ops(pool, FileLocks(self.plan.cwd, store))
        return self._pool_table

    def _background(self, coro: Any) -> None:
        # The loop keeps only weak references to tasks: hold them until done.
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take_over_pool(self, reaper: ChildReaper) -> None:
        if not (state_dir() / "pool.db").exists():
            return
        with contextlib.suppress(ControlError):
            self._pool_ops(reaper)

    def _worktrees_dir(self) -> Path | None:
        # git runs as the agent's user, who cannot enter root's state directory.
        if not self.plan.user.drop:
            return None
        return Path(self.plan.user.home) / ".local" / "state" / "aegis-mcp" / "worktrees"

    def _agent_env(self, agent_id: str = PRIMARY_AGENT_ID) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.plan.user.env() if self.plan.user.drop else {})
        env[SOCKET_ENV] = str(self.files.socket)
        env["AEGIS_MCP_WRAPPER_PID"] = str(self.pid)
        env["AEGIS_MCP_AGENT_ID"] = agent_id
        if self.mcp_injection == "preload" and self.hooks is not None:
            preload_into(env, self.hooks)
            env["AEGIS_MCP_OVERLAY"] = str(self.files.overlay)
        self.confinement.agent_env(env)
        return env

    def _write_overlay(self) -> None:
        """Write the MCP config that names this runner's MCP server, when injecting."""
        plan = self.plan
        if not plan.inject_mcp:
            return
        if plan.profile.mcp_inject == "preload" and self.hooks is None:
            self._say(
                f"cannot inject the aegis-mcp MCP server into {plan.profile.name}: the hooks "
                "library was not found (run `make build`); the agent runs without it"
            )
            return
        command, *args = _self_command()
        server = {
            "command": command,
            "args": [*args, "--mcp-server"],
            # AEGIS_MCP_AGENT_ID is inherited: pool agents share this file.
            "env": {
                SOCKET_ENV: str(self.files.socket),
                "AEGIS_MCP_WRAPPER_PID": str(self.pid),
            },
        }
        servers = {"aegis-mcp": server}
        if plan.profile.mcp_inject == "preload":
            # The overlay stands in for the project's .mcp.json: keep its servers.
            servers = {**_project_mcp_servers(plan.cwd), **servers}
        data = json.dumps({"mcpServers": servers}, indent=2).encode()
        try:
            write_atomic(self.files.overlay, data, owner=self.owner)
        except OSError as exc:
            # A full or read-only disk costs the injection, not the session.
            self._say(
                f"cannot write the MCP overlay {self.files.overlay}: {exc.strerror}; "
                "the agent runs without the aegis-mcp MCP server"
            )
            return
        self.mcp_injection = plan.profile.mcp_inject
        if self.mcp_injection == "flag":
            self.launch = dataclasses.replace(
                self.launch, mcp_config=self.files.overlay, mcp_server=server
            )

    # -- restarts and stopping -----------------------------------------------

    def request_restart(
        self, reason: str, prompt: str | None, by: str, delay: float = 0.0
    ) -> dict[str, Any]:
        """Stop the agent (after ``delay``) and start it again with continue."""
        if self.agent is None or not self.agent.running:
            raise ControlError(UNAVAILABLE, "no agent is running")
        if self._shutdown_signal is not None:
            raise ControlError(UNAVAILABLE, "the runner is shutting down")
        if self._restart_request is not None:
            raise ControlError(UNAVAILABLE, "a restart is already in progress")
        self._restart_request = {
            "reason": reason,
            "prompt": prompt,
            "by": by,
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
            "continue_args": list(self.plan.profile.continue_args),
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

    # -- watchdog target -----------------------------------------------------

    def watchdog_sample_tree(self, sampler: TreeSampler) -> tuple[TreeSample, int] | None:
        """Sample the primary agent's tree (None between agent processes)."""
        agent = self.agent
        if agent is None or not agent.running or self._restart_request is not None:
            return None
        return sampler.sample(agent.tree())

    def watchdog_restart(self, reason: str) -> None:
        """Hot-reload on the watchdog's behalf."""
        with contextlib.suppress(ControlError):
            self.request_restart(reason, None, "watchdog")

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

    # -- control operations --------------------------------------------------

    def _on_request(self, request: Request) -> None:
        if request.activity:
            self.watchdog.activity("tool_call")

    def _register_ops(self) -> None:
        self.server.register("hello", self._op_hello)
        self.server.register("server_status", self._op_status)
        self.server.register("restart", self._op_restart)
        self.server.register("events", self._op_events)

    async def _op_hello(self, request: Request) -> dict[str, Any]:
        return {"runner_pid": self.pid, "version": __version__, "ops": self.server.ops}

    async def _op_status(self, request: Request) -> dict[str, Any]:
        return self.status_data()

    async def _op_restart(self, request: Request) -> dict[str, Any]:
        args = request.args
        reason = args.get("reason")
        prompt = args.get("prompt")
        by = args.get("by", "control socket")
        if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON):
            raise ControlError(
                INVALID_ARGUMENT, f"reason must be a string of at most {MAX_REASON} characters"
            )
        if prompt is not None and (not isinstance(prompt, str) or len(prompt) > MAX_PROMPT):
            raise ControlError(
                INVALID_ARGUMENT, f"prompt must be a string of at most {MAX_PROMPT} characters"
            )
        if prompt is not None and not prompt.strip():
            raise ControlError(INVALID_ARGUMENT, "prompt must not be empty (leave it out instead)")
        if prompt is not None and not self.plan.profile.takes_prompt:
            raise ControlError(
                INVALID_ARGUMENT, f"{self.plan.profile.name} is a plain command: it takes no prompt"
            )
        if not isinstance(by, str):
            raise ControlError(INVALID_ARGUMENT, "by must be a string")
        # A restart asked for by the agent's own tool call waits a moment, so
        # that the tool's reply reaches the agent before it is stopped.
        delay = self.plan.config.runner.restart_delay_secs if request.activity else 0.0
        return self.request_restart(reason or "restart requested", prompt, by[:100], delay)

    async def _op_events(self, request: Request) -> dict[str, Any]:
        since = validate.integer("since", request.args.get("since", 0), 0, 2**63)
        limit = validate.integer("limit", request.args.get("limit", 100), 1, 500)
        return {"events": self.events.since(since, limit)}

    # -- state ---------------------------------------------------------------

    def status_data(self) -> dict[str, Any]:
        """The runner's state as ``server_status`` reports it."""
        now = time.time()
        agent = self.agent
        plan = self.plan
        return {
            "runner": {
                "pid": self.pid,
                "version": __version__,
                "started_at": self.started_at,
                "uptime_secs": round(now - self.started_at, 1),
                "socket": str(self.files.socket),
                "snapshot": str(self.files.snapshot),
                "event_log": str(self.files.events),
                "hooks_library": str(self.hooks.path) if self.hooks else None,
            },
            "agent": {
                "id": PRIMARY_AGENT_ID,
                "profile": plan.profile.name,
                "executable": plan.executable,
                "args": self.agent_args,
                "command": agent.spec.argv if agent else None,
                "pid": agent.pid if agent and agent.running else None,
                "status": self.status,
                "exit_code": self.exit_code,
                "started_at": agent.started_at if agent else None,
                "uptime_secs": round(now - agent.started_at, 1)
                if agent and agent.running
                else None,
                "terminal": "pty" if plan.use_pty else "pipes",
                "interactive": plan.interactive,
                "headless": plan.headless,
                "cwd": plan.cwd,
                "user": {
                    "uid": plan.user.uid,
                    "name": plan.user.name,
                    "dropped_from_root": plan.user.drop,
                },
                "permission_flags": list(plan.profile.permission_args)
                if plan.skip_permissions
                else [],
                "mcp_injection": self.mcp_injection,
                "restarts": len(self.restarts),
                "restart_history": self.restarts[-20:],
            },
            "watchdog": {
                "enabled": self.watchdog.enabled,
                "state": self.watchdog.state,
                "reason": self.watchdog.reason,
                "lockup_action": self.watchdog.config.lockup_action,
                "heartbeat_timeout_secs": self.watchdog.config.heartbeat_timeout_secs,
            },
            "pool": self.pool.stats() if self.pool is not None else None,
            "netmon": {
                "mode": self.confinement.mode,
                "log_file": str(self.files.netmon_log) if self.confinement.preload else None,
                "ebpf": self.confinement.describe_ebpf(),
            },
            "sandbox": self.confinement.describe(),
        }

    def snapshot_data(self) -> dict[str, Any]:
        """What the snapshot file holds: the status plus the watchdog and recent events."""
        data = self.status_data()
        data["watchdog"] = self.watchdog.status()
        data["events"] = list(self.events.recent)[-50:]
        data["written_at"] = time.time()
        return data

    def _on_output(self, data: bytes) -> None:
        self.watchdog.activity("output")

    def _say(self, message: str) -> None:
        # In raw mode a bare \n would not return the cursor, and the agent's
        # screen may have left it mid-line.
        line = f"\r\naegis-mcp: {message}\r\n" if self.plan.use_pty else f"aegis-mcp: {message}\n"
        with contextlib.suppress(OSError):
            os.write(2, line.encode())


def _namespace_ops() -> dict[str, OpHandler]:
    from ..sandbox.netns.ops import namespace_ops

    return namespace_ops()


def _project_mcp_servers(cwd: str) -> dict[str, Any]:
    """Servers of the project's own .mcp.json (none if missing or unreadable)."""
    try:
        data = json.loads((Path(cwd) / ".mcp.json").read_text())
    except (OSError, ValueError):
        return {}
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    return servers if isinstance(servers, dict) else {}


def _self_command() -> list[str]:
    """How to run this very install of aegis-mcp."""
    script = sys.argv[0] if sys.argv else ""
    if os.path.basename(script) == "aegis-mcp" and os.path.isfile(script):
        return [os.path.abspath(script)]
    return [sys.executable, "-m", "aegis_mcp"]
