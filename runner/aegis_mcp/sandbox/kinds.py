"""The sandbox kinds, named once for the command line, the pool, the MCP tools and the backends."""

from __future__ import annotations

from typing import Literal, get_args

SandboxKind = Literal["none", "netns", "container"]
SANDBOX_KINDS: tuple[str, ...] = get_args(SandboxKind)
