"""The sandbox interface and its backends by kind; netmon's choice of sources and their start."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
from pathlib import Path

import pytest

from aegis_mcp.hooks_lib import HooksInfo
from aegis_mcp.netmon.choice import Machine, NetmonPlan, choose_sources, start_sources
from aegis_mcp.netmon.errors import NetmonUnavailable
from aegis_mcp.netmon.netns_view import NetnsView
from aegis_mcp.netmon.preload_log import PreloadSource
from aegis_mcp.netmon.stats import NetmonStats
from aegis_mcp.privileges import resolve_agent_user
from aegis_mcp.processes import AgentProcess, ChildReaper, SpawnSpec
from aegis_mcp.sandbox import get_sandbox, problem
from aegis_mcp.sandbox.base import SandboxRequest
from aegis_mcp.sandbox.container.engine import candidates
from aegis_mcp.sandbox.errors import SandboxUnavailable
from aegis_mcp.sandbox.kinds import SANDBOX_KINDS
from aegis_mcp.sandbox.none import NoSandbox

HOOKS = HooksInfo(path=Path("/opt/hooks/libaegis_hooks.so"), version="1", built="", git="")
WORKS = Machine(hooks=HOOKS, ebpf_problem=None)
NO_EBPF = Machine(hooks=HOOKS, ebpf_problem="needs root")
NOTHING = Machine(hooks=None, ebpf_problem="needs root")


def plan(mode, **kw) -> NetmonPlan:
    return NetmonPlan(mode=mode, runner_pid=1, agent_id="primary", log_file=Path("/l"), **kw)


def names(choice) -> list[str]:
    return [s.name for s in choice.sources]


# ---- sandboxes --------------------------------------------------------------------------------


def test_every_kind_has_a_backend_or_says_why_not() -> None:
    assert SANDBOX_KINDS == ("none", "netns", "container")
    assert problem("none") is None
    # The container backend needs an engine: where none answers, it says so.
    engine_here = bool(candidates(None, os.environ))
    container = problem("container")
    assert container is None if engine_here else "no container engine" in container
    assert "unknown sandbox kind 'vm'" in problem("vm")
    with pytest.raises(SandboxUnavailable, match="unknown sandbox kind 'vm'"):
        get_sandbox("vm", SandboxRequest(os.getpid()))
    none = get_sandbox("none", SandboxRequest(os.getpid()))
    assert isinstance(none, NoSandbox) and none.describe() == {"kind": "none"}
    spec = SpawnSpec(["true"], {}, "/", resolve_agent_user(True), use_pty=False)
    assert none.wrap(spec) is spec and none.teardown() == []


def test_forwarded_signals_reach_the_sandbox_and_the_process() -> None:
    """A backend whose agent lives outside its session (a container) is told every signal
    the runner sends, and the runner's own delivery still happens."""
    forwarded: list[tuple[int, int]] = []

    async def main() -> tuple[int, list[int]]:
        reaper = ChildReaper(asyncio.get_running_loop())
        spec = SpawnSpec(
            [sys.executable, "-c", "import time; time.sleep(60)"],
            dict(os.environ),
            "/",
            resolve_agent_user(True),
            use_pty=False,
            stdin_devnull=True,
            forward_signal=lambda pid, sig: forwarded.append((pid, sig)),
        )
        with open(os.devnull, "wb") as sink:
            proc = AgentProcess(spec, reaper, lambda _data: None, sink.fileno(), sink.fileno())
            code = await proc.stop(0.5, (signal.SIGTERM,))
            await proc.cleanup()
        reaper.close()
        return proc.pid, [code]

    pid, codes = asyncio.run(main())
    assert forwarded[0] == (pid, signal.SIGTERM)
    assert codes == [128 + signal.SIGTERM]


# ---- netmon sources ---------------------------------------------------------------------------


def test_best_available_is_ebpf_then_the_sandbox_then_preload() -> None:
    assert names(choose_sources(plan("auto"), WORKS)) == ["ebpf"]
    assert names(choose_sources(plan("auto", sandboxed=True), WORKS)) == ["netns", "ebpf"]
    sandboxed = choose_sources(plan("auto", sandboxed=True), NO_EBPF)
    assert names(sandboxed) == ["netns"]
    assert sandboxed.reason == "--netmon: eBPF unavailable (needs root); using the sandbox's view"
    plain = choose_sources(plan("auto"), NO_EBPF)
    assert names(plain) == ["preload"] and plain.mode == "preload"
    assert plain.reason == "--netmon: eBPF unavailable (needs root); using preload"
    # Asked for eBPF by name, the fallback is the same (the line says so, and it is so).
    assert names(choose_sources(plan("ebpf"), NO_EBPF)) == ["preload"]


def test_asked_for_modes_and_what_is_missing() -> None:
    assert names(choose_sources(plan("preload"), WORKS)) == ["preload"]
    assert names(choose_sources(plan("netns", sandboxed=True), WORKS)) == ["netns"]
    assert choose_sources(plan(None), WORKS).mode == "off"
    # A sandbox is watched even without --netmon: its view costs nothing.
    assert names(choose_sources(plan(None, sandboxed=True), NOTHING)) == ["netns"]
    off = choose_sources(plan("preload"), NOTHING)
    assert off.mode == "off"
    assert off.reason == (
        "--netmon: the hooks library was not found (run `make build`); preload monitoring is off"
    )
    nothing = choose_sources(plan("auto"), NOTHING)
    assert nothing.mode == "off" and "eBPF unavailable (needs root)" in nothing.reason
    assert nothing.reason.endswith("monitoring is off")


def test_a_policy_without_a_sandbox_needs_ebpf() -> None:
    from aegis_mcp.sandbox.policy import Policy

    policy = Policy(deny=("10.0.0.0/8",))
    assert names(choose_sources(plan("ebpf", policy=policy), WORKS)) == ["ebpf"]
    with pytest.raises(NetmonUnavailable, match=r"--allow/--deny need eBPF.*needs root"):
        choose_sources(plan("ebpf", policy=policy), NO_EBPF)


def test_started_sources_feed_the_stats(tmp_path: Path) -> None:
    log = tmp_path / "netmon.jsonl"
    stats = NetmonStats()
    netmon = dataclasses.replace(plan("preload", sandboxed=True), log_file=log)
    choice = start_sources(netmon, NO_EBPF, stats)
    view, preload = choice.sources
    assert isinstance(view, NetnsView) and isinstance(preload, PreloadSource)
    assert stats.mode == "netns+preload"
    view.sink({"event": "connect", "source": "netns", "pid": 7})
    log.write_text('{"event": "send", "source": "preload", "pid": 8, "bytes": 5}\n')
    preload.poll()
    status = stats.status()
    assert status["events_by_source"] == {"netns": 1, "preload": 1}
    assert status["bytes_sent"] == 5
    spec = SpawnSpec(["true"], {"LD_PRELOAD": "/other.so"}, "/", resolve_agent_user(True), False)
    env = preload.prepare(spec).env
    assert env["LD_PRELOAD"] == f"{HOOKS.path} /other.so"
    assert env["AEGIS_NETMON_LOG"] == str(log)
    view.stop()
    view.sink({"event": "connect", "source": "netns"})
    assert view.describe() == {"events": 1, "dropped": 1}
