"""The network namespaces aegis-mcp creates, and removing those left behind.

A runner names its namespaces ``aegis-<runnerpid>`` (the agent's) or
``aegis-<runnerpid>-<agentid>`` (a pool agent's), so the name alone says who
owns one. A runner that crashed leaves its namespaces mounted under
``/var/run/netns``; cleanup removes those whose owner is gone and never one
of a live runner, nor anything that does not carry our name.

A netns sandbox (:mod:`aegis_mcp.sandbox.netns`) also writes a marker file
naming its owner by pid and start time: where there is one, it decides
whether the owner lives. Cleanup then also removes what such sandboxes leave
on the host besides the mount (veth, nft table, ``/etc/netns/<name>``,
marker), each only when it carries both our name and our tag.

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


def name_owner_alive(name: str, marker: dict[str, Any] | None) -> bool:
    """Whether the owner of aegis namespace (or sandbox) ``name`` still runs.

    Its sandbox ``marker`` decides where there is one (pid and start time),
    else the pid in the name (:func:`owner_alive`).
    """
    if marker is not None:
        from ..sandbox.netns import markers

        return markers.owner_alive(marker)
    parsed = parse_name(name)
    return parsed is not None and owner_alive(parsed[0])


def _markers_dir(state_dir: Path | None) -> Path:
    from ..sandbox.netns import markers

    return Path(state_dir) if state_dir is not None else markers.DEFAULT_STATE_DIR


def list_namespaces(
    run_dir: Path | None = None, state_dir: Path | None = None
) -> list[dict[str, Any]]:
    """The aegis namespaces that exist, sorted by name. Needs no root.

    ``run_dir`` is where named namespaces are mounted (``/var/run/netns``),
    ``state_dir`` where sandboxes keep their markers (``/run/aegis-mcp/netns``).
    """
    from pyroute2 import netns

    from ..sandbox.netns import markers

    directory = Path(run_dir) if run_dir is not None else DEFAULT_RUN_DIR
    found_markers = {m["name"]: m for m in markers.read_markers(_markers_dir(state_dir))}
    found = []
    for name in sorted(netns.listnetns(str(directory))):
        parsed = parse_name(name)
        if parsed is None:
            continue
        pid, agent = parsed
        marker = found_markers.get(name)
        entry = {
            "name": name,
            "owner_pid": pid,
            "agent_id": agent,
            "owner_alive": name_owner_alive(name, marker),
            "path": str(directory / name),
        }
        if marker is not None:
            entry["sandbox"] = {
                key: marker.get(key) for key in ("subnet", "host_if", "host_table", "created_at")
            }
        found.append(entry)
    return found


def cleanup_namespaces(
    run_dir: Path | None = None, state_dir: Path | None = None
) -> dict[str, Any]:
    """Remove what runners that died left: namespaces, then their sandboxes' host resources.

    Returns ``removed``/``kept`` (namespace names), ``errors``, and
    ``resources``: the veths, nft tables, resolv.conf directories and markers
    removed and kept (see :mod:`aegis_mcp.sandbox.netns.leftovers`).
    Raises PermissionError when not root (unmounting a namespace needs it).
    """
    if os.geteuid() != 0:
        raise PermissionError(ROOT_HINT)
    from pyroute2 import netns

    from ..sandbox.netns import markers

    directory = _markers_dir(state_dir)
    removed: list[str] = []
    kept: list[str] = []
    errors: list[dict[str, str]] = []
    for entry in list_namespaces(run_dir, state_dir):
        # Asked again right before removing: the listing may be a moment old.
        name = entry["name"]
        if entry["owner_alive"] or name_owner_alive(name, markers.read_marker(directory, name)):
            kept.append(name)
            continue
        try:
            netns.remove(entry["path"])
        except FileNotFoundError:
            continue  # another cleanup got there first
        except OSError as exc:
            errors.append({"name": name, "error": str(exc)})
        else:
            removed.append(name)
    return {
        "removed": removed,
        "kept": kept,
        "errors": errors,
        "resources": _cleanup_sandbox_resources(state_dir, errors),
    }


def _cleanup_sandbox_resources(
    state_dir: Path | None, errors: list[dict[str, str]]
) -> dict[str, Any]:
    from ..sandbox.errors import NftablesMissingError

    try:
        from ..sandbox.netns.leftovers import cleanup_leftovers

        result = cleanup_leftovers(state_dir)
    except NftablesMissingError:
        # Without nftables no sandbox could have been made: nothing to look for.
        return {"removed": [], "kept": [], "skipped": "nftables is not installed"}
    except Exception as exc:
        errors.append({"name": "sandbox resources", "error": str(exc)})
        return {"removed": [], "kept": []}
    errors.extend({"name": f"{e['kind']} {e['id']}", "error": e["error"]} for e in result["errors"])
    return {"removed": result["removed"], "kept": result["kept"]}
