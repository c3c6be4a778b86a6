"""Processes of dead runners' primary agents that nothing else finds.

The primary agent dies with its runner (``PR_SET_PDEATHSIG``), and what it left
in a namespace or cgroup is killed with that (:mod:`aegis_mcp.cleanup`). What it
started outside both (a plain run), or what is still running after someone
removed its namespace mount without killing it, is found here by the
environment every process an agent starts inherits: ``AEGIS_MCP_WRAPPER_PID``
names a runner that is gone. This is a best effort (a process may clear its
environment); namespaces and cgroups are what an agent cannot leave.

Pool agents (``AEGIS_MCP_AGENT_ID`` other than the primary's) are left alone:
they become ``orphaned`` and the next pool takes them over.
"""

from __future__ import annotations

import os
from collections import defaultdict

from ..control.protocol import PRIMARY_AGENT_ID
from ..leftovers import Leftover, kill_processes
from ..owners import owner_alive
from ..processes import AGENT_ID_ENV, RUNNER_PID_ENV

KIND = "processes"


def _environ(pid: int) -> dict[bytes, bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    return dict(item.partition(b"=")[::2] for item in raw.split(b"\0") if item)


def _by_runner() -> dict[int, dict[str, list[int]]]:
    """Every process that names a runner: runner pid -> agent id -> pids."""
    found: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        env = _environ(int(entry))
        runner = env.get(RUNNER_PID_ENV.encode(), b"")
        if runner.isdigit():
            agent = env.get(AGENT_ID_ENV.encode(), b"").decode(errors="replace")
            found[int(runner)][agent].append(int(entry))
    return found


class StrayProcesses:
    """The :class:`aegis_mcp.leftovers.LeftoverSource` of stray agent processes."""

    def possible(self) -> bool:
        """Whether a process of a dead runner's primary agent runs."""
        return any(
            PRIMARY_AGENT_ID in agents and not owner_alive(runner)
            for runner, agents in _by_runner().items()
        )

    def find(self) -> list[Leftover]:
        """One item per runner whose agents' processes run, the pool agents' kept."""
        found = []
        for runner, agents in sorted(_by_runner().items()):
            alive = owner_alive(runner)
            for agent, pids in sorted(agents.items()):
                pool = agent != PRIMARY_AGENT_ID
                reason = (
                    f"pool agent {agent} of the dead runner (orphaned: the next pool takes it "
                    "over, agent_stop ends it)"
                    if pool and not alive
                    else ""
                )
                found.append(
                    Leftover(
                        kind=KIND,
                        id=f"runner {runner} agent {agent}",
                        owner_pid=runner,
                        owner_alive=alive,
                        group=f"runner {runner} agent {agent}",
                        processes=() if pool else tuple(pids),
                        keep_reason=reason,
                        detail=f"pids {pids}" if pool else "",
                    )
                )
        return found

    def remove(self, item: Leftover) -> None:
        """Kill the processes."""
        if left := kill_processes(item.processes):
            raise OSError(f"processes {left} outlived SIGKILL")

    def finish(self) -> None:
        """Nothing to restore."""
