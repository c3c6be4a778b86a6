"""What every sandbox backend is: the interface the runner and the pool use.

A backend is made for one agent (:func:`aegis_mcp.sandbox.get_sandbox`), then
asked for the spec to run the agent's process with (:meth:`Sandbox.wrap`):
it may change the command line (a container engine's client in front of the
agent's), the environment, the working directory, the steps run in the child
before exec (enter a namespace), who the process runs as, and where signals
for it must go besides its own session (:attr:`SpawnSpec.forward_signal`:
how a process the engine started is stopped). ``describe()`` is its part of
the runner's status; ``teardown()`` removes all it made, once the agent is gone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..processes import SpawnSpec
from .kinds import SandboxKind

if TYPE_CHECKING:
    from pathlib import Path

    from .container.settings import ContainerSettings
    from .policy import Policy

EventSink = Callable[[dict[str, Any]], object]
"""Where a backend's network events go (netmon's event schema, ``source: "netns"``)."""


@dataclass(frozen=True)
class SandboxRequest:
    """What a backend needs to make one agent's sandbox."""

    runner_pid: int
    agent_id: str | None = None
    """None for the runner's primary agent; a pool agent's id otherwise."""
    policy: Policy | None = None
    """The egress policy (None: allow everything)."""
    address_pool: str = "10.213.0.0/16"
    """Private range that network backends cut the agents' subnets from."""
    prefixlen: int = 30
    on_event: EventSink | None = None
    """Receives the network events the backend sees, from any thread."""
    agent_kind: str = "agent"
    """The agent's profile name (a container's home volume is per user and kind)."""
    share: tuple[Path, ...] = ()
    """The runner's files the agent's environment names (control socket, MCP
    overlay, netmon log): a backend that hides the host must show them, at the same paths."""
    scratch: Mapping[str, Path] = field(default_factory=dict)
    """Runner-owned paths a backend may make files at, by use (``passwd``, ``group``:
    a container's; ``engine_socket``, ``engine_log``: a private engine service's); the
    runner removes them at its end, and a later runner those of one that died."""
    container: ContainerSettings | None = None
    """The ``[container]`` settings."""


class Sandbox(ABC):
    """One agent's sandbox (see the module docstring)."""

    kind: ClassVar[SandboxKind]

    @abstractmethod
    def wrap(self, spec: SpawnSpec) -> SpawnSpec:
        """The spec that runs ``spec``'s agent inside this sandbox."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able state for the runner's status (``kind`` first)."""

    @abstractmethod
    def teardown(self) -> list[str]:
        """Remove everything the sandbox made; idempotent. Returns what failed (messages)."""
