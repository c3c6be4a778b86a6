"""The few namespace and mount syscalls Python 3.11's ``os`` lacks, through ctypes.

The function objects are bound once at import, so that calling them in a
child between fork and exec needs no symbol lookup (the dynamic loader's lock
may be held by another thread of the parent at fork time).
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_unshare = _libc.unshare
_unshare.argtypes = [ctypes.c_int]
_setns = _libc.setns
_setns.argtypes = [ctypes.c_int, ctypes.c_int]
_mount = _libc.mount
_mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_void_p,
]
_umount2 = _libc.umount2
_umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _check(result: int, what: str, path: bytes | None = None) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path.decode() if path else None)


def unshare(flags: int) -> None:
    """unshare(2) for the calling thread (CLONE_NEWNET) or process."""
    _check(_unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    """setns(2): move the calling thread into the namespace ``fd`` refers to."""
    _check(_setns(fd, nstype), "setns")


def mount(source: bytes | None, target: bytes, fstype: bytes | None, flags: int) -> None:
    """mount(2) with no data argument; paths as bytes (prepared before a fork)."""
    _check(_mount(source, target, fstype, flags, None), "mount", target)


def unmount_detached(target: bytes) -> None:
    """umount2(2) with MNT_DETACH: the mount goes now, its users keep it until they let go."""
    _check(_umount2(target, MNT_DETACH), "umount", target)
