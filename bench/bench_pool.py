"""Agent pool benchmarks (picked up by bench/run.py).

  pool-spawn  agent_spawn -> the stand-in agent's process running (its start-up
              report written), median, vs the same command started directly
              with subprocess; and the agent_spawn call itself
  pool-scale  CPU and resident memory of a runner-like host (an asyncio loop
              with a pool on an SQLite state directory) with 10, 50 and 100
              quiet stand-in agents running, vs the same host with none; and
              the host's CPU per agent to start them (CPU figures are counted
              in clock ticks of 10 ms: a quick run shows 0.00 below one tick)

  pool-netns  through a runner (root): agent_spawn -> the agent running, with
              sandbox="netns" (a namespace kept ready is claimed) against
              sandbox="none", alternating, medians; target netns <= none + 5 ms

The scale host is this file run as a script (``bench_pool.py host STATE N``), so
that its own CPU and memory are measured, not the benchmark driver's.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from run import Row, _env, _ms, _wait

if TYPE_CHECKING:
    from aegis_mcp.pool import AgentPool, PoolStore
    from aegis_mcp.processes import ChildReaper

QUIET = "/scenario quiet"
SCALE_COUNTS = (10, 50, 100)


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _make_pool(
    state: Path, max_agents: int, env: dict[str, str]
) -> tuple[AgentPool, ChildReaper, PoolStore]:
    """A pool like the runner's (its reaper, a store on ``state``) for demo agents."""
    from aegis_mcp.agents.profiles import BUILTIN_PROFILES
    from aegis_mcp.pool import AgentPool, PoolStore
    from aegis_mcp.privileges import resolve_agent_user
    from aegis_mcp.processes import ChildReaper

    reaper = ChildReaper(asyncio.get_running_loop())
    store = PoolStore.open(state)
    pool = AgentPool(
        BUILTIN_PROFILES,
        reaper,
        max_agents=max_agents,
        user=resolve_agent_user(keep_root=True),
        env_for=lambda agent_id: {**env, "AEGIS_MCP_AGENT_ID": agent_id},
        mcp_config=None,
        log_dir=state / "pool-logs",
        default_cwd=str(state),
        stop_grace=1.0,
        store=store,
    )
    return pool, reaper, store


def _direct_argv() -> list[str]:
    """The command line the pool gives a demo agent for the quiet task."""
    from aegis_mcp.agents.command import LaunchOptions, build_argv, headless_task_args
    from aegis_mcp.agents.profiles import BUILTIN_PROFILES
    from aegis_mcp.privileges import resolve_agent_user

    profile = BUILTIN_PROFILES["demo"]
    user = resolve_agent_user(keep_root=True)
    launch = LaunchOptions(
        executable=sys.executable,
        mcp_config=None,
        mcp_server=None,
        skip_permissions=profile.skips_permissions(user.is_root),
    )
    return build_argv(profile, launch, headless_task_args(profile, QUIET, None))


async def _pool_spawns(
    tmp: Path, env: dict[str, str], report: Path, runs: int
) -> tuple[list[float], list[float]]:
    """(spawn -> running, spawn call) durations of ``runs`` pool agents, one at a time."""
    pool, reaper, store = _make_pool(tmp / "state", 4, env)
    latencies, calls = [], []
    try:
        for _ in range(runs):
            before = _lines(report)
            t0 = time.perf_counter()
            spawned = await pool.spawn(QUIET, agent_type="demo")
            calls.append(time.perf_counter() - t0)
            while _lines(report) <= before:
                await asyncio.sleep(0.001)
            latencies.append(time.perf_counter() - t0)
            await pool.stop(spawned["agent_id"])
    finally:
        await pool.shutdown()
        reaper.close()
        store.close()
    return latencies, calls


def bench_pool_spawn(tmp: Path, quick: bool) -> list[Row]:
    """Time from agent_spawn to the agent process running, vs starting it directly."""
    env = _env(tmp)
    report = tmp / "report.jsonl"
    env["AEGIS_DEMO_REPORT"] = str(report)
    runs = 7 if quick else 30
    argv = _direct_argv()
    direct = []
    for _ in range(runs):
        before = _lines(report)
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait(lambda before=before: _lines(report) > before)
        direct.append(time.perf_counter() - t0)
        proc.kill()
        proc.wait()
    pooled, calls = asyncio.run(_pool_spawns(tmp, env, report, runs))
    med, base, call = (statistics.median(v) for v in (pooled, direct, calls))
    return [
        (
            f"pool-spawn: agent_spawn -> agent running (median of {runs})",
            _ms(med),
            f"subprocess.Popen, same command: {_ms(base)}",
            f"x{med / base:.2f} (+{_ms(med - base)})",
        ),
        (
            "pool-spawn: the agent_spawn call (SQLite write-through, fork/exec)",
            _ms(call),
            f"agent start-up: {_ms(base)}",
            f"{100 * call / base:.1f}% of it",
        ),
    ]


def _measure_host(tmp: Path, env: dict[str, str], count: int, seconds: float) -> dict[str, float]:
    """CPU and RSS of a host process with ``count`` quiet agents, over ``seconds``."""
    import psutil

    state = tmp / f"state-{count}"
    host = subprocess.Popen(
        [sys.executable, __file__, "host", str(state), str(count)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert host.stdout is not None and host.stdin is not None
        ready = json.loads(host.stdout.readline())
        proc = psutil.Process(host.pid)
        # Settle: the agents' start-up output has been read and saved.
        time.sleep(1.5)
        t0, w0 = proc.cpu_times(), time.perf_counter()
        time.sleep(seconds)
        t1, wall = proc.cpu_times(), time.perf_counter() - w0
        rss = proc.memory_info().rss
        host.stdin.write("stop\n")
        host.stdin.flush()
        host.wait(120)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
    cpu = ((t1.user + t1.system) - (t0.user + t0.system)) / wall
    return {
        "cpu": 100 * cpu,
        "rss": rss / 2**20,
        "start": ready["start_secs"],
        "start_cpu": ready["start_cpu"],
    }


def bench_pool_scale(tmp: Path, quick: bool) -> list[Row]:
    """The host's CPU and memory with 10, 50, 100 quiet pool agents, vs none."""
    env = _env(tmp)
    seconds = 3.0 if quick else 15.0
    base = _measure_host(tmp, env, 0, seconds)
    rows: list[Row] = []
    baseline = f"0 agents: {base['cpu']:.2f}% cpu, {base['rss']:.1f} MB"
    for count in SCALE_COUNTS:
        m = _measure_host(tmp, env, count, seconds)
        rows.append(
            (
                f"pool-scale: host with {count} quiet agents ({seconds:g}s)",
                f"{m['cpu']:.2f}% cpu, {m['rss']:.1f} MB rss",
                baseline,
                f"+{m['cpu'] - base['cpu']:.2f} pts, +{m['rss'] - base['rss']:.1f} MB "
                f"({(m['rss'] - base['rss']) * 1024 / count:.0f} kB/agent); all running "
                f"after {m['start']:.1f} s, host CPU {_ms(m['start_cpu'] / count)}/agent to start",
            )
        )
    return rows


async def _host(state: Path, count: int) -> None:
    """Run ``count`` quiet agents until told to stop on stdin."""
    loop = asyncio.get_running_loop()
    pool, reaper, store = _make_pool(state, max(count, 1), dict(os.environ))
    t0, c0 = time.perf_counter(), time.process_time()
    ids = [(await pool.spawn(QUIET, agent_type="demo"))["agent_id"] for _ in range(count)]
    # Running and past start-up: each has printed its init event.
    while not all(pool.status(i)["output_bytes"] > 0 for i in ids):
        await asyncio.sleep(0.05)
    ready = {"start_secs": time.perf_counter() - t0, "start_cpu": time.process_time() - c0}
    print(json.dumps(ready), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    await pool.shutdown()
    reaper.close()
    store.close()


def _spawn_running(client, report: Path, sandbox: str) -> float:
    """agent_spawn through the runner's socket until the agent wrote its start-up report."""
    before = _lines(report)
    t0 = time.perf_counter()
    spawned = client.call("agent_spawn", description=QUIET, agent_type="demo", sandbox=sandbox)
    _wait(lambda: _lines(report) > before)
    elapsed = time.perf_counter() - t0
    client.call("agent_stop", agent_id=spawned["agent_id"])
    return elapsed


def bench_pool_netns(tmp: Path, quick: bool) -> list[Row]:
    """A pool agent's start in a netns sandbox against its start on the host."""
    name = "pool-netns: agent_spawn(sandbox=netns) -> agent running"
    if os.geteuid() != 0:
        return [(name, "skipped", "needs root", "run `sudo make bench`")]
    from aegis_mcp.control.client import ControlClient
    from run import _start_runner

    env = _env(tmp)
    report = tmp / "report.jsonl"
    env["AEGIS_DEMO_REPORT"] = str(report)
    runs = 6 if quick else 25
    runner, sock = _start_runner(
        ["demo", "--no-watchdog", "--no-inject-mcp", "--scenario", "quiet"], env, tmp
    )
    host, netns = [], []
    try:
        _wait(lambda: _lines(report) >= 1)
        with ControlClient(sock) as client:

            def warm_ready() -> bool:
                status = client.call("server_status")["sandbox"]
                return status.get("warm_namespaces", {}).get("ready", 0) >= 1

            _spawn_running(client, report, "netns")  # the first starts the warm pool
            for _ in range(runs):
                _wait(warm_ready)
                time.sleep(0.2)  # the last agent's teardown and the refill are done
                netns.append(_spawn_running(client, report, "netns"))
                time.sleep(0.2)
                host.append(_spawn_running(client, report, "none"))
    finally:
        runner.terminate()
        runner.wait()
    med_netns, med_host = statistics.median(netns), statistics.median(host)
    delta = med_netns - med_host
    return [
        (
            f"{name} (median of {runs} pairs)",
            _ms(med_netns),
            f'sandbox="none" (host spawn): {_ms(med_host)}',
            f"+{_ms(delta)} (target <= +5 ms: {'met' if delta <= 0.005 else 'NOT met'})",
        )
    ]


BENCHES = {
    "pool-spawn": bench_pool_spawn,
    "pool-scale": bench_pool_scale,
    "pool-netns": bench_pool_netns,
}

if __name__ == "__main__" and sys.argv[1:2] == ["host"]:
    asyncio.run(_host(Path(sys.argv[2]), int(sys.argv[3])))
