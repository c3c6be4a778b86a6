"""The ``ebpf`` source: BPF programs on the agents' cgroup (see :mod:`.monitor`)."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from ...processes import AGENT_ID_ENV, SpawnSpec
from ..coverage import Coverage, ProcessView
from ..source import NetmonSource
from ..stats import NetmonStats
from . import policy as pol
from .attach_check import in_cgroup
from .monitor import EbpfMonitor


class EbpfSource(NetmonSource):
    """Every connection and byte of the processes in the run's cgroup, seen by the kernel."""

    name = "ebpf"
    counts_every_byte = True

    def __init__(self, runner_pid: int, agent_id: str, policy: pol.PolicyLike | None) -> None:
        self.runner_pid = runner_pid
        self.agent_id = agent_id
        self.policy = policy
        self.monitor: EbpfMonitor | None = None

    def start(self, stats: NetmonStats) -> None:
        """Load and attach the programs (compiled first on a new kernel: 1.5-3 s);
        EbpfUnavailable says why not."""
        self.monitor = EbpfMonitor(self.runner_pid, self.agent_id, stats, policy=self.policy)

    def poll(self) -> None:
        """Read the kernel's counters now."""
        if self.monitor is not None and not self.monitor.closed:
            self.monitor.fresh_stats()

    def prepare(self, spec: SpawnSpec) -> SpawnSpec:
        """Join the cgroup before exec (all agents of the run share it; events carry the pid);
        a sandbox whose agent is not the started process puts it under ``spec.cgroup``."""
        if self.monitor is None:
            return spec
        steps = self.monitor.confine_agent(spec.env.get(AGENT_ID_ENV))
        return dataclasses.replace(
            spec, confine=(*spec.confine, *steps), cgroup=self.monitor.cgroup.relative
        )

    def check(self, processes: list[ProcessView]) -> list[Coverage]:
        """Every process in the agent's cgroup is seen whole, while the kernel shows
        the programs attached to that cgroup (:mod:`.attach_check`)."""
        monitor = self.monitor
        if monitor is None or monitor.closed:
            return []
        missing = monitor.attach_problems()
        cgroup = monitor.cgroup
        found = []
        for proc in processes:
            inside = in_cgroup(proc.pid, cgroup.path, cgroup.parent.parent)
            if inside is None:
                continue
            if missing:
                reason = f"BPF programs not attached to its cgroup: {', '.join(missing)}"
            elif not inside:
                reason = "outside the agent's cgroup"
            else:
                found.append(Coverage(proc.pid, proc.comm, True, True))
                continue
            found.append(Coverage(proc.pid, proc.comm, False, False, reason))
        return found

    def describe(self) -> dict[str, Any]:
        """The monitor's tiers and counters."""
        return self.monitor.status() if self.monitor is not None else {}

    def stop(self) -> None:
        """Detach the programs and remove the cgroup, killing what escaped the agents' sessions."""
        monitor = self.monitor
        if monitor is None or monitor.close():
            return
        # Something escaped the agent's session but not its cgroup.
        with contextlib.suppress(OSError):
            monitor.cgroup.kill()
        monitor.close()
