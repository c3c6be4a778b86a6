"""The runner's network sandboxes and network monitoring for its agents.

One place decides, from the plan, which monitoring sources feed the run's
NetmonStats (the hooks library's log, the netns sandbox's events) and which
confinement steps each agent's process runs before it drops privileges.
Sandboxes are made per agent: ``aegis-<runner pid>`` for the primary agent,
``aegis-<runner pid>-<agent id>`` for pool agents that ask for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..control.protocol import INVALID_ARGUMENT, PRIMARY_AGENT_ID, ControlError
from ..hooks_lib import HooksInfo, preload_into
from ..paths import RunnerFiles
from .plan import RunPlan

if TYPE_CHECKING:
    from ..netmon.ebpf import EbpfMonitor
    from ..netmon.preload_log import PreloadLog
    from ..netmon.stats import NetmonStats
    from ..sandbox.netns import NetnsSandbox
    from ..sandbox.policy import Policy

Confine = tuple[Callable[[], None], ...]


class SandboxUnavailable(RuntimeError):
    """The primary agent's sandbox could not be made; the message says why."""


class Confinement:
    """Sandboxes and monitoring sources of one run."""

    def __init__(
        self,
        runner_pid: int,
        plan: RunPlan,
        files: RunnerFiles,
        hooks: HooksInfo | None,
        say: Callable[[str], None],
    ) -> None:
        self.runner_pid = runner_pid
        self.plan = plan
        self.files = files
        self.hooks = hooks
        self._say = say
        self.stats: NetmonStats | None = None
        self.preload: PreloadLog | None = None
        self.ebpf: EbpfMonitor | None = None
        self.sources: list[str] = []
        self.sandboxes: dict[str, NetnsSandbox] = {}

    @property
    def mode(self) -> str:
        """The monitoring sources in use, e.g. ``preload`` or ``netns+preload``, or off."""
        return "+".join(self.sources) if self.sources else "off"

    def _ensure_stats(self) -> NetmonStats:
        if self.stats is None:
            from ..netmon.stats import NetmonStats

            self.stats = NetmonStats(mode=self.mode)
        return self.stats

    async def clean_leftovers(self, emit: Callable[..., object]) -> None:
        """Remove what crashed runners left (namespaces, veths, nft tables): only theirs."""
        from ..sandbox.netns.namespaces import cleanup_namespaces, leftovers_possible

        if os.geteuid() != 0 or not leftovers_possible():
            return
        try:
            result = await asyncio.to_thread(cleanup_namespaces)
        except (OSError, RuntimeError) as exc:
            emit("netns.cleanup_failed", str(exc), "warning")
            return
        removed = result.get("removed", [])
        if removed:
            emit("netns.cleanup", f"removed stale namespaces: {', '.join(removed)}")

    async def start(self) -> None:
        """Set up monitoring and, when asked for, the primary agent's sandbox."""
        plan = self.plan
        if plan.sandbox == "netns":
            self.sources.append("netns")
            try:
                sandbox = await asyncio.to_thread(self._create, PRIMARY_AGENT_ID)
            except Exception as exc:
                raise SandboxUnavailable(f"cannot create the network sandbox: {exc}") from exc
            self.sandboxes[PRIMARY_AGENT_ID] = sandbox
        if plan.netmon in ("auto", "ebpf"):
            await self._start_ebpf()
        if plan.netmon == "preload" or (plan.netmon == "auto" and not self.sources):
            if self.hooks is None:
                self._say(
                    "--netmon: the hooks library was not found (run `make build`); "
                    "preload monitoring is off"
                )
            else:
                # `auto` lands here when neither eBPF nor a sandbox can watch.
                from ..netmon.preload_log import PreloadLog

                self.sources.append("preload")
                self.preload = PreloadLog(self.files.netmon_log, self._ensure_stats())
        if self.stats is not None:
            self.stats.mode = self.mode

    async def _start_ebpf(self) -> None:
        """eBPF monitoring of the run's cgroup, or one line saying why not."""
        from ..netmon.ebpf import EbpfUnavailable, ebpf_available

        ok, reason = await asyncio.to_thread(ebpf_available)
        if ok:
            try:
                # BCC compiles the programs here (1.5-3 s): the agent must not
                # start before they are attached, or its first connects are missed.
                self.ebpf = await asyncio.to_thread(self._create_ebpf)
            except EbpfUnavailable as exc:
                ok, reason = False, str(exc)
        if ok:
            self.sources.append("ebpf")
            return
        if self._policy_needs_ebpf():
            raise SandboxUnavailable(
                f"--allow/--deny need eBPF without --sandbox=netns, and it is unavailable: {reason}"
            )
        fallback = "the sandbox's view" if self.sources else "preload"
        self._say(f"--netmon: eBPF unavailable ({reason}); using {fallback}")

    def _create_ebpf(self) -> EbpfMonitor:
        from ..netmon.ebpf import EbpfMonitor

        policy = self._policy() if self._policy_needs_ebpf() else None
        return EbpfMonitor(self.runner_pid, PRIMARY_AGENT_ID, self._ensure_stats(), policy=policy)

    def _policy_needs_ebpf(self) -> bool:
        # Without a namespace, only the cgroup programs can enforce a policy.
        return self.plan.sandbox != "netns" and bool(self.plan.allow or self.plan.deny)

    def _policy(self) -> Policy:
        from ..sandbox.policy import Policy

        return Policy.from_config(
            self.plan.config.sandbox.policy, allow=self.plan.allow, deny=self.plan.deny
        )

    def _create(self, agent_id: str) -> NetnsSandbox:
        from ..sandbox.netns import AddressPool, create_sandbox

        settings = self.plan.config.sandbox
        policy = self._policy()
        pool = AddressPool(settings.pool, settings.prefixlen)
        agent = None if agent_id == PRIMARY_AGENT_ID else agent_id
        return create_sandbox(
            self.runner_pid, agent, policy, pool, on_event=self._ensure_stats().ingest
        )

    def confine(self, agent_id: str = PRIMARY_AGENT_ID) -> Confine:
        """The confinement steps of an agent's process: the monitored cgroup (all
        agents of the run share it; events carry the pid), then its sandbox."""
        steps: list[Callable[[], None]] = []
        if self.ebpf is not None:
            steps.extend(self.ebpf.confine)
        sandbox = self.sandboxes.get(agent_id)
        if sandbox is not None:
            steps.extend(sandbox.confine)
        return tuple(steps)

    def confine_for(self, kind: str, agent_id: str) -> Confine:
        """The pool's hook: a pool agent's steps, making its sandbox of ``kind`` first."""
        if kind == "container":
            raise ControlError(
                INVALID_ARGUMENT, "sandbox 'container' is not available in this version"
            )
        if kind == "netns":
            from ..sandbox.errors import PolicyError, SandboxError

            try:
                self.sandboxes[agent_id] = self._create(agent_id)
            except (SandboxError, PolicyError) as exc:
                raise ControlError(INVALID_ARGUMENT, f"sandbox=netns: {exc}") from None
        return self.confine(agent_id)

    async def agent_ended(self, agent_id: str) -> None:
        """Tear down a pool agent's sandbox once the agent is gone."""
        sandbox = self.sandboxes.pop(agent_id, None)
        if sandbox is not None:
            await asyncio.to_thread(sandbox.teardown)

    def agent_env(self, env: dict[str, str]) -> None:
        """Add the monitoring variables to an agent's environment."""
        if self.preload is None or self.hooks is None:
            return
        preload_into(env, self.hooks)
        env["AEGIS_NETMON_LOG"] = str(self.files.netmon_log)

    def current_stats(self) -> NetmonStats | None:
        """The run's statistics, with the hooks' log read up to now (None when off)."""
        if self.preload is not None:
            self.preload.poll()
        if self.ebpf is not None:
            return self.ebpf.fresh_stats()
        return self.stats

    def describe(self) -> dict[str, Any]:
        """Sandbox part of the runner's status."""
        return {
            "kind": self.plan.sandbox,
            "sandboxes": {
                agent: _safe_describe(sandbox) for agent, sandbox in self.sandboxes.items()
            },
        }

    def describe_ebpf(self) -> dict[str, Any] | None:
        """The eBPF monitor's tiers and counters, when it runs."""
        return self.ebpf.status() if self.ebpf is not None else None

    async def close(self) -> None:
        """Detach the eBPF programs and tear every sandbox down (idempotent)."""
        if self.ebpf is not None:
            monitor, self.ebpf = self.ebpf, None
            if not await asyncio.to_thread(monitor.close):
                # Something escaped the agent's session but not its cgroup.
                for pid in monitor.cgroup_pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                await asyncio.sleep(0.1)
                await asyncio.to_thread(monitor.close)
        sandboxes, self.sandboxes = list(self.sandboxes.values()), {}
        for sandbox in sandboxes:
            errors = await asyncio.to_thread(sandbox.teardown)
            for error in errors or ():
                self._say(f"sandbox teardown: {error}")


def _safe_describe(sandbox: NetnsSandbox) -> dict[str, Any]:
    # A status request must not fail because a counter could not be read.
    with contextlib.suppress(Exception):
        return sandbox.describe()
    return {"name": sandbox.name}
