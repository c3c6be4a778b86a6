"""--sandbox=container: the stand-in agent in real containers, rootful and rootless.

Three real engines (tests/engines.py): rootful podman and Debian's Docker
Engine, each driven as root for a sudo user (a throwaway account), and a plain
user's rootless podman driven by that user with no privileges at all.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from engines import TestEngine, as_user, own_dir, user_env
from helpers import AEGIS, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the container tests start engines")
TIMEOUT = 120


def _host_ns(kind: str) -> str:
    return os.readlink(f"/proc/self/ns/{kind}")


def _host_address() -> str:
    """This machine's address on its default route (reachable from every container)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.255", 9))  # no packet is sent: only a route is chosen
        return probe.getsockname()[0]


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
