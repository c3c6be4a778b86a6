"""Benchmarks of the clean-up of what dead runners left (root only; rows say so otherwise).

cleanup-start  what every root runner's start pays to look for leftovers when there are
               none (the sweep with its imports, in an interpreter that has the runner's
               imports already), next to a whole `aegis-mcp run -- true` start
cleanup-sweep  `aegis-mcp cleanup` removing dead runners' cgroups, each with a process in
               it, next to the same command with nothing to remove (the cost per leftover)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from run import AEGIS, REPO, Row, _env, _median_time, _ms

MEASURE_START = """
import time, aegis_mcp.runner.supervisor
t = time.perf_counter()
from aegis_mcp.cleanup.sweep import sweep
sweep(quick=True)
print(time.perf_counter() - t)
"""


def _needs_root(name: str) -> list[Row] | None:
    if os.geteuid() != 0:
        return [(name, "skipped", "needs root", "run `sudo make bench`")]
    return None


def bench_start(tmp: Path, quick: bool) -> list[Row]:
    """The start's sweep against the whole start."""
    if skipped := _needs_root("cleanup-start"):
        return skipped
    env = _env(tmp)
    runs = 5 if quick else 15
    sweeps = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", MEASURE_START], env=env, capture_output=True, text=True
        )
        sweeps.append(float(out.stdout))
    sweep = statistics.median(sweeps)
    start = _median_time([*AEGIS, "run", "--no-watchdog", "--", "true"], env, runs)
    return [
        (
            "cleanup-start: sweep, nothing left",
            _ms(sweep),
            f"run -- true: {_ms(start)}",
            f"{sweep / start:.1%} of a root start",
        )
    ]


def _dead_cgroups(count: int) -> tuple[list[int], list[subprocess.Popen]]:
    """``count`` cgroups of runners that exited, each with a sleeping process in it."""
    sys.path.insert(0, str(REPO / "runner"))
    from aegis_mcp.netmon.ebpf.availability import cgroup2_mount
    from aegis_mcp.netmon.ebpf.cgroup import AgentCgroup

    root = cgroup2_mount()
    assert root is not None
    owners, sleepers = [], []
    for _ in range(count):
        owner = subprocess.Popen(["sleep", "600"])
        cgroup = AgentCgroup(root, owner.pid, "primary")
        sleepers.append(subprocess.Popen(["sleep", "600"], preexec_fn=cgroup.join_step()))
        owner.kill()
        owner.wait()
        owners.append(owner.pid)
    return owners, sleepers


def bench_sweep(tmp: Path, quick: bool) -> list[Row]:
    """`aegis-mcp cleanup` of N dead runners' cgroups against one with nothing to do."""
    if skipped := _needs_root("cleanup-sweep"):
        return skipped
    env = _env(tmp)
    count = 3 if quick else 10
    empty = _median_time([*AEGIS, "cleanup", "--runner", "1"], env, 3 if quick else 7)
    owners, sleepers = _dead_cgroups(count)
    try:
        t0 = time.perf_counter()
        args = [arg for pid in owners for arg in ("--runner", str(pid))]
        subprocess.run([*AEGIS, "cleanup", *args], env=env, capture_output=True, check=True)
        full = time.perf_counter() - t0
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()
    return [
        (
            f"cleanup-sweep: {count} dead cgroups",
            _ms(full),
            f"nothing to do: {_ms(empty)}",
            f"+{_ms((full - empty) / count)} per cgroup (kill, detach, rmdir)",
        )
    ]


BENCHES: dict[str, Callable[[Path, bool], list[Row]]] = {
    "cleanup-start": bench_start,
    "cleanup-sweep": bench_sweep,
}
