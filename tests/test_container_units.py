"""The container backend's pieces that need no engine: settings, mounts, the relay's framing,
engine discovery and rootless prerequisites, as the machine has them."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from aegis_mcp.cleanup.registry import KINDS, Kind
from aegis_mcp.cleanup.sweep import sweep
from aegis_mcp.config import ConfigError, load_config
from aegis_mcp.leftovers import LeftoverSource
from aegis_mcp.sandbox.container import engine, exits, mounts, rootless
from aegis_mcp.sandbox.container.errors import EngineMissing
from aegis_mcp.sandbox.container.host_leftovers import (
    CgroupParentLeftovers,
    EngineServiceLeftovers,
)
from aegis_mcp.sandbox.container.leftovers import ContainerLeftovers
from aegis_mcp.sandbox.container.relay import Demux
from aegis_mcp.sandbox.container.settings import Mount, SettingsError, parse_size
from conftest import IN_CI
from helpers import wait_for


def _config(tmp_path: Path, text: str):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path)


def test_container_settings_are_read_and_checked(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        '[container]\nengine = "unix:///run/x.sock"\nmemory = "512m"\ncpus = 1.5\n'
        'pids = 100\nnofile = 1024\nmounts = ["~/.gitconfig:ro", "/data:/corpus"]\n',
    )
    settings = config.container
    assert settings.engine == "unix:///run/x.sock"
    assert settings.memory == 512 << 20 and settings.cpus == 1.5 and settings.pids == 100
    assert settings.parsed_mounts("/home/u") == [
        Mount("/home/u/.gitconfig", "/home/u/.gitconfig", True),
        Mount("/data", "/corpus", False),
    ]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('memory = "lots"', "memory: must be a number of bytes"),
        ("memory = 1024", "memory: must be at least 6 MiB"),
        ("cpus = 0", "cpus: must be a number of CPUs"),
        ('mounts = ["relative/path"]', "is not an absolute path"),
        ('mounts = "/one"', "mounts: must be a list"),
        ('engine = "/no/scheme.sock"', "engine: must be a URL"),
        ('network = "host"', "network: must be one of auto, none"),
        ("colour = 1", "colour: unknown setting"),
    ],
)
def test_bad_container_settings_name_the_key(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, f"[container]\n{table}\n")
    assert message in str(caught.value) and "[container]" in str(caught.value)


def test_sizes() -> None:
    assert parse_size("4g") == 4 << 30 and parse_size("10MiB") == 10 << 20
    with pytest.raises(SettingsError):
        parse_size(True)


def test_a_native_binary_outside_the_system_is_mounted_by_its_real_path(tmp_path: Path) -> None:
    binary = tmp_path / "agent-bin"
    shutil.copy("/bin/true", binary)
    link = tmp_path / "agent"
    link.symlink_to(binary)
    argv, binds = mounts.agent_binds([str(link), "-p", "hi"], os.defpath)
    assert argv == [str(binary), "-p", "hi"]
    assert binds == [mounts.Bind(str(binary), str(binary))]


def test_a_node_package_is_mounted_with_the_hosts_node(tmp_path: Path) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    package = tmp_path / "lib" / "node_modules" / "@x" / "cli"
    (package / "bin").mkdir(parents=True)
    (package / "package.json").write_text("{}")
    script = package / "bin" / "cli.js"
    script.write_text("#!/usr/bin/env node\n")
    script.chmod(0o755)
    argv, binds = mounts.agent_binds([str(script)], "/usr/bin:/bin")
    node = os.path.realpath(shutil.which("node", path="/usr/bin:/bin") or "")
    assert argv == [str(script)]
    # The whole node_modules tree: the package's dependencies and platform packages
    # (Codex's native binary is the sibling package @openai/codex-linux-x64).
    tree = str(tmp_path / "lib" / "node_modules")
    assert mounts.Bind(tree, tree) in binds
    assert any(b.source == node or node.startswith(b.source + "/") for b in binds)


def test_a_virtualenvs_python_is_its_virtualenv(tmp_path: Path) -> None:
    venv = Path(sys.prefix)
    if venv == Path(sys.base_prefix):
        pytest.skip("not run from a virtualenv")
    argv, binds = mounts.agent_binds([str(venv / "bin" / "python"), "-m", "x"], os.defpath)
    assert argv[1:] == ["-m", "x"]
    assert binds == [mounts.Bind(str(venv), str(venv))]


def test_system_programs_are_left_to_the_image() -> None:
    argv, binds = mounts.agent_binds(["sh", "-c", "true"], "/usr/bin:/bin")
    assert argv == ["sh", "-c", "true"] and binds == []


def test_merged_mounts_keep_read_only_islands_and_drop_repeats() -> None:
    merged = mounts.merge(
        [
            mounts.Bind("/p", "/p", read_only=False),
            mounts.Bind("/p/.venv", "/p/.venv"),
            mounts.Bind("/p/src", "/p/src", read_only=False),
            mounts.Bind("/p", "/p", read_only=False),
        ]
    )
    assert merged == [mounts.Bind("/p", "/p", False), mounts.Bind("/p/.venv", "/p/.venv")]
    with pytest.raises(Exception, match="two mounts at /x"):
        mounts.merge([mounts.Bind("/a", "/x"), mounts.Bind("/b", "/x")])


def test_the_relay_splits_the_engines_frames_across_reads() -> None:
    def frame(stream: int, data: bytes) -> bytes:
        return struct.pack(">BxxxL", stream, len(data)) + data

    wire = frame(1, b"out") + frame(2, b"err!") + frame(1, b"")
    demux = Demux()
    got = []
    for i in range(len(wire)):
        got += demux.feed(wire[i : i + 1])
    assert got == [(1, b"out"), (2, b"err!"), (1, b"")]


def test_an_engine_that_does_not_answer_is_not_taken(tmp_path: Path) -> None:
    dead = tmp_path / "dead.sock"
    dead.touch()
    with pytest.raises(EngineMissing, match="does not answer"):
        engine.choose(f"unix://{dead}", {})
    found = engine.candidates(None, {"DOCKER_HOST": f"unix://{dead}"})
    assert all(c.url != f"unix://{dead}" for c in found)


def test_subordinate_ids_by_name_or_uid(tmp_path: Path) -> None:
    table = tmp_path / "subuid"
    table.write_text("alice:100000:65536\n1001:200000:1000\nbob:300000:65536\n")
    assert rootless.subordinate_ids(table, "alice", 1000) == 65536
    assert rootless.subordinate_ids(table, "carol", 1001) == 1000
    assert rootless.subordinate_ids(tmp_path / "missing", "alice", 1000) == 0


def test_a_runtime_dir_others_can_enter_is_refused(tmp_path: Path) -> None:
    open_dir = tmp_path / "run"
    open_dir.mkdir(mode=0o755)
    os.chmod(open_dir, 0o755)
    assert rootless.runtime_dir_problems(os.geteuid(), str(open_dir))
    os.chmod(open_dir, 0o700)
    assert rootless.runtime_dir_problems(os.geteuid(), str(open_dir)) == []
    assert "XDG_RUNTIME_DIR is not set" in rootless.runtime_dir_problems(1000, None)[0]


AEGIS_LIKE = [sys.executable, "-c", "import time; time.sleep(600)", "aegis"]
"""A process whose command line says aegis: what a live runner looks like by its pid."""


def _exited_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _kind(name: str) -> Kind:
    return next(k for k in KINDS if k.name == name)


def test_container_leftovers_are_kinds_of_the_registry_in_removal_order() -> None:
    names = [k.name for k in KINDS]
    # Containers before their services stop and before their cgroup parents go.
    assert names.index("containers") < names.index("podman_services")
    assert names.index("containers") < names.index("container_cgroups")
    assert _kind("container_cgroups").needs_root and not _kind("containers").needs_root
    assert not _kind("containers").at_start and _kind("podman_services").at_start


def test_a_runners_start_does_not_ask_the_engines() -> None:
    def unreachable() -> LeftoverSource:
        raise AssertionError("a quick sweep made the containers source")

    kind = Kind("containers", "containers", False, unreachable, at_start=False)
    assert sweep(quick=True, kinds=[kind]).to_dict()["errors"] == []
    full = sweep(kinds=[kind]).to_dict()["errors"]
    assert "a quick sweep made the containers source" in full[0]["error"]


def test_an_engine_that_does_not_answer_is_an_error_naming_it(monkeypatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    kind = Kind(
        "containers",
        "containers",
        False,
        lambda: ContainerLeftovers(configured="tcp://127.0.0.1:1"),
    )
    report = sweep(runners={_exited_pid()}, kinds=[kind]).to_dict()
    assert report["removed"] == []
    (error,) = report["errors"]
    assert "cannot list containers" in error["error"]
    assert "tcp://127.0.0.1:1 ([container] engine)" in error["error"]
    assert "did not answer" in error["error"]


def test_cgroup_v1_parents_of_dead_runners_go_and_live_ones_stay(tmp_path: Path) -> None:
    runner = subprocess.Popen(AEGIS_LIKE)
    dead_pid = _exited_pid()
    memory = tmp_path / "memory"
    dead = memory / "aegis-mcp" / f"{dead_pid}-primary"
    live = memory / "aegis-mcp" / f"{runner.pid}-primary"
    other = memory / "aegis-mcp" / "not-ours"
    for path in (dead / "libpod_parent", live, other):
        path.mkdir(parents=True)
    mounts = tmp_path / "mounts"
    mounts.write_text(
        f"cgroup {memory} cgroup rw,memory 0 0\ncgroup2 {tmp_path / 'unified'} cgroup2 rw 0 0\n"
    )
    kind = Kind("container_cgroups", "cgroups", False, lambda: CgroupParentLeftovers(mounts))
    try:
        assert CgroupParentLeftovers(mounts).possible()
        dry = sweep(True, runners={dead_pid, runner.pid}, kinds=[kind]).to_dict()
        assert dead.exists()
        report = sweep(runners={dead_pid, runner.pid}, kinds=[kind]).to_dict()
    finally:
        runner.kill()
        runner.wait()
    assert (
        dry["removed"]
        == report["removed"]
        == [{"kind": "cgroup_v1", "id": str(dead), "owner_pid": dead_pid, "group": str(dead)}]
    )
    assert [e["id"] for e in report["kept"]] == [str(live)]
    assert not dead.exists() and live.exists() and other.exists()


@pytest.fixture
def podman() -> str:
    path = shutil.which("podman")
    if path is None:
        if IN_CI:
            pytest.fail("CI=true, yet podman is missing: scripts/setup_containers.sh installs it")
        pytest.skip("podman is not installed (scripts/setup_containers.sh installs it)")
    return path


def _service(podman: str, socket_path: Path) -> subprocess.Popen:
    """A real podman API service named as a runner's private one, with no idle timeout."""
    proc = subprocess.Popen(
        [podman, "system", "service", "--time=0", f"unix://{socket_path}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(socket_path.exists, 60, what=f"{socket_path}")
    return proc


def test_a_dead_runners_private_podman_service_is_stopped(podman: str, tmp_path: Path) -> None:
    runner = subprocess.Popen(AEGIS_LIKE)
    dead_pid = _exited_pid()
    orphan = _service(podman, tmp_path / f"podman-{dead_pid}.sock")
    live = _service(podman, tmp_path / f"podman-{runner.pid}.sock")
    try:
        assert EngineServiceLeftovers(tmp_path).possible()
        runners = {dead_pid, runner.pid}
        dry = sweep(True, runners=runners, kinds=[_kind("podman_services")]).to_dict()
        assert orphan.poll() is None
        report = sweep(runners=runners, kinds=[_kind("podman_services")]).to_dict()
        # podman ends on SIGTERM: nothing had to be killed.
        assert orphan.wait(timeout=30) == 0
        assert live.poll() is None
    finally:
        for proc in (orphan, live, runner):
            proc.kill()
            proc.wait()
    expected = {
        "kind": "podman_service",
        "id": f"pid {orphan.pid}",
        "owner_pid": dead_pid,
        "group": f"podman-{dead_pid}",
        "processes": [orphan.pid],
    }
    assert dry["removed"] == report["removed"] == [expected]
    assert [e["id"] for e in report["kept"]] == [f"pid {live.pid}"]
    assert report["errors"] == []


def test_conmons_exit_directory_is_read_from_its_command_line(tmp_path: Path) -> None:
    # A process that calls itself conmon, with conmon's option: its exit directory is found.
    code = "import time; time.sleep(30)"
    argv = ["conmon", "-c", code, "--exit-dir", str(tmp_path), "-u", "x"]
    fake = subprocess.Popen(argv, executable=sys.executable)
    try:
        wait_for(lambda: b"--exit-dir" in Path(f"/proc/{fake.pid}/cmdline").read_bytes(), 10)
        assert exits.exit_dir_of(fake.pid) == tmp_path
    finally:
        fake.kill()
        fake.wait()
    # Not conmon, or no such process: no exit directory (the engine's wait is used).
    assert exits.exit_dir_of(os.getpid()) is None
    assert exits.exit_dir_of(fake.pid) is None


def test_the_exit_code_is_read_once_conmon_writes_it(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "0123abcd"
    assert exits.read_exit_code(path, seconds=0.05) is None  # never written
    path.write_text("")
    assert exits.read_exit_code(path, seconds=0.05) is None  # still being written
    threading.Timer(0.05, path.write_text, args=("137",)).start()
    assert exits.read_exit_code(path, seconds=5) == 137


def test_a_containers_owner_is_told_by_pid_and_start_time() -> None:
    from aegis_mcp.owners import process_start_time
    from aegis_mcp.sandbox.container.leftovers import owner_is_alive
    from aegis_mcp.sandbox.container.lifecycle import labels

    # A live process whose command line names aegis, as a runner's does.
    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "aegis"])
    try:
        start = process_start_time(runner.pid)
        assert start is not None
        assert owner_is_alive(labels(runner.pid, start, "primary", "agent"))
        # The same pid started at another time (reused): not the runner, whatever its name.
        assert not owner_is_alive(labels(runner.pid, start + 1, "primary", "agent"))
    finally:
        runner.kill()
        runner.wait()
