"""--sandbox=container: the stand-in agent in real containers, rootful and rootless.

Three real engines (tests/engines.py): rootful podman and Debian's Docker
Engine, each driven as root for a sudo user (a throwaway account), and a plain
user's rootless podman driven by that user with no privileges at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

from engines import TestEngine, as_user, host_address, own_dir, user_env
from helpers import AEGIS, call, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the container tests start engines")
TIMEOUT = 120


def _host_ns(kind: str) -> str:
    return os.readlink(f"/proc/self/ns/{kind}")


class Project:
    """A project directory, config and environment for runs of one engine by one user."""

    def __init__(self, engine: TestEngine, user: pwd.struct_passwd, sudo: bool) -> None:
        self.engine = engine
        self.user = user
        self.sudo = sudo
        self.base = Path(tempfile.mkdtemp(prefix="aegis-ctest-"))
        os.chmod(self.base, 0o755)
        self.dir = own_dir(self.base / "project", user)
        owner = user if not sudo else None
        for name in ("run", "state"):
            own_dir(self.base / name, owner, 0o700)
        self.config = self.base / "config.toml"
        self.config.write_text(f'[container]\nengine = "{engine.url}"\n')
        self.report = self.dir / "report.jsonl"

    def env(self, **extra: str) -> dict[str, str]:
        env = user_env(self.user, self.base, AEGIS_DEMO_REPORT=str(self.report), **extra)
        if self.sudo:
            env.update(
                HOME="/root",
                USER="root",
                SUDO_UID=str(self.user.pw_uid),
                SUDO_GID=str(self.user.pw_gid),
                SUDO_USER=self.user.pw_name,
            )
            del env["XDG_RUNTIME_DIR"]
        return env

    def popen(self, argv: list[str], stdin: Any = subprocess.DEVNULL, **extra: str):
        drop = {} if self.sudo else as_user(self.user)
        return subprocess.Popen(
            [*AEGIS, *argv],
            env=self.env(**extra),
            cwd=self.dir,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **drop,
        )

    def run(self, argv: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
        proc = self.popen(argv, **extra)
        out, err = proc.communicate(timeout=TIMEOUT)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    @property
    def runtime(self) -> Path:
        return self.base / "run"

    def socket(self) -> Path:
        return wait_for(
            lambda: next(iter(self.runtime.glob("runner-*.sock")), None), TIMEOUT, what="socket"
        )

    def reports(self) -> list[dict[str, Any]]:
        if not self.report.exists():
            return []
        return [json.loads(line) for line in self.report.read_text().splitlines() if line]

    def close(self) -> None:
        self.engine.remove_volumes(self.user.pw_name)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(params=["podman", "docker", "rootless"])
def project(request, throwaway_user):
    """A project for each engine: rootful ones driven for a sudo user, rootless by the user."""
    engine: TestEngine = request.getfixturevalue(f"{request.param}_engine")
    if engine.rootless:
        assert engine.user is not None
        made = Project(engine, engine.user, sudo=False)
    else:
        made = Project(engine, pwd.getpwnam(throwaway_user[0]), sudo=True)
    try:
        yield made
    finally:
        made.close()


def test_the_agent_runs_in_its_own_container_and_writes_as_the_user(project: Project) -> None:
    scenario = "tool:server_status;write:made-inside.txt:hello;exit:0"
    result = project.run(["demo", "--sandbox=container", "--no-watchdog", "--scenario", scenario])
    assert result.returncode == 0, result.stderr
    report = project.reports()[0]
    # Its own network, mount, pid and cgroup namespaces.
    for kind in ("net", "mnt", "pid", "cgroup"):
        assert report["namespaces"][kind] != _host_ns(kind), kind
    # In the project, at the same path, as the invoking user; IS_SANDBOX only in there.
    assert report["cwd"] == str(project.dir)
    assert report["uid"] == project.user.pw_uid
    assert report["env"]["IS_SANDBOX"] == "1"
    assert report["env"]["HOME"] == project.user.pw_dir
    made = project.dir / "made-inside.txt"
    assert made.read_text() == "hello"
    assert (made.stat().st_uid, made.stat().st_gid) == (project.user.pw_uid, project.user.pw_gid)
    # The MCP server inside reached the runner: server_status names the runner's pid.
    assert "aegis-mcp" in report["mcp_servers"]
    status = json.loads(result.stdout.split("tool server_status -> ", 1)[1].split("\nwrote")[0])
    runner_pid = status["runner"]["pid"]
    assert status["sandbox"]["kind"] == "container"
    primary = status["sandbox"]["sandboxes"]["primary"]
    assert primary["engine"]["rootless"] is project.engine.rootless
    assert primary["container"]["running"] is True
    # The runner has exited: its containers are gone, and so is its namespace.
    assert project.engine.containers_of(runner_pid) == []
    assert not Path(f"/var/run/netns/aegis-{runner_pid}").exists()


def test_the_exit_code_comes_back_however_the_output_ends(project: Project) -> None:
    run = ["run", "--sandbox=container", "--no-watchdog", "--"]
    ended = project.run([*run, "sh", "-c", "echo out; echo err >&2; exit 7"])
    assert ended.returncode == 7, ended.stderr
    assert "out" in ended.stdout and "err" in ended.stderr
    # Its output closed while it still runs: the code comes from the engine's own wait.
    early = project.run([*run, "sh", "-c", "exec >&- 2>&-; sleep 0.7; exit 5"])
    assert early.returncode == 5, early.stderr


@pytest.fixture(params=["podman", "docker"])
def rootful(request, throwaway_user):
    """A project on each rootful engine, driven as root for a sudo user."""
    engine: TestEngine = request.getfixturevalue(f"{request.param}_engine")
    made = Project(engine, pwd.getpwnam(throwaway_user[0]), sudo=True)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def rootless(rootless_engine):
    """A project on the rootless test user's podman, driven by that user."""
    made = Project(rootless_engine, rootless_engine.user, sudo=False)
    try:
        yield made
    finally:
        made.close()


class Server:
    """A TCP server on this machine's address: reads to EOF, answers ``reply`` bytes."""

    def __init__(self, reply: int) -> None:
        self.sock = socket.create_server((host_address(), 0))
        self.host, self.port = self.sock.getsockname()[:2]
        self.received: list[int] = []
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                total = 0
                while chunk := conn.recv(65536):
                    total += len(chunk)
                self.received.append(total)
                conn.sendall(b"r" * self.reply)

    def close(self) -> None:
        self.sock.close()


def _demo(project: Project, scenario: str, *flags: str) -> subprocess.Popen:
    """The stand-in agent in a container, with no watchdog and no MCP server."""
    argv = ["demo", "--sandbox=container", *flags, "--no-watchdog", "--no-inject-mcp"]
    return project.popen([*argv, "--scenario", scenario])


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=TIMEOUT)
    return out


def _netmon_events(sock: Path) -> list[dict[str, Any]]:
    return call(sock, "netmon_log", count=1000)["events"]


def _flow_bytes(events: list[dict[str, Any]], port: int, kind: str, source: str) -> int:
    return sum(
        e.get("bytes") or 0
        for e in events
        if e["event"] == kind and e.get("remote_port") == port and e.get("source") == source
    )


def _bytes_both_ways(sock: Path, port: int, source: str, reply: int) -> tuple[int, int]:
    """(sent, received) to ``port`` as ``source`` counted them, once ``reply`` bytes are in."""
    wait_for(
        lambda: _flow_bytes(_netmon_events(sock), port, "recv", source) >= reply,
        TIMEOUT,
        what=f"the reply's bytes from {source}",
    )
    seen = _netmon_events(sock)
    return _flow_bytes(seen, port, "send", source), _flow_bytes(seen, port, "recv", source)


def test_policy_and_exact_bytes_for_a_rootful_container(rootful: Project) -> None:
    allowed, denied = Server(reply=1234), Server(reply=1)
    host = allowed.host
    scenario = f"connect:{host}:{allowed.port}:5000;connect:{host}:{denied.port}:10;quiet"
    proc = _demo(
        rootful,
        scenario,
        "--netmon=ebpf",
        f"--allow={host}:{allowed.port}",
        f"--deny={host}:{denied.port}",
    )
    try:
        sock = rootful.socket()
        assert wait_for(lambda: allowed.received, TIMEOUT, what="the allowed connection") == [5000]

        def events() -> list[dict[str, Any]]:
            return _netmon_events(sock)

        blocked = wait_for(
            lambda: [e for e in events() if e["event"] == "blocked"], TIMEOUT, what="blocked"
        )
        assert blocked[0]["remote_addr"] == host and blocked[0]["remote_port"] == denied.port
        assert blocked[0]["rule"] == f"deny {host}:{denied.port}"
        # eBPF on the container's cgroup counts payload bytes exactly, both ways.
        assert _bytes_both_ways(sock, allowed.port, "ebpf", 1234) == (5000, 1234)
        status = call(sock, "server_status")
        assert status["netmon"]["mode"] == "netns+ebpf"
        network = status["sandbox"]["sandboxes"]["primary"]["network"]
        assert network["mode"] == "netns"
    finally:
        out = _stop(proc)
        allowed.close()
        denied.close()
    assert f"connect {host}:{allowed.port} ok sent=5000 recv=1234" in out
    assert f"connect {host}:{denied.port} error" in out
    assert denied.received == []


def test_preload_netmon_sees_a_rootless_containers_bytes(rootless: Project) -> None:
    server = Server(reply=321)
    scenario = f"connect:{server.host}:{server.port}:4000;quiet"
    proc = _demo(rootless, scenario, "--netmon=preload")
    try:
        sock = rootless.socket()
        assert wait_for(lambda: server.received, TIMEOUT, what="the connection") == [4000]
        assert _bytes_both_ways(sock, server.port, "preload", 321) == (4000, 321)
        network = call(sock, "server_status")["sandbox"]["sandboxes"]["primary"]["network"]
        assert network["mode"] == "slirp4netns"
    finally:
        _stop(proc)
        server.close()


def test_a_restart_is_a_new_container_that_continues_the_conversation(project: Project) -> None:
    proc = project.popen(
        ["demo", "--sandbox=container", "--no-watchdog", "remember the blue door"],
        stdin=subprocess.PIPE,
    )
    lines = Lines(proc)
    try:
        sock = project.socket()
        lines.wait_for("demo: you said: remember the blue door")
        status = call(sock, "server_status")
        before = status["sandbox"]["sandboxes"]["primary"]
        call(sock, "restart", reason="container reload")
        lines.wait_for("continuing conversation (2 turns)")
        first, second = project.reports()[:2]
        assert not first["continue"] and second["continue"]
        after = call(sock, "server_status")["sandbox"]["sandboxes"]["primary"]
        # A new container (the old one removed), the same home volume.
        assert after["starts"] == 2
        assert after["container"]["name"] != before["container"]["name"]
        assert after["home_volume"] == before["home_volume"]
        runner_pid = status["runner"]["pid"]
        names = wait_for(
            lambda: (c := project.engine.containers_of(runner_pid, "agent")) and len(c) == 1 and c,
            TIMEOUT,
            what="the first container's removal",
        )
        assert names[0]["Names"][0].lstrip("/") == after["container"]["name"]
    finally:
        # End of input: the demo's prompt reads EOF, and the run ends.
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=TIMEOUT) == 0


class Lines:
    """A process's output lines as they come (read by a thread)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        self.thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self.thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)

    def wait_for(self, text: str) -> None:
        wait_for(lambda: any(text in line for line in self.lines), TIMEOUT, what=repr(text))

    def all(self) -> str:
        """Everything, once the process has ended."""
        self.thread.join(TIMEOUT)
        return "".join(self.lines)


def _sigkill_then_cleanup(project: Project) -> int:
    """A runner with a container, SIGKILLed; returns its pid once its container is found."""
    proc = _demo(project, "quiet")
    try:
        wait_for(lambda: project.reports(), TIMEOUT, what="the agent's start")
    finally:
        proc.kill()
        proc.communicate(timeout=TIMEOUT)
    return proc.pid


def test_a_sigkilled_runners_container_is_removed_by_cleanup(project: Project) -> None:
    pid = _sigkill_then_cleanup(project)
    assert project.engine.containers_of(pid, "agent"), "the killed runner's container is gone"
    dry = project.run(["cleanup", "--dry-run", "--runner", str(pid)])
    assert dry.returncode == 0, dry.stderr
    listed = f"container aegis-{pid}-primary-1 (runner {pid}; agent primary"
    assert f"would remove {listed}" in dry.stdout
    assert project.engine.containers_of(pid, "agent")
    result = project.run(["cleanup", "--runner", str(pid)])
    assert result.returncode == 0, result.stderr
    assert f"removed {listed}" in result.stdout
    assert project.engine.containers_of(pid) == []
    assert not Path(f"/var/run/netns/aegis-{pid}").exists()
    again = project.run(["cleanup", "--runner", str(pid)])
    assert f"aegis-{pid}-" not in again.stdout


def test_the_private_podman_service_lives_as_long_as_its_runner(podman_engine, throwaway_user):
    project = Project(podman_engine, pwd.getpwnam(throwaway_user[0]), sudo=True)
    project.config.write_text("")  # no engine configured: the runner starts its own podman
    try:
        pid = _sigkill_then_cleanup(project)
        socket_path = project.runtime / f"podman-{pid}.sock"
        assert podman_engine.containers_of(pid, "agent")
        assert (project.runtime / f"podman-{pid}.log").exists()
        # The service may outlive its runner: podman keeps the dead runner's attach stream
        # open until the container writes or ends. The clean-up stops it.
        result = project.run(["cleanup", "--runner", str(pid)])
        assert result.returncode == 0, result.stderr
        assert f"removed container aegis-{pid}-primary-1" in result.stdout
        assert podman_engine.containers_of(pid) == []
        wait_for(lambda: not _serves(socket_path), TIMEOUT, what="the private service's exit")
        # Neither the dead runner's socket and log nor those of the service the clean-up
        # started for its look are left.
        assert not list(project.runtime.glob("podman-*"))
    finally:
        project.close()


def _serves(socket_path: Path) -> bool:
    for proc_dir in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if str(socket_path).encode() in (proc_dir / "cmdline").read_bytes():
                return True
    return False


def test_a_pool_agent_in_a_container_beside_one_on_the_host(project: Project) -> None:
    proc = project.popen(
        ["demo", "--sandbox=container", "--no-watchdog", "--scenario", "quiet"],
    )
    try:
        sock = project.socket()
        wait_for(lambda: project.reports(), TIMEOUT, what="the primary agent")
        boxed = call(
            sock,
            "agent_spawn",
            description="/scenario say:boxed",
            agent_type="demo",
            sandbox="container",
        )
        host = call(sock, "agent_spawn", description="/scenario say:free", agent_type="demo")
        for agent in (boxed, host):
            done = call(sock, "agent_await", agent_id=agent["agent_id"], timeout_secs=TIMEOUT)
            assert done["done"] and done["status"] == "completed", done
        reports = {r["env"].get("AEGIS_MCP_AGENT_ID"): r for r in project.reports()}
        inside, outside = reports[boxed["agent_id"]], reports[host["agent_id"]]
        assert inside["namespaces"]["mnt"] != _host_ns("mnt")
        assert inside["env"]["IS_SANDBOX"] == "1"
        assert outside["namespaces"]["mnt"] == _host_ns("mnt")
        assert "IS_SANDBOX" not in outside["env"]
        status = call(sock, "server_status")
        runner_pid = status["runner"]["pid"]
        # The pool agent's container went with it.
        wait_for(
            lambda: len(project.engine.containers_of(runner_pid, "agent")) == 1,
            TIMEOUT,
            what="the pool agent's container removal",
        )
    finally:
        _stop(proc)


def test_rootless_refuses_what_needs_root_and_offers_preload(rootless: Project) -> None:
    for flags in (["--deny=10.0.0.0/8"], ["--netmon=ebpf"], ["--allow=example.com"]):
        result = rootless.run(["run", "--sandbox=container", *flags, "--", "true"])
        assert result.returncode == 2, result.stdout
        assert "needs root" in result.stderr and "--netmon=preload" in result.stderr


def _plain_run(project: Project, config: str, **env: str) -> subprocess.CompletedProcess[str]:
    project.config.write_text(config)
    return project.run(["run", "--sandbox=container", "--", "/bin/true"], **env)


def test_clear_errors_from_the_engine_and_the_image(
    podman_engine, docker_engine, throwaway_user
) -> None:
    project = Project(podman_engine, pwd.getpwnam(throwaway_user[0]), sudo=True)
    engine = f'[container]\nengine = "{podman_engine.url}"\n'
    try:
        missing = _plain_run(project, engine + 'image = "aegis-mcp-not-built"\n')
        assert missing.returncode == 1
        assert "the image 'aegis-mcp-not-built' is not in the container engine" in missing.stderr
        assert f"`aegis-mcp image build --engine {podman_engine.url}`" in missing.stderr
        typo = _plain_run(project, engine + 'mounts = ["/nonexistent/aegis-test:ro"]\n')
        assert typo.returncode == 1
        assert "[container] mounts: /nonexistent/aegis-test does not exist" in typo.stderr
        assert not Path("/nonexistent/aegis-test").exists()
        docker = f'[container]\nengine = "{docker_engine.url}"\ncpus = 512\n'
        refused = _plain_run(project, docker)
        assert refused.returncode == 1
        assert "the container engine refused: " in refused.stderr
        assert "CPU" in refused.stderr  # the engine's own words
        silent = _plain_run(project, '[container]\nengine = "unix:///nonexistent/engine.sock"\n')
        assert silent.returncode == 2
        assert "does not answer" in silent.stderr
        nothing = _plain_run(project, "", PATH="/nonexistent")
        assert nothing.returncode == 2
        assert "no container engine: install podman" in nothing.stderr
        everything = missing.stderr + typo.stderr + refused.stderr + silent.stderr
        assert "Traceback" not in everything + nothing.stderr
    finally:
        project.close()


def test_image_build_is_cached_and_says_how_long(podman_engine, throwaway_user) -> None:
    project = Project(podman_engine, pwd.getpwnam(throwaway_user[0]), sudo=True)
    try:
        result = project.run(["image", "build", "--engine", podman_engine.url])
        assert result.returncode == 0, result.stderr
        assert "building aegis-mcp-base in podman 4" in result.stdout
        assert "  image: cached in " in result.stdout
        assert result.stdout.rstrip().endswith(" s") and " ready in " in result.stdout
    finally:
        project.close()


def test_doctor_names_the_engine_and_says_whether_rootless_works(rootless: Project) -> None:
    result = rootless.run(["doctor"])
    assert result.returncode == 0, result.stderr

    def line(name: str) -> str:
        return next(row for row in result.stdout.splitlines() if f"] {name} " in row)

    engine = line("container engine")
    assert "[ok  ]" in engine and "podman 4" in engine and "rootless podman" in engine
    assert "[ok  ]" in line("container image") and "present" in line("container image")
    rootless_line = line("rootless containers")
    assert "[ok  ]" in rootless_line and f"work for {rootless.user.pw_name}" in rootless_line


def test_limits_mounts_and_the_watchdogs_view_of_a_rootful_container(rootful: Project) -> None:
    shared = own_dir(rootful.base / "shared", None)
    (shared / "data.txt").write_text("from the host")
    secret = Path(rootful.user.pw_dir) / "host-only.txt"
    secret.write_text("not for the container")
    rootful.config.write_text(
        f'[container]\nengine = "{rootful.engine.url}"\nmemory = "256m"\npids = 64\n'
        f'nofile = 4096\nmounts = ["{shared}:/shared:ro"]\n'
    )
    script = (
        "cat /shared/data.txt; touch /shared/x 2>/dev/null || echo READ-ONLY; "
        "ls -A $HOME | grep -c host-only || true; ulimit -n; "
        "python3 -c 'b = bytearray(64 << 20); import time; time.sleep(60)'"
    )
    proc = rootful.popen(["run", "--sandbox=container", "--", "sh", "-c", script])
    lines = Lines(proc)
    try:
        sock = rootful.socket()
        lines.wait_for("from the host")
        status = wait_for(
            lambda: (s := call(sock, "server_status"))["sandbox"]["sandboxes"].get("primary") and s,
            TIMEOUT,
            what="the sandbox",
        )
        name = status["sandbox"]["sandboxes"]["primary"]["container"]["name"]
        with contextlib.closing(rootful.engine.client()) as client:
            config = client.api.inspect_container(name)["HostConfig"]
        assert config["Memory"] == 256 << 20 and config["PidsLimit"] == 64
        # podman names them RLIMIT_NOFILE, Docker nofile.
        ulimits = {u["Name"].lower().removeprefix("rlimit_"): u["Hard"] for u in config["Ulimits"]}
        assert ulimits["nofile"] == 4096
        # The watchdog samples the container's processes, not only the relay in front.
        watch = wait_for(
            lambda: (r := call(sock, "watchdog_status")["resources"]) and r["rss_mb"] >= 64 and r,
            TIMEOUT,
            what="the container's memory in the watchdog's sample",
        )
        assert watch["processes"] >= 3  # the relay, tini, sh, python
    finally:
        proc.terminate()
        proc.wait(timeout=TIMEOUT)
    out = lines.all()
    assert "READ-ONLY" in out
    assert "\n0\n" in out  # nothing of the host's home
    assert "4096" in out
