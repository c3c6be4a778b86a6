"""The network namespaces aegis-mcp creates, and removing those left behind.

A runner that crashed leaves its namespaces mounted under ``/var/run/netns``;
cleanup removes those whose owner is gone (:mod:`.names` says whose a name
is) and never one of a live runner, nor anything that does not carry our name.
It then removes what such sandboxes leave on the host besides the mount (veth,
nft table, ``/etc/netns/<name>``, marker: :mod:`.leftovers`), each only when it
carries both our name and our tag.

pyroute2 is imported inside the functions: it costs about 130 ms, which
every agent start would otherwise pay (DESIGN.md fact 10).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from ..errors import NftablesMissingError
from . import markers
from .names import DEFAULT_RUN_DIR, PREFIX, name_owner_alive, parse_name

ROOT_HINT = "removing network namespaces needs root: sudo aegis-mcp netns cleanup"


def _markers_dir(state_dir: Path | None) -> Path:
    return Path(state_dir) if state_dir is not None else markers.DEFAULT_STATE_DIR


def leftovers_possible() -> bool:
    """Whether any aegis namespace or sandbox marker exists (cheap: no pyroute2 import)."""
    for directory in (DEFAULT_RUN_DIR, markers.DEFAULT_STATE_DIR):
        with contextlib.suppress(OSError):
            if any(name.startswith(PREFIX) for name in os.listdir(directory)):
                return True
    return False


def list_namespaces(
    run_dir: Path | None = None, state_dir: Path | None = None
) -> list[dict[str, Any]]:
    """The aegis namespaces that exist, sorted by name. Needs no root.

    ``run_dir`` is where named namespaces are mounted (``/var/run/netns``),
    ``state_dir`` where sandboxes keep their markers (``/run/aegis-mcp/netns``).
    """
    from pyroute2 import netns

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
    removed and kept (see :mod:`.leftovers`).
    Raises PermissionError when not root (unmounting a namespace needs it).
    """
    if os.geteuid() != 0:
        raise PermissionError(ROOT_HINT)
    from pyroute2 import netns

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
    try:
        # Imports pyroute2 and the sandbox set-up: paid only by a cleanup.
        from .leftovers import cleanup_leftovers

        result = cleanup_leftovers(state_dir)
    except NftablesMissingError:
        # Without nftables no sandbox could have been made: nothing to look for.
        return {"removed": [], "kept": [], "skipped": "nftables is not installed"}
    except Exception as exc:
        errors.append({"name": "sandbox resources", "error": str(exc)})
        return {"removed": [], "kept": []}
    errors.extend({"name": f"{e['kind']} {e['id']}", "error": e["error"]} for e in result["errors"])
    return {"removed": result["removed"], "kept": result["kept"]}
