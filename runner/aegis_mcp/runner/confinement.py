"""The run's sandboxes and network monitoring, for the primary agent and the pool's.

Two choices are made here from the plan, each by the package that owns it:
which netmon sources watch the run (:func:`aegis_mcp.netmon.choice.start_sources`:
the "best available" and its one-line reason), and what each agent runs in
(:func:`aegis_mcp.sandbox.get_sandbox`). Every agent's spawn spec passes
through :meth:`Confinement.wrap`: the sources add what they need to see its
process (the hooks' variables, the monitored cgroup), then its sandbox makes
it run inside. Sandboxes are made per agent: ``aegis-<runner pid>`` for the
primary agent, ``aegis-<runner pid>-<agent id>`` for pool agents that ask for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..control.protocol import PRIMARY_AGENT_ID
from ..hooks_lib import HooksInfo
from ..paths import RunnerFiles
from ..processes import SpawnSpec
from .errors import ConfinementError
from .plan import RunPlan

if TYPE_CHECKING:
    import psutil

    from ..netmon.choice import Machine, NetmonPlan
    from ..netmon.source import NetmonSource
    from ..netmon.stats import NetmonStats
    from ..sandbox.base import Sandbox
    from ..sandbox.policy import Policy
    from ..sandbox.warm import WarmPool
    from .netmon_check import SourceCheck


class Confinement:
    """Sandboxes and monitoring sources of one run."""

    def __init__(
        self,
        runner_pid: int,
        plan: RunPlan,
        files: RunnerFiles,
        hooks: HooksInfo | None,
        say: Callable[[str], None],
        hooks_problem: str | None = None,
    ) -> None:
        self.runner_pid = runner_pid
        self.plan = plan
        self.files = files
        self.hooks = hooks
        self.hooks_problem = hooks_problem
        """Why there is no hooks library the agent's user can load, when there is not."""
        self._say = say
        self.stats: NetmonStats | None = None
        self.sources: list[NetmonSource] = []
        self.netmon_reason: str | None = None
        """Why the sources are not what was asked for (said once at start)."""
        self.sandboxes: dict[str, Sandbox] = {}
        self._container_netns: bool | None = None
        self.warm: WarmPool | None = None
        """Netns sandboxes made ahead for pool agents (from the first that asks for one)."""
        self.check: SourceCheck | None = None
        """Whether the sources see the agent (:mod:`.netmon_check`), once it runs."""
        self._check_task: asyncio.Task[None] | None = None
        self._machine: Machine | None = None

    @property
    def mode(self) -> str:
        """The monitoring sources in use, e.g. ``preload`` or ``netns+ebpf``, or off."""
        return "+".join(s.name for s in self.sources) if self.sources else "off"

    def source(self, name: str) -> NetmonSource | None:
        """The running source called ``name``, if any."""
        return next((s for s in self.sources if s.name == name), None)

    @property
    def in_netns(self) -> bool:
        """Whether the primary agent's network is an aegis netns (netns, rootful container)."""
        if self.plan.sandbox == "netns":
            return True
        if self.plan.sandbox != "container":
            return False
        if self._container_netns is None:
            from ..sandbox import network_problem

            problem = network_problem("container", self.plan.config.container)
            self._container_netns = problem is None
        return self._container_netns

    async def start(self) -> None:
        """Start monitoring, then make the primary agent's sandbox when one is asked for."""
        plan = self.plan
        # Without --netmon and a sandbox to watch, netmon is not even imported.
        if plan.netmon is not None or self.in_netns:
            await self._start_netmon(self._netmon_plan())
        if plan.sandbox != "none":
            try:
                sandbox = await asyncio.to_thread(
                    self._make, plan.sandbox, PRIMARY_AGENT_ID, plan.profile.name
                )
            except Exception as exc:
                what = "container" if plan.sandbox == "container" else "network"
                raise ConfinementError(f"cannot create the {what} sandbox: {exc}") from exc
            self.sandboxes[PRIMARY_AGENT_ID] = sandbox

    def _netmon_plan(self) -> NetmonPlan:
        from ..netmon.choice import NetmonPlan

        plan = self.plan
        # Without a namespace, only the cgroup programs can enforce a policy.
        policy_needs_ebpf = not self.in_netns and bool(plan.allow or plan.deny)
        return NetmonPlan(
            mode=plan.netmon,
            runner_pid=self.runner_pid,
            agent_id=PRIMARY_AGENT_ID,
            log_file=self.files.netmon_log,
            user=plan.user if plan.user.drop else None,
            sandboxed=self.in_netns,
            policy=self._policy() if policy_needs_ebpf else None,
        )

    async def _start_netmon(self, netmon: NetmonPlan) -> None:
        from ..netmon.choice import Machine, start_sources
        from ..netmon.errors import NetmonUnavailable
        from ..netmon.stats import NetmonStats

        stats = NetmonStats()
        machine = await asyncio.to_thread(Machine.probe, self.hooks, netmon, self.hooks_problem)
        try:
            # The programs are loaded here (compiled first on a new kernel, 1.5-3 s): the
            # agent must not start before they are attached, or its first connects are missed.
            choice = await asyncio.to_thread(start_sources, netmon, machine, stats)
        except NetmonUnavailable as exc:
            raise ConfinementError(str(exc)) from exc
        self.stats, self.sources, self.netmon_reason = stats, choice.sources, choice.reason
        self._machine = machine
        if choice.reason:
            self._say(choice.reason)

    def start_checks(
        self,
        tree: Callable[[], list[psutil.Process] | None],
        emit: Callable[..., object],
    ) -> None:
        """Prove, while the agent runs, that the sources see its tree (``tree()``: its
        processes, None between two); what they cannot see is said and emitted."""
        if not self.sources or self.stats is None:
            return
        from .netmon_check import SourceCheck

        def tell(line: str) -> None:
            self._say(line)
            emit("netmon.coverage", line, "warning")

        self.check = SourceCheck(self.sources, self.stats, tree, self._coverage_hint(), tell)
        self._check_task = asyncio.create_task(self.check.run())

    def _coverage_hint(self) -> str | None:
        """What would see what these sources miss."""
        if self.source("ebpf") is not None:
            return None
        if os.geteuid() != 0:
            return "--netmon=ebpf as root sees every byte"
        problem = self._machine.ebpf_problem if self._machine is not None else None
        if problem is None or self.plan.netmon not in ("auto", "ebpf"):
            return "use --netmon=ebpf"
        return f"eBPF would see it but is unavailable here: {problem}"

    def _policy(self) -> Policy:
        from ..sandbox.policy import Policy

        return Policy.from_config(
            self.plan.config.sandbox.policy, allow=self.plan.allow, deny=self.plan.deny
        )

    def _make(self, kind: str, agent_id: str, agent_kind: str) -> Sandbox:
        """A new sandbox of ``kind`` for one agent; its network events go to the netns view."""
        from ..sandbox import get_sandbox
        from ..sandbox.base import SandboxRequest

        settings = self.plan.config.sandbox
        files = self.files
        request = SandboxRequest(
            runner_pid=self.runner_pid,
            agent_id=None if agent_id == PRIMARY_AGENT_ID else agent_id,
            policy=self._policy() if kind != "none" else None,
            address_pool=settings.pool,
            prefixlen=settings.prefixlen,
            on_event=self._sandbox_events(),
            agent_kind=agent_kind,
            share=(files.socket, files.overlay, files.settings_overlay, files.netmon_log),
            scratch={
                "passwd": files.container_passwd,
                "group": files.container_group,
                "engine_socket": files.engine_socket,
                "engine_log": files.engine_log,
            },
            container=self.plan.config.container,
        )
        return get_sandbox(kind, request)

    def _sandbox_events(self) -> Callable[[dict[str, Any]], object] | None:
        from ..netmon.netns_view import NetnsView

        view = self.source("netns")
        if isinstance(view, NetnsView):
            return view.sink
        # A pool agent's sandbox in a run whose primary agent has none: its
        # events still count where the run has monitoring.
        return self.stats.ingest if self.stats is not None else None

    def wrap(self, agent_id: str, spec: SpawnSpec) -> SpawnSpec:
        """The spec that runs an agent seen by every source and inside its sandbox."""
        for source in self.sources:
            spec = source.prepare(spec)
        sandbox = self.sandboxes.get(agent_id)
        return sandbox.wrap(spec) if sandbox is not None else spec

    def wrap_primary(self, spec: SpawnSpec) -> SpawnSpec:
        """:meth:`wrap` for the primary agent; ConfinementError when its sandbox fails it
        (a container that cannot be made: the run ends with the engine's reason)."""
        from ..sandbox.errors import SandboxError

        try:
            return self.wrap(PRIMARY_AGENT_ID, spec)
        except SandboxError as exc:
            raise ConfinementError(f"cannot start the agent's {self.plan.sandbox}: {exc}") from None

    def sandbox_for(self, kind: str, agent_id: str, spec: SpawnSpec) -> SpawnSpec:
        """The pool's hook: a pool agent's spec, in a new sandbox of ``kind`` (a netns one made
        ahead of time when one is ready: see :mod:`aegis_mcp.sandbox.warm`; the one it has
        already when it is restarted)."""
        if kind != "none" and agent_id not in self.sandboxes:
            from ..sandbox.errors import PolicyError, SandboxError, SandboxUnavailable

            try:
                warm = self._warm_pool() if kind == "netns" else None
                sandbox = warm.claim(agent_id) if warm is not None else None
                self.sandboxes[agent_id] = sandbox or self._make(  # type: ignore[assignment]
                    kind, agent_id, self._agent_kind(spec)
                )
            except SandboxUnavailable:
                raise
            except (SandboxError, PolicyError) as exc:
                raise SandboxError(f"sandbox={kind}: {exc}") from None
        return self.wrap(agent_id, spec)

    def _agent_kind(self, spec: SpawnSpec) -> str:
        # A pool agent of the primary agent's kind shares its home volume.
        if spec.argv and spec.argv[0] == self.plan.executable:
            return self.plan.profile.name
        return os.path.basename(spec.argv[0]) if spec.argv else "agent"

    def _warm_pool(self) -> WarmPool | None:
        """The pool of netns sandboxes made ahead, started at the first pool agent that asks
        for one (a run whose pool agents ask for none pays nothing for it)."""
        size = self.plan.config.sandbox.warm_namespaces
        if self.warm is None and size > 0:
            from ..sandbox.warm import WarmPool

            self.warm = WarmPool(lambda name: self._make("netns", name, "agent"), size)  # type: ignore[arg-type,return-value]
        return self.warm

    async def agent_ended(self, agent_id: str) -> None:
        """Tear down a pool agent's sandbox once the agent is gone."""
        sandbox = self.sandboxes.pop(agent_id, None)
        if sandbox is not None:
            await asyncio.to_thread(sandbox.teardown)

    def current_stats(self) -> NetmonStats | None:
        """The run's statistics, with every source read up to now (None when off, also
        when no source could start: zeros would read as "no traffic")."""
        for source in self.sources:
            source.poll()
        return self.stats if self.sources else None

    def describe(self) -> dict[str, Any]:
        """Sandbox part of the runner's status."""
        described: dict[str, Any] = {
            "kind": self.plan.sandbox,
            "sandboxes": {
                agent: _safe_describe(sandbox)
                for agent, sandbox in self.sandboxes.items()
                if sandbox.kind != "none"
            },
            "warm_namespaces": None,
        }
        if self.warm is not None:
            warm = {"size": self.warm.size, "ready": self.warm.ready}
            described["warm_namespaces"] = {**warm, "failures": self.warm.failures[-3:]}
        return described

    def describe_netmon(self) -> dict[str, Any]:
        """Netmon part of the runner's status: the sources, why they are these, and
        what they see of the agent."""
        sources = {s.name: _safe_describe(s) for s in self.sources}
        return {
            "mode": self.mode,
            "reason": self.netmon_reason,
            "sources": sources,
            "log_file": sources.get("preload", {}).get("log_file"),
            "ebpf": sources.get("ebpf"),
            "coverage": self.coverage(),
        }

    def coverage(self) -> dict[str, Any] | None:
        """What the sources see of the agent's processes (None until it is checked)."""
        return self.check.status() if self.check is not None else None

    async def close(self) -> None:
        """Stop the checks, tear every sandbox down, then stop the sources (idempotent).

        In this order: a container's cgroup lives under the eBPF source's, which
        can only be removed once the container is gone.
        """
        if self._check_task is not None:
            self._check_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._check_task
            self._check_task = None
        if self.check is not None:
            self.check.close()
        if self.warm is not None:
            for error in await asyncio.to_thread(self.warm.close):
                self._say(f"sandbox teardown: {error}")
        sandboxes, self.sandboxes = list(self.sandboxes.values()), {}
        for sandbox in sandboxes:
            errors = await asyncio.to_thread(sandbox.teardown)
            for error in errors or ():
                self._say(f"sandbox teardown: {error}")
        if sandboxes or self.plan.sandbox != "none":
            from ..sandbox import shutdown

            await asyncio.to_thread(shutdown)
        for source in self.sources:
            await asyncio.to_thread(source.stop)


def _safe_describe(part: Sandbox | NetmonSource) -> dict[str, Any]:
    # A status request must not fail because a counter could not be read.
    with contextlib.suppress(Exception):
        return part.describe()
    return {"error": "could not be described"}
