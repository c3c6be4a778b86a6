"""Container engines for the tests: rootful podman, Docker Engine, a plain user's rootless podman.

Each is real and started for the session the way the project itself starts
one (:class:`aegis_mcp.sandbox.container.service.PrivateService`), or, for
Docker Engine, as ``dockerd`` on a private socket with the flags DESIGN.md
fact 7 found to work here (no iptables, no bridge). Docker's data root is kept
under ``~/.cache/aegis-mcp/`` so that its image outlives the session. Every
engine gets the base image from ``aegis-mcp image build`` (cached: seconds).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import REPO

ROOTLESS_USER = os.environ.get("AEGIS_ROOTLESS_USER", "aegis-rootless")
CACHE = Path.home() / ".cache" / "aegis-mcp"
IMAGE = "aegis-mcp-base"


@dataclass
class TestEngine:
    """One engine the tests run agents in."""

    __test__ = False

    name: str
    url: str
    kind: str
    rootless: bool
    user: pwd.struct_passwd | None = None
    """The plain user whose rootless engine this is."""

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.url, version="1.41", timeout=60)

    def containers_of(self, runner_pid: int, role: str | None = None) -> list[dict[str, Any]]:
        """The containers (any state) labelled as runner ``runner_pid``'s (of ``role``)."""
        wanted = [f"aegis-mcp.owner={runner_pid}"]
        if role is not None:
            wanted.append(f"aegis-mcp.role={role}")
        with contextlib.closing(self.client()) as client:
            return client.api.containers(all=True, filters={"label": wanted})

    def remove_volumes(self, user: str) -> None:
        """Remove the home volumes of ``user`` (a test user's: never a real one's)."""
        with contextlib.closing(self.client()) as client:
            for volume in client.api.volumes().get("Volumes") or []:
                if volume["Name"].startswith(f"aegis-mcp-home-{user}-"):
                    with contextlib.suppress(Exception):
                        client.api.remove_volume(volume["Name"], force=True)


def build_image(url: str) -> None:
    """The base image in the engine at ``url`` (from the cached root file system)."""
    from aegis_mcp.sandbox.container.build import build_image as build
    from aegis_mcp.sandbox.container.engine import choose, connect

    engine = connect(choose(url))
    try:
        build(engine, IMAGE, say=lambda _line: None)
    finally:
        engine.close()


def podman_service(directory: Path, user: pwd.struct_passwd | None = None) -> Any:
    """A podman service started as the project starts its private one."""
    import docker

    from aegis_mcp.sandbox.container.service import PrivateService

    tag = f"test-{os.getpid()}"
    service = PrivateService.start(
        directory / f"podman-{tag}.sock", directory / f"podman-{tag}.log", user
    )
    # Its idle timeout would end it between two tests: hold it as a run does.
    service.hold(docker.APIClient(base_url=service.url, version="1.41"))
    return service


class Dockerd:
    """``dockerd`` on a private socket, its data kept in the cache, stopped at the end."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="aegis-dockerd-"))
        self.socket = self.base / "docker.sock"
        data = CACHE / "dockerd" / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.log = open(self.base / "dockerd.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                "dockerd",
                "--host",
                f"unix://{self.socket}",
                "--data-root",
                str(data),
                "--exec-root",
                str(self.base / "exec"),
                "--pidfile",
                str(self.base / "dockerd.pid"),
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--default-ulimit",
                "nofile=20000:20000",
                "--default-ulimit",
                "nproc=32768:32768",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.tail()
                self.stop()
                raise RuntimeError(f"dockerd did not start: {tail}")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _answers(self) -> bool:
        import docker

        if not self.socket.exists():
            return False
        client = docker.DockerClient(base_url=self.url, version="1.41")
        with contextlib.suppress(Exception), contextlib.closing(client):
            return bool(client.ping())
        return False

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.base / "dockerd.log").read_text(errors="replace")[-600:]
        return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()
        shutil.rmtree(self.base, ignore_errors=True)


def rootless_user() -> pwd.struct_passwd | None:
    """The prepared rootless test user (scripts/setup_containers.sh), if there is one."""
    try:
        return pwd.getpwnam(ROOTLESS_USER)
    except KeyError:
        return None


def user_env(user: pwd.struct_passwd, base: Path, **extra: str) -> dict[str, str]:
    """An environment for an aegis-mcp run as ``user``, its files under ``base``."""
    env = {
        "HOME": user.pw_dir,
        "USER": user.pw_name,
        "LOGNAME": user.pw_name,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "XDG_RUNTIME_DIR": f"/run/user/{user.pw_uid}",
        "AEGIS_MCP_RUNTIME_DIR": str(base / "run"),
        "AEGIS_MCP_STATE_DIR": str(base / "state"),
        "AEGIS_MCP_CONFIG": str(base / "config.toml"),
        "PYTHONPATH": str(REPO / "runner"),
        "PYTHONUNBUFFERED": "1",
        "LANG": "C.UTF-8",
    }
    env.update(extra)
    return env


def host_address() -> str:
    """This machine's address on its default route (reachable from every container)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("198.51.100.1", 9))  # no packet is sent: only a route is chosen
        return probe.getsockname()[0]


def as_user(user: pwd.struct_passwd) -> dict[str, Any]:
    """``subprocess`` arguments that run a command as ``user``."""
    return {
        "user": user.pw_uid,
        "group": user.pw_gid,
        "extra_groups": os.getgrouplist(user.pw_name, user.pw_gid),
    }


def own_dir(path: Path, user: pwd.struct_passwd | None, mode: int = 0o755) -> Path:
    """``path`` made and given to ``user`` (the directories a run as that user writes in)."""
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)
    os.chmod(path, mode)
    return path
