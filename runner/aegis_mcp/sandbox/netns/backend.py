"""The ``netns`` backend as :func:`aegis_mcp.sandbox.get_sandbox` makes it."""

from __future__ import annotations

from pathlib import Path

from ..base import SandboxRequest
from ..errors import SandboxError
from .pool import AddressPool
from .sandbox import NetnsSandbox, check_can_create, create_sandbox


def problem() -> str | None:
    """Why no netns sandbox can be made here (root, nftables), or None."""
    try:
        check_can_create()
    except SandboxError as exc:
        return str(exc)
    return None


def create(request: SandboxRequest, adopt: Path | None = None) -> NetnsSandbox:
    """Create and start the agent's namespace (see :func:`.sandbox.create_sandbox`);
    ``adopt``: set up an existing one instead (a container's)."""
    return create_sandbox(
        request.runner_pid,
        request.agent_id,
        request.policy,
        AddressPool(request.address_pool, request.prefixlen),
        on_event=request.on_event,
        adopt=adopt,
    )
