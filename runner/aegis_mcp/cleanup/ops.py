"""The control operation that sweeps leftovers: ``netmon_namespace_cleanup`` (the MCP tool's
name, kept from the original; it removes every kind, not only namespaces)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from ..control import validate
from ..control.authority import LOCAL, Caller
from ..control.boundary import with_codes
from ..control.protocol import FORBIDDEN, OpHandler
from .sweep import ROOT_HINT, sweep


def cleanup_ops() -> dict[str, OpHandler]:
    """The handler of netmon_namespace_cleanup."""

    async def cleanup(args: dict[str, Any], caller: Caller = LOCAL) -> dict[str, Any]:
        validate.reject_unknown("netmon_namespace_cleanup", args, ())
        if os.geteuid() != 0:
            raise PermissionError(f"removing what dead runners left {ROOT_HINT}")
        # pyroute2 and /proc scans: in a thread, so that the runner keeps serving.
        report = await asyncio.to_thread(sweep)
        return report.to_dict()

    # Refused rather than failed.
    return with_codes({"netmon_namespace_cleanup": cleanup}, {PermissionError: FORBIDDEN})
