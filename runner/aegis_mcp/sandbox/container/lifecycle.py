"""One container's life through the docker SDK: create, attach, start, signal, wait, remove.

Every container carries labels saying whose it is (:func:`labels`): the
runner's pid and start time and the agent's id, so that a runner that died
can be told from one that lives (:mod:`.leftovers`). The low-level API is used
throughout: some settings exist only there (``UsernsMode = keep-id``, which
docker-py's high-level API refuses), and an attach connection made before the
start loses none of the agent's first output.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .engine import refused

if TYPE_CHECKING:
    from .engine import Engine

LABEL_OWNER = "aegis-mcp.owner"
LABEL_OWNER_START = "aegis-mcp.owner-start"
LABEL_AGENT = "aegis-mcp.agent"
LABEL_ROLE = "aegis-mcp.role"
ROLE_AGENT = "agent"
ROLE_NETNS = "netns"
"""A container that only holds a network namespace (Docker Engine, which cannot join ours)."""
STOP_SECS = 2


def labels(runner_pid: int, owner_start: int | None, agent_id: str, role: str) -> dict[str, str]:
    """The labels of a container made by runner ``runner_pid`` for agent ``agent_id``;
    ``owner_start`` is the runner's start time in clock ticks, so that a reused pid is
    never taken for the runner."""
    found = {LABEL_OWNER: str(runner_pid), LABEL_AGENT: agent_id, LABEL_ROLE: role}
    if owner_start is not None:
        found[LABEL_OWNER_START] = str(owner_start)
    return found


@dataclass
class ContainerConfig:
    """What a container is made of (everything but the engine)."""

    image: str
    command: list[str]
    labels: dict[str, str]
    name: str
    user: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    tty: bool = False
    stdin: bool = False
    binds: list[str] = field(default_factory=list)
    network_mode: str | None = None
    keep_id: bool = False
    cgroup_parent: str | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    hostname: str | None = None


@dataclass
class Container:
    """A container the engine has made, and the attach connection to its terminal."""

    engine: Engine
    id: str
    name: str
    tty: bool
    attachment: Any = None
    _removed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, engine: Engine, config: ContainerConfig) -> Container:
        """Create (not start) the container; EngineRefused with the engine's message."""
        api = engine.api
        host_config = refused(
            api.create_host_config,
            binds=config.binds,
            network_mode=config.network_mode,
            cgroupns="private",
            cgroup_parent=config.cgroup_parent,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            **config.limits,
        )
        if config.keep_id:
            # Rootless podman: the user's uid is the same inside, so files on the bind
            # mounts stay the user's (the high-level API refuses this mode).
            host_config["UsernsMode"] = "keep-id"
        answer = refused(
            api.create_container,
            config.image,
            config.command,
            name=config.name,
            user=config.user,
            environment=config.env,
            working_dir=config.workdir,
            tty=config.tty,
            stdin_open=config.stdin,
            labels=config.labels,
            host_config=host_config,
            hostname=config.hostname,
        )
        engine.created.set()
        return cls(engine, answer["Id"], config.name, config.tty)

    def attach(self, stdin: bool) -> socket.socket:
        """The container's terminal (or multiplexed output) as a socket; call before start."""
        attachment = refused(
            self.engine.api.attach_socket,
            self.id,
            params={"stdin": int(stdin), "stdout": 1, "stderr": 1, "stream": 1},
        )
        self.attachment = attachment
        # Attached, the container is initialised: its conmon runs until the exit.
        self.engine.learn_exit_dir(self.id)
        # docker-py hands back the response's socket wrapped in a SocketIO: the raw
        # socket is what a child process can inherit.
        return attachment._sock

    def start(self) -> None:
        """Start it."""
        refused(self.engine.api.start, self.id)

    def resize(self, rows: int, cols: int) -> None:
        """Set its terminal's size."""
        if self.tty and rows > 0 and cols > 0:
            refused(self.engine.api.resize, self.id, height=rows, width=cols)

    def kill(self, sig: int) -> None:
        """Send ``sig`` to its first process (tini, which passes it to the agent's group)."""
        refused(self.engine.api.kill, self.id, signal=sig)

    def wait(self, output_ended: threading.Event | None = None) -> int:
        """Block until it exits; its exit code (128+N after signal N). ``output_ended``:
        see :meth:`.engine.Engine.wait_exit`."""
        return self.engine.wait_exit(self.id, output_ended)

    def inspect(self) -> dict[str, Any]:
        """The engine's view of it now."""
        return refused(self.engine.api.inspect_container, self.id)

    def pid(self) -> int | None:
        """Its first process's pid on the host, while it runs."""
        state = self.inspect().get("State") or {}
        return state.get("Pid") or None

    def remove(self) -> bool:
        """Remove it, killing it if it still runs (idempotent); False if it was already gone.

        A second caller waits for the first one's removal to finish: when it returns,
        the container is gone (or the engine said why not).
        """
        import docker.errors

        with self._lock:
            if self._removed:
                return False
            self._removed = True
            if self.attachment is not None:
                with contextlib.suppress(Exception):
                    self.attachment.close()
            try:
                refused(self.engine.api.remove_container, self.id, force=True, v=False)
            except docker.errors.NotFound:
                return False
            return True
