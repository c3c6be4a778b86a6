"""What a rootless engine needs of the machine and of the user, said exactly where it is missing.

Rootless podman maps the container's users into the user's subordinate id
ranges (``/etc/subuid``, ``/etc/subgid``) with the setuid helpers
``newuidmap``/``newgidmap`` (Debian package ``uidmap``), keeps its sockets and
state in a ``0700`` ``$XDG_RUNTIME_DIR``, and gives containers a network
through ``slirp4netns``, which opens ``/dev/net/tun`` as the user (0600 on some
machines: then only ``network = "none"`` works). With ``keep-id`` the user's
own uid is the same inside, so files the agent writes on the bind mount are
the user's.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")
TUN = Path("/dev/net/tun")
MAX_USER_NAMESPACES = Path("/proc/sys/user/max_user_namespaces")
MIN_SUBIDS = 65536
"""What podman gives a user by default; fewer ids break images with high-uid files."""


def subordinate_ids(table: Path, name: str, uid: int) -> int:
    """How many subordinate ids ``table`` gives the user (by name or by uid)."""
    try:
        lines = table.read_text().splitlines()
    except OSError:
        return 0
    total = 0
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in (name, str(uid)) and fields[2].isdigit():
            total += int(fields[2])
    return total


def missing_prerequisites(name: str, uid: int, runtime_dir: str | None) -> list[str]:
    """What keeps ``name`` (``uid``) from running a rootless podman, one item each."""
    missing = []
    try:
        limit = int(MAX_USER_NAMESPACES.read_text())
    except (OSError, ValueError):
        limit = 0
    if limit <= 0:
        missing.append(f"user namespaces are off ({MAX_USER_NAMESPACES} is {limit})")
    for helper in ("newuidmap", "newgidmap"):
        if shutil.which(helper) is None:
            missing.append(f"{helper} is not installed (apt-get install uidmap)")
    for table in (SUBUID, SUBGID):
        count = subordinate_ids(table, name, uid)
        if count < MIN_SUBIDS:
            missing.append(
                f"{table} gives {name} {count} ids, not {MIN_SUBIDS} "
                f"(`sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}`)"
            )
    missing.extend(runtime_dir_problems(uid, runtime_dir))
    return missing


def runtime_dir_problems(uid: int, runtime_dir: str | None) -> list[str]:
    """Why ``runtime_dir`` cannot hold a rootless engine's sockets (empty list: it can)."""
    if not runtime_dir:
        return [
            "XDG_RUNTIME_DIR is not set (log in through a session manager, or create "
            f"/run/user/{uid} owned by you with mode 0700 and export XDG_RUNTIME_DIR)"
        ]
    try:
        st = os.stat(runtime_dir)
    except OSError as exc:
        return [f"XDG_RUNTIME_DIR {runtime_dir}: {exc.strerror}"]
    if st.st_uid != uid or stat.S_IMODE(st.st_mode) & 0o077:
        return [f"XDG_RUNTIME_DIR {runtime_dir} must be owned by uid {uid} with mode 0700"]
    return []


def tun_problem() -> str | None:
    """Why slirp4netns cannot give a rootless container a network here, or None.

    Asked by opening the device as this process: what slirp4netns, started by
    this user's engine, will be allowed to do.
    """
    if shutil.which("slirp4netns") is None:
        return "slirp4netns is not installed (apt-get install slirp4netns)"
    try:
        fd = os.open(TUN, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return f"{TUN} does not exist (modprobe tun)"
    except PermissionError:
        mode = stat.filemode(os.stat(TUN).st_mode)
        return (
            f"{TUN} is {mode}: slirp4netns cannot open it as uid {os.geteuid()} "
            f"(`sudo chmod 0666 {TUN}`, the default on most distributions)"
        )
    except OSError as exc:
        return f"{TUN}: {exc.strerror}"
    os.close(fd)
    return None
