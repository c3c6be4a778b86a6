"""The ``sandbox`` option of pool agents, and the hook a host uses to provide sandboxes.

The pool knows no sandbox implementation (they need root, namespaces, a
container engine: the host's business). A host that has one passes
``sandbox_for(kind, agent_id, spec)``, which returns the spawn spec that runs
the agent in a new sandbox of that kind (see :class:`aegis_mcp.sandbox.base.Sandbox`).
The hook is asked for every agent, ``"none"`` included, since a host may
confine all of them in some way (a monitored cgroup). Without the hook only
``"none"`` is accepted. The hook is called when the agent starts, not when it
is queued, so queued agents hold no namespaces; a hook that fails makes the
agent ``failed`` with its message. Tearing a sandbox down after the agent ends
is the host's job (``AgentPool.add_listener`` tells it when).
"""

from __future__ import annotations

from collections.abc import Callable

from ..control import validate
from ..processes import SpawnSpec
from ..sandbox.kinds import SANDBOX_KINDS

SandboxFor = Callable[[str, str, SpawnSpec], SpawnSpec]
"""``(sandbox kind, agent_id, spec) -> the spec to run`` for one agent."""


def check_sandbox(value: object, sandbox_for: SandboxFor | None) -> str:
    """``value`` as a ``sandbox`` argument, refused when this host cannot provide it."""
    kind = validate.string("sandbox", value)
    if kind not in SANDBOX_KINDS:
        raise validate.invalid(f"sandbox must be one of {', '.join(SANDBOX_KINDS)}, got {kind!r}")
    if kind != "none" and sandbox_for is None:
        raise validate.invalid(
            f'sandbox="{kind}" is not available in this version for pool agents: use sandbox="none"'
        )
    return kind


def in_sandbox(
    kind: str, agent_id: str, spec: SpawnSpec, sandbox_for: SandboxFor | None
) -> SpawnSpec:
    """The spec that runs one agent in its sandbox (``spec`` itself without a hook)."""
    if sandbox_for is None:
        return spec
    return sandbox_for(kind, agent_id, spec)
