"""The names of aegis network namespaces, and whether their owner still runs.

A runner names its namespaces ``aegis-<runnerpid>`` (the agent's) or
``aegis-<runnerpid>-<agentid>`` (a pool agent's), so the name alone says who
owns one. A sandbox's marker file (:mod:`.markers`) names its owner by pid and
start time as well: where there is one, it decides whether the owner lives.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ...owners import owner_alive
from . import markers

PREFIX = "aegis-"
DEFAULT_RUN_DIR = Path("/var/run/netns")

_NAME = re.compile(r"aegis-(?P<pid>[1-9][0-9]{0,9})(?:-(?P<agent>[A-Za-z0-9][A-Za-z0-9_.-]*))?")


def namespace_name(runner_pid: int, agent_id: str | None = None) -> str:
    """The name a runner gives its namespace (or a pool agent's)."""
    return f"{PREFIX}{runner_pid}" if agent_id is None else f"{PREFIX}{runner_pid}-{agent_id}"


def parse_name(name: str) -> tuple[int, str | None] | None:
    """(owner pid, agent id or None) of an aegis namespace name; None for any other name."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    return int(match["pid"]), match["agent"]


def name_owner_alive(name: str, marker: dict[str, Any] | None) -> bool:
    """Whether the owner of aegis namespace (or sandbox) ``name`` still runs.

    Its sandbox ``marker`` decides where there is one (pid and start time),
    else the pid in the name (:func:`aegis_mcp.owners.owner_alive`).
    """
    if marker is not None:
        return markers.owner_alive(marker)
    parsed = parse_name(name)
    return parsed is not None and owner_alive(parsed[0])
