"""The namespace listing operation (``netmon_namespace_list``).

Served by the runner over its control socket beside the netmon operations
(its name is the MCP tool's), but it is the netns sandbox's business. Its
sibling ``netmon_namespace_cleanup`` removes every kind of leftover, so it
lives with the clean-up that composes them (:mod:`aegis_mcp.cleanup.ops`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ...control import validate
from ...control.authority import LOCAL, Caller
from ...control.protocol import OpHandler
from . import namespaces


def namespace_ops() -> dict[str, OpHandler]:
    """The handler of netmon_namespace_list."""

    # It imports pyroute2 (130 ms) and reads /proc: done in a thread so that
    # the runner's event loop keeps serving the agent meanwhile.
    async def namespace_list(args: dict[str, Any], caller: Caller = LOCAL) -> dict[str, Any]:
        validate.reject_unknown("netmon_namespace_list", args, ())
        found = await asyncio.to_thread(namespaces.list_namespaces)
        return {"namespaces": found, "count": len(found)}

    return {"netmon_namespace_list": namespace_list}
