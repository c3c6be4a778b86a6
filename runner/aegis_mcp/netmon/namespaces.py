"""The network namespaces aegis-mcp creates, and removing those left behind.

A runner names its namespaces ``aegis-<runnerpid>`` (the agent's) or
``aegis-<runnerpid>-<agentid>`` (a pool agent's), so the name alone says who
owns one. A runner that crashed leaves its namespaces mounted under
``/var/run/netns``; cleanup removes those whose owner is gone and never one
of a live runner, nor anything that does not carry our name.

pyroute2 is imported inside the functions: it costs about 130 ms, which
every agent start would otherwise pay (DESIGN.md fact 10).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

PREFIX = "aegis-"
DEFAULT_RUN_DIR = Path("/var/run/netns")
ROOT_HINT = "removing network namespaces needs root: sudo aegis-mcp netns cleanup"

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


def owner_alive(pid: int) -> bool:
    """True if ``pid`` runs and its command line mentions aegis (a runner, not a reused pid)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        # The process exists but hides its command line (hidepid, another
        # user): treat it as alive; a namespace kept too long is harmless, one
        # pulled from under a running agent is not.
        return os.path.exists(f"/proc/{pid}")
    # A zombie (or a kernel thread) has an empty command line: not a runner.
    return b"aegis" in raw.lower()


def _run_dir(run_dir: Path | None) -> Path:
    if run_dir is not None:
        return Path(run_dir)
    from pyroute2 import netns

    return Path(netns.NETNS_RUN_DIR)


def list_namespaces(run_dir: Path | None = None) -> list[dict[str, Any]]:
    """The aegis namespaces that exist, sorted by name. Needs no root.

    ``run_dir`` is where named namespaces are mounted (``/var/run/netns``).
    """
    from pyroute2 import netns

    directory = _run_dir(run_dir)
    found = []
    for name in sorted(netns.listnetns(str(directory))):
        parsed = parse_name(name)
        if parsed is None:
            continue
        pid, agent = parsed
        found.append(
            {
                "name": name,
                "owner_pid": pid,
                "agent_id": agent,
                "owner_alive": owner_alive(pid),
                "path": str(directory / name),
            }
        )
    return found


def cleanup_namespaces(run_dir: Path | None = None) -> dict[str, Any]:
    """Remove the aegis namespaces whose owner is dead; returns removed/kept/errors.

    Raises PermissionError when not root (unmounting a namespace needs it).
    """
    if os.geteuid() != 0:
        raise PermissionError(ROOT_HINT)
    from pyroute2 import netns

    removed: list[str] = []
    kept: list[str] = []
    errors: list[dict[str, str]] = []
    for entry in list_namespaces(run_dir):
        # Asked again right before removing: the listing may be a moment old.
        if entry["owner_alive"] or owner_alive(entry["owner_pid"]):
            kept.append(entry["name"])
            continue
        try:
            netns.remove(entry["path"])
        except FileNotFoundError:
            continue  # another cleanup got there first
        except OSError as exc:
            errors.append({"name": entry["name"], "error": str(exc)})
        else:
            removed.append(entry["name"])
    return {"removed": removed, "kept": kept, "errors": errors}
