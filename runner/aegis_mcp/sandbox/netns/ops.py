"""The namespace control operations (``netmon_namespace_list``, ``netmon_namespace_cleanup``).

Served by the runner over its control socket beside the netmon operations
(their names are the MCP tools'), but they are the netns sandbox's business:
listing and removing what sandboxes leave behind.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ...control import validate
from ...control.boundary import with_codes
from ...control.protocol import FORBIDDEN, OpHandler
from . import namespaces


def namespace_ops() -> dict[str, OpHandler]:
    """Handlers for netmon_namespace_list and netmon_namespace_cleanup."""

    # Both import pyroute2 (130 ms) and read /proc: done in a thread so that
    # the runner's event loop keeps serving the agent meanwhile.
    async def namespace_list(args: dict[str, Any]) -> dict[str, Any]:
        validate.reject_unknown("netmon_namespace_list", args, ())
        found = await asyncio.to_thread(namespaces.list_namespaces)
        return {"namespaces": found, "count": len(found)}

    async def namespace_cleanup(args: dict[str, Any]) -> dict[str, Any]:
        validate.reject_unknown("netmon_namespace_cleanup", args, ())
        return await asyncio.to_thread(namespaces.cleanup_namespaces)

    table = {
        "netmon_namespace_list": namespace_list,
        "netmon_namespace_cleanup": namespace_cleanup,
    }
    # Removing a namespace needs root: refused rather than failed.
    return with_codes(table, {PermissionError: FORBIDDEN})
