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
    """Create volume ``name`` if the engine has none. Returns its name.

    podman gives a new volume to the container's user at its first mount; Docker
    Engine does not: see :func:`hand_over`.
    """
    import docker.errors

    from .engine import refused

    try:
        refused(engine.api.inspect_volume, name)
    except docker.errors.NotFound:
        refused(
            engine.api.create_volume,
            name,
            labels={"aegis-mcp.volume": "home", "aegis-mcp.uid": str(uid)},
        )
    return name


def hand_over(engine: Engine, name: str, uid: int, gid: int) -> None:
    """Give the top of volume ``name`` to ``uid:gid`` on a rootful Docker Engine.

    Called once the container is created: Docker then copies the ownership of the
    image's directory at the mount point (root's, made for the working directory
    inside the home) onto a new, empty volume, and the agent could write nothing
    in its home (Claude Code then keeps no conversation for ``--continue``).
    Only the volume's own directory is changed, never what is in it.
    """
    if engine.kind != "docker" or engine.rootless or os.geteuid() != 0:
        return
    from .engine import refused

    mountpoint = refused(engine.api.inspect_volume, name).get("Mountpoint") or ""
    with contextlib.suppress(OSError):
        st = os.stat(mountpoint)
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.chown(mountpoint, uid, gid)
