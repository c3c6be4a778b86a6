"""Crashes leave nothing behind, and nothing runs unsupervised (issue 9).

Runners are killed with SIGKILL after their set-up: their primary agent must die with
them, and ``aegis-mcp cleanup`` (or the next root runner) must remove everything they
left: namespaces, veths, nft tables, cgroups with their BPF programs, the processes
still inside, runtime files, markers. Other engineers' runners may be live on this
machine: only what belongs to the pids killed here is counted, and the clean-ups run
here are limited to those pids (``--runner``) wherever the command allows it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from helpers import AEGIS, call, gone, start_aegis, wait_for

if os.geteuid() != 0:
    pytest.skip("killed runners' namespaces and cgroups need root", allow_module_level=True)

from aegis_mcp.netmon.ebpf import attached
from aegis_mcp.netmon.ebpf.availability import cgroup2_mount, ebpf_available
from aegis_mcp.sandbox.netns import nft as nft_module
from aegis_mcp.sandbox.netns.markers import DEFAULT_STATE_DIR

ROUNDS = 5
"""Runners killed of each kind: --sandbox=netns and --netmon=ebpf."""
# The agent leaves a child behind when it dies: it must be killed by the clean-up.
AGENT = ["sh", "-c", "sleep 300 & exec sleep 301"]

needs_netns = pytest.mark.skipif(
    not nft_module.available(), reason="nftables is not installed (apt-get install nftables)"
)
EBPF_OK, EBPF_REASON = ebpf_available()
needs_ebpf = pytest.mark.skipif(not EBPF_OK, reason=f"eBPF monitoring unavailable: {EBPF_REASON}")


class Killed:
    """A runner started, read and killed; what it had made, by its pid."""

    def __init__(self, env: dict[str, str], runtime: Path, mode: str) -> None:
        self.mode = mode
        self.runtime = runtime
        self.proc = start_aegis(["run", "--no-watchdog", mode, "--", *AGENT], env, output=False)
        self.pid = self.proc.pid
        self.agent = 0
        self.child = 0
        self.programs: list[int] = []

    def ready(self) -> None:
        """Wait until the agent and its child run (for eBPF: after the attach)."""
        sock = wait_for(lambda: (s := self.runtime / f"runner-{self.pid}.sock").exists() and s)
        self.agent = wait_for(
            lambda: call(sock, "server_status")["agent"]["pid"], 90, what="the agent to start"
        )
        self.child = wait_for(lambda: _children(self.agent), what="the agent's child")[0]
        if self.mode == "--netmon=ebpf":
            fd = os.open(self.cgroup, os.O_RDONLY | os.O_DIRECTORY)
            try:
                self.programs = [prog for _, prog in attached.attached(fd)]
            finally:
                os.close(fd)
            assert self.programs, "no program attached to the agent's cgroup"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    @property
    def name(self) -> str:
        return f"aegis-{self.pid}"

    @property
    def cgroup(self) -> Path:
        root = cgroup2_mount()
        assert root is not None
        return root / "aegis-mcp" / f"{self.pid}-primary"

    def leftovers(self) -> list[str]:
        """What of this runner is still on the host."""
        found = []
        for pid in (self.agent, self.child):
            if pid and not gone(pid):
                found.append(f"process {pid}")
        found += [p.name for p in self.runtime.glob(f"*-{self.pid}.*")]
        if self.mode == "--sandbox=netns":
            checks = {
                "namespace": Path("/var/run/netns", self.name).exists(),
                "nft table": self.name in _host_tables(),
                "veth": f"aegis-mcp:{self.name}" in _host_aliases(),
                "resolv.conf": Path("/etc/netns", self.name).exists(),
                "marker": (DEFAULT_STATE_DIR / f"{self.name}.json").exists(),
            }
            found += [what for what, there in checks.items() if there]
        else:
            if self.cgroup.exists():
                found.append(f"cgroup {self.cgroup}")
            found += [f"program {p}" for p in self.programs if attached.program_exists(p)]
        return found


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _host_tables() -> set[str]:
    out = subprocess.run(["nft", "-j", "list", "tables"], capture_output=True, text=True).stdout
    items = json.loads(out or "{}").get("nftables", [])
    return {i["table"]["name"] for i in items if "table" in i}


def _host_aliases() -> set[str]:
    aliases = set()
    for link in Path("/sys/class/net").iterdir():
        with contextlib.suppress(OSError):
            aliases.add((link / "ifalias").read_text().strip())
    return aliases


def _cleanup(
    env: dict[str, str], *args: str, command: tuple[str, ...] = ("cleanup",)
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*AEGIS, *command, *args], env=env, capture_output=True, text=True, timeout=120
    )


def _runner_args(killed: list[Killed]) -> list[str]:
    return [arg for k in killed for arg in ("--runner", str(k.pid))]


@needs_netns
@needs_ebpf
def test_killed_runners_leave_nothing_after_cleanup(aegis_env, runtime_dir):
    killed: list[Killed] = []
    try:
        # All started before any is killed: a root runner's start would clean up the
        # ones killed before it (that is tested below), leaving nothing to this command.
        for _ in range(ROUNDS):
            killed += [
                Killed(aegis_env, runtime_dir, m) for m in ("--sandbox=netns", "--netmon=ebpf")
            ]
        for runner in killed:
            runner.ready()
        for runner in killed:
            runner.kill()
        for runner in killed:
            # The primary agent dies with its runner (PR_SET_PDEATHSIG)...
            wait_for(lambda r=runner: gone(r.agent), what=f"agent of {runner.pid} to die")
        # ... its child does not: it is a leftover for the clean-up.
        assert not any(gone(r.child) for r in killed)

        dry = _cleanup(aegis_env, "--dry-run", *_runner_args(killed))
        assert dry.returncode == 0, dry.stderr
        lines = dry.stdout.splitlines()
        assert lines and all(line.startswith("would remove ") for line in lines), dry.stdout
        for runner in killed:
            # Runtime files are private to this test: listed, and not removed by a dry run.
            assert f"runtime_files {runtime_dir}/*-{runner.pid}.* " in dry.stdout
            assert (runtime_dir / f"runner-{runner.pid}.lock").exists()
            if runner.mode == "--netmon=ebpf" and runner.cgroup.exists():
                listed = f"cgroup {runner.cgroup} (runner {runner.pid}; {len(runner.programs)} BPF"
                assert listed in dry.stdout

        result = _cleanup(aegis_env, *_runner_args(killed))
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        # The kernel frees detached programs and a destroyed namespace's veth a moment later.
        wait_for(
            lambda: not any(r.leftovers() for r in killed),
            what="no leftovers: " + "; ".join(f"{r.pid}: {r.leftovers()}" for r in killed),
        )
    finally:
        for runner in killed:
            if runner.proc.poll() is None:
                # A runner that never got ready is still there: it is not a leftover.
                runner.kill()
            for pid in (runner.agent, runner.child):
                if pid and not gone(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        if killed:
            _cleanup(aegis_env, *_runner_args(killed))


@needs_netns
@needs_ebpf
def test_a_root_runner_cleans_up_at_its_start(aegis_env, runtime_dir):
    dead = Killed(aegis_env, runtime_dir, "--netmon=ebpf")
    try:
        dead.ready()
        dead.kill()
        wait_for(lambda: gone(dead.agent), what="the agent to die with its runner")
        assert dead.cgroup.exists() and not gone(dead.child)
        # A plain runner (no netmon, no sandbox) removes it before its own agent starts.
        runner = start_aegis(["run", "--no-watchdog", "--", "sleep", "300"], aegis_env)
        try:
            sock = wait_for(lambda: (s := runtime_dir / f"runner-{runner.pid}.sock").exists() and s)
            wait_for(lambda: call(sock, "server_status")["agent"]["pid"], what="its agent")
            events = call(sock, "events")["events"]
            cleaned = [e["message"] for e in events if e["kind"] == "runner.cleanup"]
            assert any(f"cgroup {dead.cgroup}" in m for m in cleaned), cleaned
            wait_for(lambda: not dead.leftovers(), what=f"no leftovers: {dead.leftovers()}")
        finally:
            runner.terminate()
            runner.wait(timeout=30)
    finally:
        for pid in (dead.agent, dead.child):
            if pid and not gone(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        _cleanup(aegis_env, "--runner", str(dead.pid))


def test_the_agent_dies_with_its_runner_after_a_privilege_drop(
    aegis_env, public_runtime, throwaway_user
):
    import pwd

    entry = pwd.getpwnam(throwaway_user[0])
    env = dict(
        aegis_env,
        SUDO_UID=str(entry.pw_uid),
        SUDO_GID=str(entry.pw_gid),
        SUDO_USER=entry.pw_name,
    )
    proc = start_aegis(["run", "--no-watchdog", "--", "sleep", "300"], env, cwd="/", output=False)
    agent = 0
    try:
        sock = wait_for(lambda: (s := public_runtime / f"runner-{proc.pid}.sock").exists() and s)
        agent = wait_for(lambda: call(sock, "server_status")["agent"]["pid"], what="the agent")
        # The drop happened (a uid change clears the parent-death signal: set after it).
        uids = Path(f"/proc/{agent}/status").read_text().split("Uid:")[1].split()[:3]
        assert uids == [str(entry.pw_uid)] * 3
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        wait_for(lambda: gone(agent), what="the dropped agent to die with its runner")
    finally:
        if agent and not gone(agent):
            os.kill(agent, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_cleanup_dry_run_lists_and_removes_nothing(aegis_env, runtime_dir):
    # Runtime files of a dead runner (a pid that exited) and of a live one.
    live = start_aegis(["run", "--no-watchdog", "--", "sleep", "300"], aegis_env, output=False)
    try:
        sock = wait_for(lambda: (s := runtime_dir / f"runner-{live.pid}.sock").exists() and s)
        # Its own clean-up at start is over once its agent runs.
        wait_for(lambda: call(sock, "server_status")["agent"]["pid"], what="its agent")
        exited = subprocess.Popen(["true"])
        exited.wait()
        stale = runtime_dir / f"state-{exited.pid}.json"
        stale.write_text("{}")
        dry = _cleanup(
            aegis_env, "--dry-run", "--runner", str(exited.pid), "--runner", str(live.pid)
        )
        assert dry.returncode == 0, dry.stderr
        assert f"would remove runtime_files {runtime_dir}/*-{exited.pid}.* " in dry.stdout
        assert f"kept runtime_files {runtime_dir}/*-{live.pid}.*: its runner" in dry.stdout
        # The old name is an alias: the same sweep, not the namespaces alone.
        alias = _cleanup(
            aegis_env,
            "--dry-run",
            "--runner",
            str(exited.pid),
            "--runner",
            str(live.pid),
            command=("netns", "cleanup"),
        )
        assert (alias.returncode, alias.stdout) == (0, dry.stdout), alias.stderr
        assert stale.exists()
        done = _cleanup(aegis_env, "--runner", str(exited.pid), "--runner", str(live.pid))
        assert done.returncode == 0, done.stderr
        assert f"removed runtime_files {runtime_dir}/*-{exited.pid}.* " in done.stdout
        assert not stale.exists()
        assert (runtime_dir / f"runner-{live.pid}.sock").exists()
    finally:
        live.terminate()
        live.wait(timeout=30)


def test_a_restart_loop_stops_at_the_limit(aegis_env, runtime_dir, tmp_path):
    Path(aegis_env["AEGIS_MCP_CONFIG"]).write_text(
        "[runner]\nrestart_limit_burst = 2\nrestart_limit_interval_secs = 600\n"
    )
    stderr = tmp_path / "stderr"
    with stderr.open("w") as sink:
        proc = subprocess.Popen(
            [*AEGIS, "run", "--no-watchdog", "--", "sleep", "300"],
            env=aegis_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        sock = wait_for(lambda: (s := runtime_dir / f"runner-{proc.pid}.sock").exists() and s)
        pid = wait_for(lambda: call(sock, "server_status")["agent"]["pid"], what="the agent")
        for number in (1, 2):
            call(sock, "restart", reason=f"loop {number}")
            pid = wait_for(
                lambda p=pid, n=number: (
                    (a := call(sock, "server_status")["agent"])["restarts"] == n
                    and a["pid"] not in (None, p)
                    and a["pid"]
                ),
                what=f"restart {number}",
            )
        # The third, from the command line, is refused: the agent keeps running.
        refused = subprocess.run(
            [*AEGIS, "restart", str(proc.pid), "--reason", "loop 3"],
            env=aegis_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 2
        assert "restart limit reached: 2 restarts within 600s" in refused.stderr
        status = call(sock, "server_status")["agent"]
        assert status["pid"] == pid and not gone(pid) and status["status"] == "running"
        assert status["restarts"] == 2
        limit = status["restart_limit"]
        assert (limit["burst"], limit["refused"], limit["restarts_in_window"]) == (2, 1, 2)
        assert "restart limit reached" in limit["last_refusal"]
        wait_for(
            lambda: (
                "not restarting the agent (asked by aegis-mcp restart: loop 3)"
                in stderr.read_text()
            ),
            what="the refusal on the runner's stderr",
        )
        events = [e["kind"] for e in call(sock, "events")["events"]]
        assert events.count("agent.restart_limit") == 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)
