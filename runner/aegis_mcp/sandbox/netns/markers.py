"""Marker files: what a sandbox created, and who owns it.

Each sandbox writes ``<state dir>/<namespace name>.json`` (``/run/aegis-mcp/netns``
by default) *before* it creates anything, and removes it last. The marker
names every resource (namespace, host veth, nft table, resolv.conf directory,
subnet) and the owner by pid *and* start time, so that a reused pid is not
taken for a live owner, and a live owner is known without guessing from its
command line. Cleanup removes a resource only when both its name has our
prefix and a marker (or the resource's own tag: the veth's alias, the
table's comment) says who owns it.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from ...files import write_atomic
from ...owners import process_start_time
from ...paths import ROOT_RUNTIME_DIR
from ...safe_paths import UnsafeDirectoryError, private_dir
from ..errors import SandboxError

DEFAULT_STATE_DIR = ROOT_RUNTIME_DIR / "netns"
SUFFIX = ".json"


def owner_alive(marker: dict[str, Any]) -> bool:
    """Whether the process that wrote ``marker`` still runs (same pid, same start time)."""
    pid = marker.get("owner_pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    start = process_start_time(pid)
    return start is not None and start == marker.get("owner_start")


def checked_dir(path: Path, what: str) -> Path:
    """``path`` made (0755) if missing, and checked: it and every directory above it
    can be changed by root alone (SandboxError naming what is wrong otherwise)."""
    try:
        return private_dir(path, 0o755)
    except UnsafeDirectoryError as exc:
        raise SandboxError(f"refusing the {what} {path}: {exc}") from None


def state_dir(path: Path | None = None) -> Path:
    """The marker directory, created (root only, 0755) and checked on demand."""
    return checked_dir(Path(path) if path is not None else DEFAULT_STATE_DIR, "marker directory")


def marker_path(directory: Path, name: str) -> Path:
    """Where the marker of namespace ``name`` lives."""
    return directory / f"{name}{SUFFIX}"


def write_marker(directory: Path, data: dict[str, Any]) -> Path:
    """Write (or replace) a marker atomically."""
    path = marker_path(directory, data["name"])
    write_atomic(path, json.dumps(data, indent=1).encode(), mode=0o644)
    return path


def read_marker(directory: Path, name: str) -> dict[str, Any] | None:
    """The marker of ``name``, None if missing or unreadable."""
    try:
        data = json.loads(marker_path(directory, name).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("name") == name else None


def read_markers(directory: Path) -> list[dict[str, Any]]:
    """Every readable marker in ``directory``."""
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        marker = read_marker(directory, path.name[: -len(SUFFIX)])
        if marker is not None:
            found.append(marker)
    return found


def remove_marker(directory: Path, name: str) -> None:
    """Remove the marker of ``name`` (no error if it is gone)."""
    with contextlib.suppress(FileNotFoundError):
        marker_path(directory, name).unlink()
