"""How the netmon sources prove what they see (netmon/coverage.py, preload_check.py, the
eBPF attach check): verdicts per process from real processes' /proc and the kernel."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aegis_mcp.netmon.coverage import Coverage, CoverageBook, KernelSocket, ProcessView
from aegis_mcp.netmon.preload_check import (
    FLUSH_BYTES,
    HookedConnections,
    PreloadCheck,
    is_static,
    library_mapped,
)
from aegis_mcp.netmon.stats import NetmonStats
from helpers import wait_for

SOCK = KernelSocket(inode=77, local_port=40000, remote="127.0.0.1:8080", written=100, read=20)


def _connect(connections: HookedConnections, **extra) -> None:
    base = {"proto": "tcp", "local_port": 40000, "remote_addr": "127.0.0.1", "remote_port": 8080}
    connections.note({**base, **extra})


@pytest.fixture
def hooks(built_hooks: Path) -> Path:
    return built_hooks


@contextlib.contextmanager
def sleeper(env: dict[str, str] | None = None):
    """A process that waits (with ``env``), killed after."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "up\n"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_not_seen_stays_and_the_line_says_what_and_why() -> None:
    book = CoverageBook()
    assert book.verdict() == "unknown"
    seen = Coverage(1, "claude", True, None)
    assert seen.verdict == "unknown" and seen.line() == "claude: connects seen, no bytes yet"
    assert book.update("preload", [seen]) == [seen]
    partial = Coverage(1, "claude", True, False, "raw syscalls", ("1.2.3.4:443",))
    assert [c.verdict for c in book.update("preload", [partial])] == ["partial"]
    # A later look that sees bytes does not undo what was missed.
    assert book.update("preload", [Coverage(1, "claude", True, True)]) == []
    assert book.verdict() == "partial"
    (entry,) = book.status("use --netmon=ebpf")["processes"]
    assert entry["line"] == "claude: connects seen, bytes not: raw syscalls; use --netmon=ebpf"
    assert entry["sources"] == {"preload": "partial"}
    assert book.bytes_unknown() == ({1}, {"1.2.3.4:443"}) and book.missed_bytes("preload")
    # Another source that sees the bytes makes them known.
    book.update("ebpf", [Coverage(1, "claude", True, True)])
    assert book.bytes_unknown() == (set(), set()) and book.verdict() == "full"
    assert not book.missed_bytes("ebpf")
    blind = Coverage(2, "codex", False, False, "statically linked: LD_PRELOAD cannot load into it")
    assert blind.line() == "codex: not seen: statically linked: LD_PRELOAD cannot load into it"


def test_unknown_bytes_read_none_not_zero() -> None:
    stats = NetmonStats()
    for event in ("connect", "send"):
        stats.ingest(
            {"event": event, "pid": 5, "remote_addr": "10.0.0.1", "remote_port": 443, "bytes": 9}
        )
    stats.ingest({"event": "recv", "pid": 6, "remote_addr": "10.0.0.2", "remote_port": 80})
    assert stats.received_by({5}) == 0
    stats.set_unknown({5}, {"10.0.0.1:443"}, totals=True)
    status = stats.status()
    assert status["bytes_sent"] is None and status["bytes_received"] is None
    assert status["bytes_counted"] == {"sent": 9, "received": 0}
    by_pid = {p["pid"]: p for p in status["processes"]}
    assert by_pid[5]["bytes_sent"] is None and by_pid[6]["bytes_received"] == 0
    targets = {t["target"]: t for t in stats.targets()}
    assert targets["10.0.0.1:443"]["bytes_sent"] is None
    assert targets["10.0.0.2:80"]["bytes_received"] == 0
    assert stats.received_by({5}) is None and stats.received_by({6}) == 0
    stats.set_unknown({5}, set(), totals=False)
    assert stats.status()["bytes_sent"] == 9


def test_preload_judges_a_socket_only_when_two_looks_agree(hooks: Path) -> None:
    connections = HookedConnections()
    with sleeper({**os.environ, "LD_PRELOAD": str(hooks)}) as pid:
        assert library_mapped(pid, hooks) is True
        check = PreloadCheck(hooks, connections)
        view = [ProcessView(pid, "agent", (SOCK,))]
        # A socket with traffic and no line: not judged at once (a line may be on its way)...
        (first,) = check.check(view, log_written=True)
        assert (first.connects, first.bytes) == (None, None)
        # ...judged at the second look.
        (second,) = check.check(view, log_written=True)
        assert (second.connects, second.bytes, second.reason) == (False, False, "raw syscalls")
        # The connect logged, the bytes not: partial.
        _connect(connections, event="connect", result=0)
        check.check(view, log_written=True)
        (partial,) = check.check(view, log_written=True)
        assert (partial.connects, partial.bytes, partial.verdict) == (True, False, "partial")
        assert partial.unseen == ("127.0.0.1:8080",)
        # Both ways logged: seen.
        _connect(connections, event="send", bytes=100)
        _connect(connections, event="recv", bytes=20)
        (full,) = check.check(view, log_written=True)
        assert full.verdict == "full" and full.reason is None
        # A log nobody writes says so.
        quiet = PreloadCheck(hooks, HookedConnections())
        quiet.check(view, log_written=False)
        (silent,) = quiet.check(view, log_written=False)
        assert silent.reason == "the hooks are loaded but write nothing to the log"


def test_a_library_without_first_bytes_is_judged_only_by_a_flush_of_difference(
    hooks: Path,
) -> None:
    connections = HookedConnections()
    _connect(connections, event="connect", result=0)
    with sleeper({**os.environ, "LD_PRELOAD": str(hooks)}) as pid:
        check = PreloadCheck(hooks, connections, first_bytes=False)
        small = [ProcessView(pid, "agent", (SOCK,))]
        check.check(small, log_written=True)
        assert check.check(small, log_written=True)[0].bytes is True
        big = KernelSocket(77, 40000, "127.0.0.1:8080", written=FLUSH_BYTES + 101, read=0)
        check.check([ProcessView(pid, "agent", (big,))], log_written=True)
        (late,) = check.check([ProcessView(pid, "agent", (big,))], log_written=True)
        assert late.bytes is False


def test_a_process_without_the_library_is_blind_and_says_why(hooks: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    with sleeper(env) as pid:
        assert library_mapped(pid, hooks) is False
        check = PreloadCheck(hooks, HookedConnections())
        assert check.check([ProcessView(pid, "python")], log_written=True) == []
        (blind,) = check.check([ProcessView(pid, "python")], log_written=True)
    assert (blind.verdict, blind.reason) == ("blind", "started without LD_PRELOAD")
    assert library_mapped(2**22 + 7, hooks) is None  # no such process: cannot tell


def test_static_executables_are_told_apart(tmp_path: Path) -> None:
    assert not is_static(sys.executable) and not is_static("/bin/true")
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("needs a C compiler")
    (tmp_path / "s.c").write_text("int main(void) { return 0; }\n")
    built = subprocess.run(
        [cc, "-static", "-o", str(tmp_path / "s"), str(tmp_path / "s.c")], capture_output=True
    )
    if built.returncode != 0:
        pytest.skip(f"no static libc to link with: {built.stderr.decode()[-200:]}")
    assert is_static(str(tmp_path / "s"))
    assert not is_static(str(tmp_path / "s.c"))


# ---- eBPF: the kernel shows the programs attached --------------------------------------------


def test_ebpf_proves_its_programs_are_attached_to_the_agents_cgroup() -> None:
    from aegis_mcp.netmon.ebpf import ebpf_available
    from aegis_mcp.netmon.ebpf.source import EbpfSource

    ok, why = ebpf_available()
    if not ok:
        pytest.skip(f"eBPF unavailable: {why}")
    source = EbpfSource(os.getpid(), "cov", None)
    source.start(NetmonStats())
    monitor = source.monitor
    assert monitor is not None
    try:
        with sleeper() as inside, sleeper() as outside:
            monitor.cgroup.add(inside)
            views = [ProcessView(inside, "in"), ProcessView(outside, "out")]
            assert monitor.attach_problems() == []
            got = {c.pid: c for c in source.check(views)}
            assert got[inside].verdict == "full"
            assert (got[outside].verdict, got[outside].reason) == (
                "blind",
                "outside the agent's cgroup",
            )
            # Detached behind the monitor's back: the kernel's answer is what counts.
            from aegis_mcp.netmon.ebpf.loader import detach_cgroup_program

            assert monitor._bpf is not None
            name, prog_fd, attach_type = monitor._bpf.cgroup_attachments()[0]
            detach_cgroup_program(monitor._cgroup_fd, prog_fd, attach_type)
            assert monitor.attach_problems() == [name]
            (again, _) = source.check(views)
            assert again.verdict == "blind" and "not attached" in again.reason
            os.kill(inside, signal.SIGKILL)
    finally:
        wait_for(lambda: not monitor.cgroup_pids(), what="the cgroup to empty")
        source.stop()


# ---- the dashboard shows it ------------------------------------------------------------------


def test_the_dashboard_says_what_the_source_cannot_see_and_shows_no_zero_for_it():
    import asyncio
    import json

    from aegis_mcp.dashboard.app import DashboardApp
    from test_dashboard import screen_text
    from test_dashboard_screens import NOW, STATE, ReplayLink

    message = json.loads(STATE.read_text())
    state = message["state"]
    line = "rawsend: connects seen, bytes not: raw syscalls; use --netmon=ebpf"
    process = {"pid": 7, "comm": "rawsend", "verdict": "partial", "connects": True}
    process.update(bytes=False, reason="raw syscalls", line=line, sources={"preload": "partial"})
    state["netmon"]["coverage"] = {
        "verdict": "partial",
        "checks": 3,
        "hint": "use --netmon=ebpf",
        "processes": [process],
        "error": None,
    }
    stats = state["netmon_stats"]
    stats["bytes_sent"] = stats["bytes_received"] = None
    for target in stats["top_targets"]:
        target["bytes_sent"] = None

    async def main() -> str:
        app = DashboardApp(clock=lambda: NOW, link=ReplayLink([message]))
        async with app.run_test(size=(160, 48)) as pilot:
            for _ in range(3):
                await pilot.pause()
            return screen_text(app)

    text = asyncio.run(main())
    assert "! rawsend: connects seen, bytes not: raw syscalls" in text
    assert "↑- ↓-" in text
