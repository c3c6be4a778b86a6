"""One agent's container sandbox: a fresh container at every start of the agent.

Made once per agent (the primary one, each pool agent that asks): the engine
connection is the run's, the image is checked, the home volume made, and the
network (an aegis netns where root) set up. Then every start of the agent
(:meth:`ContainerSandbox.wrap`), the first and each hot reload, creates a
container, attaches to its terminal, starts it, and hands the runner a spec
that runs :mod:`.relay` in the agent's PTY instead of the agent: the runner
supervises the relay as it would the agent, its signals go to the container
through the engine (``forward_signal``), the watchdog samples the container's
processes (``tree``), and the relay's exit code is the container's.

A hot reload restarts the container, not a process inside it: the restarted
agent gets the same clean start as the first (nothing left of the old
process tree, no MCP server it started), the engine's own units (stop, exit
code, removal) stay whole, and all that must live on does: the conversation
in the home volume, the network namespace with its policy, monitor and
counters, which belong to the sandbox, not to the container.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ...processes import SpawnSpec
from ..base import Sandbox, SandboxRequest
from ..errors import SandboxError
from ..netns.markers import process_start_time
from . import limits, mounts
from .engine import Engine
from .errors import EngineRefused
from .image import require_image
from .lifecycle import ROLE_AGENT, Container, ContainerConfig, labels
from .network import ContainerNetwork, make_network
from .settings import ContainerSettings
from .volumes import ensure_volume, hand_over, volume_name

RELAY = str(Path(__file__).with_name("relay.py"))
# Host session details that mean nothing inside (or would point the agent back at the
# host: its engine, its desktop bus, its SSH agent).
_HOST_ONLY = frozenset(
    {
        "XDG_RUNTIME_DIR",
        "DBUS_SESSION_BUS_ADDRESS",
        "SSH_AUTH_SOCK",
        "DISPLAY",
        "WAYLAND_DISPLAY",
        "XAUTHORITY",
        "DOCKER_HOST",
        "CONTAINER_HOST",
        "TMPDIR",
        "PWD",
        "OLDPWD",
        "MAIL",
        "SUDO_COMMAND",
        "SUDO_USER",
        "SUDO_UID",
        "SUDO_GID",
    }
)
_IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PRIVATE_CGROUP = ["unshare", "--user", "--map-current-user", "--cgroup", "--"]
"""podman's compatible API (4.3) ignores ``CgroupnsMode`` and keeps the host's cgroup
namespace on a cgroup v1 or hybrid host: there the agent starts in its own, under
a user namespace that maps only its own uid (util-linux, no capability needed)."""


def container_env(spec: SpawnSpec) -> dict[str, str]:
    """The agent's environment as the container gets it."""
    env = {k: v for k, v in spec.env.items() if k not in _HOST_ONLY}
    user = spec.user
    env.update(HOME=user.home, USER=user.name, LOGNAME=user.name, SHELL="/bin/bash")
    path = env.get("PATH", "")
    env["PATH"] = f"{path}:{_IMAGE_PATH}" if path else _IMAGE_PATH
    # Only here, inside an aegis container: Claude Code then accepts its
    # permission-skipping flag as the container's root (DESIGN.md fact 2).
    env["IS_SANDBOX"] = "1"
    env["AEGIS_MCP_SANDBOX"] = "container"
    return env


def _rows_cols(winsize: bytes | None) -> tuple[int, int] | None:
    if not winsize or len(winsize) < 4:
        return None
    rows, cols = struct.unpack("HH", winsize[:4])
    return rows, cols


def cgroup_pids(pid: int) -> list[int] | None:
    """The processes in ``pid``'s cgroup v2 (None when it cannot be read)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    path = next((line[3:] for line in lines if line.startswith("0::")), None)
    roots = _mount_points("cgroup2")
    root = roots[0] if roots else None
    if path is None or root is None or path == "/":
        return None
    try:
        text = Path(root, path.lstrip("/"), "cgroup.procs").read_text()
    except OSError:
        return None
    return [int(p) for p in text.split()]


def _engine_user(engine: Engine) -> str | None:
    """The user whose rootless engine this is (the one to build the image for)."""
    if not engine.rootless:
        return None
    if os.geteuid() != 0:
        import pwd

        with contextlib.suppress(KeyError):
            return pwd.getpwuid(os.geteuid()).pw_name
    return os.environ.get("SUDO_USER")


class _Run:
    """One container of the agent, from its start to its removal."""

    def __init__(self, container: Container, ctl: socket.socket, child_fds: tuple[int, ...]):
        self.container = container
        self.ctl = ctl
        self.child_fds = child_fds
        self.exit_code: int | None = None
        self.error: str | None = None
        self.pid: int | None = None
        self.done = threading.Event()
        self.output_ended = threading.Event()
        """Set when the relay has read the end of the container's output (``E``)."""

    def supervise(self) -> None:
        """Start the threads that resize the terminal and report the exit (then remove)."""
        threading.Thread(target=self._resizes, name="aegis-container-tty", daemon=True).start()
        threading.Thread(target=self._wait, name="aegis-container-wait", daemon=True).start()

    def _resizes(self) -> None:
        buffer = b""
        while True:
            try:
                data = self.ctl.recv(512)
            except OSError:
                return
            if not data:
                return
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                parts = line.split()
                if parts == [b"E"]:
                    self.output_ended.set()
                elif len(parts) == 3 and parts[0] == b"W":
                    with contextlib.suppress(SandboxError, ValueError):
                        self.container.resize(int(parts[1]), int(parts[2]))

    def _wait(self) -> None:
        try:
            code = self.container.wait(self.output_ended)
        except SandboxError as exc:
            self.error = str(exc)
            code = 255
        self.exit_code = code
        with contextlib.suppress(OSError):
            self.ctl.sendall(b"X %d\n" % code)
        self.finish()

    def finish(self) -> None:
        """Remove the container and close what the runner held of it (idempotent)."""
        try:
            self.container.remove()
        except SandboxError as exc:
            self.error = self.error or str(exc)
        with contextlib.suppress(OSError):
            self.ctl.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.ctl.close()
        for fd in self.child_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.child_fds = ()
        self.done.set()

    def processes(self) -> list[int]:
        """The container's processes by host pid: its cgroup's, else its first one's tree."""
        if self.done.is_set():
            return []
        if self.pid is None:
            with contextlib.suppress(SandboxError):
                self.pid = self.container.pid()
        if self.pid is None:
            return []
        found = cgroup_pids(self.pid)
        if found is not None:
            return found
        import psutil

        try:
            first = psutil.Process(self.pid)
            return [self.pid, *(p.pid for p in first.children(recursive=True))]
        except psutil.Error:
            return []


class ContainerSandbox(Sandbox):
    """An agent's containers, their network and home volume (see the module docstring)."""

    kind = "container"

    def __init__(
        self,
        engine: Engine,
        request: SandboxRequest,
        settings: ContainerSettings,
        image: dict[str, Any],
        network: ContainerNetwork,
        owner_start: int | None,
    ) -> None:
        self.engine = engine
        self.request = request
        self.settings = settings
        self.image = image
        self.network = network
        self.owner_start = owner_start
        self.agent = request.agent_id or "primary"
        self.starts = 0
        self.volume: str | None = None
        self._run: _Run | None = None
        self._runs: list[_Run] = []
        self._lock = threading.Lock()
        self._torn_down = False
        self._cgroup_parents: set[str] = set()
        self.last_start_ms: float | None = None
        self.cgroupns_by_unshare = engine.kind == "podman" and "/sys/fs/cgroup" not in (
            _mount_points("cgroup2")
        )

    @classmethod
    def create(
        cls, engine: Engine, request: SandboxRequest, settings: ContainerSettings
    ) -> ContainerSandbox:
        """Check the image, make the network; SandboxError (nothing left) if impossible."""
        refuse_remote(engine)
        owner_start = process_start_time(request.runner_pid)
        # The image is looked up while the network is made: the engine answers as the
        # namespace is set up, off the start's path.
        with ThreadPoolExecutor(1, thread_name_prefix="aegis-image") as pool:
            looked_up = pool.submit(require_image, engine, settings.image, _engine_user(engine))
            network = make_network(engine, request, settings.network, settings.image, owner_start)
            try:
                image = looked_up.result()
            except SandboxError as exc:
                errors = network.teardown()
                if errors:
                    raise SandboxError(f"{exc}; its network: {'; '.join(errors)}") from None
                raise
        return cls(engine, request, settings, image, network, owner_start)

    # ---- one start ---------------------------------------------------------------------

    def wrap(self, spec: SpawnSpec) -> SpawnSpec:
        """Create and start this start's container; the spec runs the relay in front of it."""
        started = time.perf_counter()
        with self._lock:
            if self._torn_down:
                raise SandboxError("the container sandbox was torn down")
            self.starts += 1
            number = self.starts
            stale = [r for r in self._runs if not r.done.is_set()]
        # The agent's previous process (the relay) is gone: so must its container be, even
        # when no signal reached it (one sent while it was still starting).
        for run in stale:
            run.finish()
        user = spec.user
        network_mode = self.network.network_mode or ""
        argv, agent_binds = mounts.agent_binds(spec.argv, spec.env.get("PATH", os.defpath))
        if self.cgroupns_by_unshare and user.uid != 0:
            # (Root in a container with no capabilities cannot map itself: its cgroup
            # namespace stays the engine's choice.)
            argv = [*PRIVATE_CGROUP, *argv]
        binds = self._binds(spec, agent_binds)
        config = ContainerConfig(
            image=self.settings.image,
            command=argv,
            labels=labels(self.request.runner_pid, self.owner_start, self.agent, ROLE_AGENT),
            name=f"aegis-{self.request.runner_pid}-{self.agent}-{number}",
            user=f"{user.uid}:{user.gid}",
            env=container_env(spec),
            workdir=spec.cwd,
            tty=spec.use_pty,
            stdin=spec.use_pty or not spec.stdin_devnull,
            binds=[b.spec() for b in binds],
            network_mode=self.network.network_mode,
            keep_id=self.engine.rootless and self.engine.kind == "podman",
            cgroup_parent=self._cgroup_parent(spec.cgroup),
            limits=limits.host_config_limits(self.settings),
            # A container sharing another's network shares its host name too.
            hostname=None if network_mode.startswith("container:") else f"aegis-{self.agent}",
        )
        container = Container.create(self.engine, config)
        try:
            if self.volume is not None:
                hand_over(self.engine, self.volume, user.uid, user.gid)
            io = container.attach(stdin=config.stdin)
            container.start()
            size = _rows_cols(spec.winsize)
            if size is not None:
                with contextlib.suppress(SandboxError):
                    container.resize(*size)
            ctl, child_ctl = socket.socketpair()
        except BaseException:
            with contextlib.suppress(Exception):
                container.remove()
            raise
        io_fd = os.dup(io.fileno())
        run = _Run(container, ctl, (io_fd, child_ctl.detach()))
        with self._lock:
            self._run = run
            self._runs = [r for r in self._runs if not r.done.is_set()] + [run]
        run.supervise()
        self.last_start_ms = round((time.perf_counter() - started) * 1000, 1)
        relay_argv = [
            sys.executable,
            "-I",
            "-S",
            RELAY,
            str(io_fd),
            str(run.child_fds[1]),
            "tty" if spec.use_pty else "pipes",
            "stdin" if config.stdin else "nostdin",
        ]
        return dataclasses.replace(
            spec,
            argv=relay_argv,
            agent_argv=argv,
            # The relay talks only to its inherited sockets: no hooks in it, no agent settings.
            env={"PATH": os.defpath, "LANG": "C.UTF-8", "TERM": spec.env.get("TERM", "dumb")},
            confine=(),
            pass_fds=run.child_fds,
            forward_signal=lambda _pid, sig: container.kill(sig),
            tree=run.processes,
            cgroup=None,
        )

    def _binds(self, spec: SpawnSpec, agent_binds: list[mounts.Bind]) -> list[mounts.Bind]:
        user = spec.user
        if spec.cwd == "/":
            raise SandboxError(
                "the working directory is /: a container cannot take it as the project"
            )
        binds = [mounts.Bind(spec.cwd, spec.cwd, read_only=False)]
        home_in_project = mounts.inside(user.home, spec.cwd)
        if not home_in_project:
            if self.volume is None:
                name = volume_name(user.name, self.request.agent_kind)
                self.volume = ensure_volume(self.engine, name, user.uid, user.gid)
            binds.append(mounts.Bind(self.volume, user.home, read_only=False))
        binds += agent_binds
        binds += mounts.self_binds()
        binds += mounts.file_binds(mounts.preload_paths(spec.env))
        shared = [str(p) for p in self.request.share]
        binds += mounts.file_binds(shared, writable=shared)
        for mount in self.settings.parsed_mounts(user.home):
            # Engines make a missing source directory on the host: a typo would create one.
            if not os.path.exists(mount.source):
                raise SandboxError(f"[container] mounts: {mount.source} does not exist")
            binds.append(mounts.Bind(mount.source, mount.target, mount.read_only))
        binds += self.network.binds
        scratch = self.request.scratch
        if "passwd" in scratch and "group" in scratch:
            binds += mounts.passwd_files(
                scratch["passwd"], scratch["group"], user.name, user.uid, user.gid, user.home
            )
        return mounts.merge(binds)

    def _cgroup_parent(self, cgroup: str | None) -> str | None:
        if cgroup is None:
            return None
        if self.engine.rootless:
            raise SandboxError(
                "eBPF monitoring of a rootless container is not possible (it has no cgroup "
                "of its own here): use --netmon=preload"
            )
        self._cgroup_parents.add(cgroup)
        return cgroup

    # ---- the runner's view ---------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """JSON-able state: engine, image, network, the current container."""
        run = self._run
        current = None
        if run is not None:
            current = {
                "id": run.container.id[:12],
                "name": run.container.name,
                "pid": run.pid,
                "running": not run.done.is_set(),
                "exit_code": run.exit_code,
                "error": run.error,
            }
        return {
            "kind": self.kind,
            "agent_id": self.request.agent_id,
            "engine": self.engine.describe(),
            "image": {"name": self.settings.image, "id": self.image.get("Id", "")[:19]},
            "home_volume": self.volume,
            "network": self.network.describe(),
            "limits": limits.describe(self.settings),
            "starts": self.starts,
            "cgroup_namespace": "unshare" if self.cgroupns_by_unshare else "engine",
            "last_start_ms": self.last_start_ms,
            "container": current,
            "torn_down": self._torn_down,
        }

    def teardown(self) -> list[str]:
        """Remove every container, the network and what the engine left of the cgroups."""
        with self._lock:
            if self._torn_down:
                return []
            self._torn_down = True
            runs = list(self._runs)
        errors: list[str] = []
        for run in runs:
            run.finish()
            if run.error and run.error.startswith("the container engine refused"):
                errors.append(f"container {run.container.name}: {run.error}")
        errors += self.network.teardown()
        errors += _remove_cgroup_parents(self._cgroup_parents)
        return errors


def _mount_points(fstype: str) -> list[str]:
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    return [f[1] for f in (line.split() for line in lines) if len(f) > 2 and f[2] == fstype]


def _remove_cgroup_parents(paths: set[str]) -> list[str]:
    # The engine makes the parent in every cgroup v1 hierarchy too (cgroupfs on a
    # hybrid layout) and removes only the container's own directory below it. The
    # v2 one is the eBPF source's own: it removes it.
    errors = []
    for relative in paths:
        for hierarchy in _mount_points("cgroup"):
            directory = Path(hierarchy, relative.lstrip("/"))
            try:
                directory.rmdir()
            except FileNotFoundError:
                continue
            except OSError as exc:
                errors.append(f"cgroup {directory}: {exc.strerror}")
    return errors


def refuse_remote(engine: Engine) -> None:
    """Bind mounts name host paths: an engine on another machine would mount its own."""
    if not engine.url.startswith("unix://"):
        raise EngineRefused(
            f"the engine at {engine.url} is not on this machine: --sandbox=container "
            "bind-mounts this machine's project and files"
        )
