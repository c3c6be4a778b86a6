"""Containers that runners which died left behind: found by their labels, removed.

A runner removes its containers when it ends; one killed with SIGKILL cannot.
Its containers still carry ``aegis-mcp.owner=<pid>`` and the owner's start
time: where no process with that pid and start time runs, they are leftovers
(:func:`find_dead`). The runner of a container run removes them from its engine
when it starts, and ``aegis-mcp cleanup`` does it for every engine it finds
(:func:`cleanup_engines`). A live runner's containers are never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...owners import owner_alive
from ..netns.markers import process_start_time
from .lifecycle import LABEL_AGENT, LABEL_OWNER, LABEL_OWNER_START, LABEL_ROLE

if TYPE_CHECKING:
    from .engine import Engine


def owner_is_alive(found: dict[str, str]) -> bool:
    """Whether the runner named by a container's labels still runs."""
    pid_text = found.get(LABEL_OWNER, "")
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    start = found.get(LABEL_OWNER_START, "")
    if start.isdigit():
        return process_start_time(pid) == int(start)
    return owner_alive(pid)


def find_dead(engine: Engine) -> list[dict[str, Any]]:
    """The engine's aegis-mcp containers whose runner is gone: id, name, owner, agent, role."""
    from .engine import refused

    listed = refused(engine.api.containers, all=True, filters={"label": LABEL_OWNER})
    dead = []
    for entry in listed:
        found = entry.get("Labels") or {}
        if owner_is_alive(found):
            continue
        names = entry.get("Names") or [entry["Id"][:12]]
        dead.append(
            {
                "id": entry["Id"],
                "name": names[0].lstrip("/"),
                "owner_pid": found.get(LABEL_OWNER),
                "agent": found.get(LABEL_AGENT),
                "role": found.get(LABEL_ROLE),
            }
        )
    return dead


def remove_dead(engine: Engine, dry_run: bool = False) -> dict[str, list[str]]:
    """Remove (or, ``dry_run``, only list) the containers of dead runners.

    Returns ``{"removed": [names], "errors": [messages]}``; never raises for one
    container's failure.
    """
    import docker.errors

    from ..errors import SandboxError
    from .engine import refused

    result: dict[str, list[str]] = {"removed": [], "errors": []}
    try:
        dead = find_dead(engine)
    except SandboxError as exc:
        result["errors"].append(str(exc))
        return result
    for entry in dead:
        label = f"{entry['name']} (runner {entry['owner_pid']}, agent {entry['agent']})"
        if dry_run:
            result["removed"].append(label)
            continue
        try:
            refused(engine.api.remove_container, entry["id"], force=True)
        except docker.errors.NotFound:
            continue
        except SandboxError as exc:
            result["errors"].append(f"{label}: {exc}")
            continue
        result["removed"].append(label)
    return result


CGROUP_PARENT = "aegis-mcp"
_CGROUP_NAME = re.compile(r"(?P<pid>[1-9][0-9]{0,9})-[A-Za-z0-9][A-Za-z0-9_.-]*")


def remove_dead_cgroup_parents(mounts: Path = Path("/proc/self/mounts")) -> list[str]:
    """Remove the empty cgroup v1 directories ``aegis-mcp/<pid>-<agent>`` of dead runners.

    An engine makes a container's cgroup parent (the eBPF source's cgroup, named
    so) in every v1 hierarchy too; a runner that was killed leaves them there.
    """
    removed = []
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return removed
    for fields in (line.split() for line in lines):
        if len(fields) < 3 or fields[2] != "cgroup":
            continue
        parent = Path(fields[1]) / CGROUP_PARENT
        with contextlib.suppress(OSError):
            for entry in parent.iterdir():
                match = _CGROUP_NAME.fullmatch(entry.name)
                if match is None or owner_alive(int(match["pid"])):
                    continue
                with contextlib.suppress(OSError):
                    entry.rmdir()
                    removed.append(str(entry))
    return removed


def cleanup_engines(
    configured: str | None, private_paths: tuple[Any, Any], dry_run: bool = False
) -> dict[str, list[str]]:
    """:func:`remove_dead` in every engine that answers here (a private podman if need be)."""
    from ..errors import SandboxError
    from .engine import candidates, connect

    total: dict[str, list[str]] = {"removed": [], "errors": [], "engines": []}
    found_all = candidates(configured, os.environ)
    podman_socket = any(c.kind == "podman" and not c.private for c in found_all)
    for candidate in found_all:
        if candidate.private and podman_socket:
            continue  # the same storage, already seen through its socket
        try:
            engine = connect(candidate, private_paths)
        except SandboxError as exc:
            total["errors"].append(f"{candidate.describe()}: {exc}")
            continue
        try:
            total["engines"].append(candidate.describe())
            found = remove_dead(engine, dry_run)
        finally:
            with contextlib.suppress(Exception):
                engine.close()
        total["removed"] += found["removed"]
        total["errors"] += found["errors"]
    return total
