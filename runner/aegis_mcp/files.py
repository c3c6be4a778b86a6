"""Writing files safely.

Every file aegis-mcp creates is made with ``O_CREAT | O_EXCL | O_NOFOLLOW``
(a name planted in advance, a symlink above all, makes the creation fail
instead of redirecting it), gets its mode and owner through its descriptor
(``fchmod``/``fchown``, never through a path), and lives in a directory that
:mod:`.safe_paths` checked.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

_NEW = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def create_new(
    path: Path,
    mode: int = 0o600,
    owner: tuple[int, int] | None = None,
    flags: int = os.O_WRONLY,
    replace: bool = False,
) -> int:
    """Create ``path`` (which must not exist) and return its descriptor.

    The file gets exactly ``mode`` (whatever the umask) and, if given,
    ``owner``. With ``replace``, a file already there (a dead process's,
    under a reused name) is unlinked first: unlinking a planted symlink
    removes the link, never its target.
    """
    if replace:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    fd = os.open(path, flags | _NEW, mode)
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return fd


def write_atomic(
    path: Path, data: bytes, mode: int = 0o600, owner: tuple[int, int] | None = None
) -> None:
    """Replace ``path`` with ``data`` so that readers never see a partial file.

    The file gets exactly ``mode`` (whatever the umask) and, if given, ``owner``.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # A temporary file of ours left by a crash (same pid, later) is replaced.
    fd = create_new(tmp, mode, owner, replace=True)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)


def read_own_json(path: Path, limit: int = 1 << 24) -> object | None:
    """The JSON in ``path`` if it is a regular file of this process's user that nobody else
    can write (a cache whose content is trusted as is); None when it is missing, someone
    else's, open to others' writes, or not JSON. A symlink is not followed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or info.st_mode & 0o022 or not stat.S_ISREG(info.st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as file:
            return json.loads(file.read(limit))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
