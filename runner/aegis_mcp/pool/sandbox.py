"""The ``sandbox`` option of pool agents, and the hook a host uses to provide sandboxes.

The pool knows no sandbox implementation (they need root, namespaces, a
container engine: the host's business). A host that has one passes
``confine_for(kind, agent_id)``, which returns the ``SpawnSpec.confine`` steps
that put the agent's process into it (run in the child before the privilege
drop). The hook is asked for every agent, ``"none"`` included, since a host may
confine all of them in some way (a monitored cgroup). Without the hook only
``"none"`` is accepted. The hook is called when
the agent starts, not when it is queued, so queued agents hold no namespaces;
a hook that fails makes the agent ``failed`` with its message. Tearing a
sandbox down after the agent ends is the host's job (``AgentPool.add_listener``
tells it when).
"""

from __future__ import annotations

from collections.abc import Callable

from ..control import validate
from ..sandbox.kinds import SANDBOX_KINDS

ConfineStep = Callable[[], None]
ConfineFor = Callable[[str, str], tuple[ConfineStep, ...]]
"""``(sandbox kind, agent_id) -> confine steps`` for one agent."""


def check_sandbox(value: object, confine_for: ConfineFor | None) -> str:
    """``value`` as a ``sandbox`` argument, refused when this host cannot provide it."""
    kind = validate.string("sandbox", value)
    if kind not in SANDBOX_KINDS:
        raise validate.invalid(f"sandbox must be one of {', '.join(SANDBOX_KINDS)}, got {kind!r}")
    if kind != "none" and confine_for is None:
        raise validate.invalid(
            f'sandbox="{kind}" is not available in this version for pool agents: use sandbox="none"'
        )
    return kind


def confine_steps(
    kind: str, agent_id: str, confine_for: ConfineFor | None
) -> tuple[ConfineStep, ...]:
    """The confine steps for one agent (none without a hook)."""
    if confine_for is None:
        return ()
    return tuple(confine_for(kind, agent_id))
