"""The agent's home inside the container: a named volume per user and agent kind.

What ``--continue`` needs lives in the agent's home (``~/.claude``,
``~/.claude.json``, ``~/.codex``, ``~/.gemini``, the demo agent's
conversations): the volume is mounted at the user's home path, so a
restarted container (a hot reload) or the next run finds the conversation.
One volume per user and agent kind keeps agents from reading each other's
credentials. Volumes are the user's data: runs never remove them (``docker
volume rm aegis-mcp-home-USER-KIND`` does).
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import Engine

PREFIX = "aegis-mcp-home"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def volume_name(user: str, agent_kind: str) -> str:
    """``aegis-mcp-home-<user>-<kind>``, with anything but ``[A-Za-z0-9_.-]`` as ``_``."""
    return f"{PREFIX}-{_UNSAFE.sub('_', user)}-{_UNSAFE.sub('_', agent_kind)}"


def ensure_volume(engine: Engine, name: str, uid: int, gid: int) -> str:
    """Create volume ``name`` if the engine has none; owned by ``uid:gid``. Returns its name.

    podman gives a new volume to the container's user at its first mount;
    Docker Engine leaves it root's, so there the runner (root) hands it over.
    """
    import docker.errors

    from .engine import refused

    try:
        volume = refused(engine.api.inspect_volume, name)
    except docker.errors.NotFound:
        volume = refused(
            engine.api.create_volume,
            name,
            labels={"aegis-mcp.volume": "home", "aegis-mcp.uid": str(uid)},
        )
    mountpoint = volume.get("Mountpoint") or ""
    if engine.kind == "docker" and not engine.rootless and os.geteuid() == 0 and mountpoint:
        with contextlib.suppress(OSError):
            st = os.stat(mountpoint)
            if (st.st_uid, st.st_gid) != (uid, gid) and not os.listdir(mountpoint):
                os.chown(mountpoint, uid, gid)
    return name
