"""The network namespaces aegis-mcp creates, listed with their owners.

A runner that crashed leaves its namespaces mounted under ``/var/run/netns``
(:mod:`.names` says whose a name is); removing them, with everything else its
sandboxes left, is :mod:`.leftovers`' business.

pyroute2 is imported inside the functions: it costs about 130 ms, which
every agent start would otherwise pay (DESIGN.md fact 10).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import markers
from .names import DEFAULT_RUN_DIR, name_owner_alive, parse_name


def _markers_dir(state_dir: Path | None) -> Path:
    return Path(state_dir) if state_dir is not None else markers.DEFAULT_STATE_DIR


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
