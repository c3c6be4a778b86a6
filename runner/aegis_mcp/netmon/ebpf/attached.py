"""The BPF programs attached to a cgroup, found and detached without BCC.

A runner killed after attaching leaves its programs on its cgroup: they were
attached with ``BPF_PROG_ATTACH`` (not a link), which outlives the process that
loaded them. Removing them needs their ids (``BPF_PROG_QUERY``), a descriptor
for each (``BPF_PROG_GET_FD_BY_ID``) and ``BPF_PROG_DETACH``. BCC's Python front
has none of these and libbcc does not export libbpf's, so the three commands go
straight to the ``bpf`` system call: a clean-up must work without compiling
anything, and without BCC at all.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform

BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
ATTACH_TYPES = range(64)
"""Every ``enum bpf_attach_type`` value a kernel may have: a cgroup answers EINVAL
for those that are not cgroup hooks (or that this kernel does not know)."""
_NOT_A_CGROUP_HOOK = {errno.EINVAL, errno.ENODEV, errno.EOPNOTSUPP, errno.EBADF}
"""What the kernel answers a query for a type that is no cgroup hook (or unknown to it)."""
MAX_PROGRAMS = 64
_ATTR_SIZE = 128
_SYSCALL = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "ppc64le": 361, "s390x": 351}

_libc = ctypes.CDLL(None, use_errno=True)


class BpfSyscallUnavailable(OSError):
    """This machine's architecture has no known bpf syscall number here."""


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    number = _SYSCALL.get(platform.machine())
    if number is None:
        raise BpfSyscallUnavailable(f"no bpf syscall number known for {platform.machine()}")
    result = _libc.syscall(
        ctypes.c_long(number), ctypes.c_int(cmd), attr, ctypes.c_uint(_ATTR_SIZE)
    )
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def _attr(*fields: tuple[int, int, int]) -> ctypes.Array[ctypes.c_char]:
    """A zeroed ``union bpf_attr`` with ``(offset, size, value)`` fields set."""
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    for offset, size, value in fields:
        ctypes.memmove(ctypes.addressof(attr) + offset, value.to_bytes(size, "little"), size)
    return attr


def query(cgroup_fd: int, attach_type: int) -> list[int]:
    """Ids of the programs attached directly to the cgroup at ``attach_type``."""
    ids = (ctypes.c_uint32 * MAX_PROGRAMS)()
    # struct { target_fd, attach_type, query_flags, attach_flags; u64 prog_ids; prog_cnt }
    attr = _attr(
        (0, 4, cgroup_fd),
        (4, 4, attach_type),
        (16, 8, ctypes.addressof(ids)),
        (24, 4, MAX_PROGRAMS),
    )
    try:
        _bpf(BPF_PROG_QUERY, attr)
    except OSError as exc:
        if exc.errno in _NOT_A_CGROUP_HOOK:
            return []
        raise
    count = int.from_bytes(attr.raw[24:28], "little")
    return list(ids[: min(count, MAX_PROGRAMS)])


def program_id(prog_fd: int) -> int:
    """The kernel's id of the program behind ``prog_fd``."""
    info = ctypes.create_string_buffer(16)  # struct bpf_prog_info: type, id, ...
    # struct { bpf_fd, info_len; u64 info }
    _bpf(
        BPF_OBJ_GET_INFO_BY_FD,
        _attr((0, 4, prog_fd), (4, 4, len(info)), (8, 8, ctypes.addressof(info))),
    )
    return int.from_bytes(info.raw[4:8], "little")


def attached(cgroup_fd: int) -> list[tuple[int, int]]:
    """``(attach_type, program id)`` of every program attached to the cgroup."""
    return [(kind, prog) for kind in ATTACH_TYPES for prog in query(cgroup_fd, kind)]


def program_exists(prog_id: int) -> bool:
    """Whether a program with this id is still loaded (not yet freed by the kernel)."""
    try:
        fd = _bpf(BPF_PROG_GET_FD_BY_ID, _attr((0, 4, prog_id)))
    except OSError:
        return False
    os.close(fd)
    return True


def detach_all(cgroup_fd: int) -> int:
    """Detach every program attached to the cgroup; returns how many were."""
    count = 0
    for kind, prog in attached(cgroup_fd):
        try:
            prog_fd = _bpf(BPF_PROG_GET_FD_BY_ID, _attr((0, 4, prog)))
        except FileNotFoundError:
            continue  # freed meanwhile
        try:
            # struct { target_fd, attach_bpf_fd, attach_type, attach_flags }
            _bpf(BPF_PROG_DETACH, _attr((0, 4, cgroup_fd), (4, 4, prog_fd), (8, 4, kind)))
            count += 1
        except FileNotFoundError:
            pass  # detached by someone else meanwhile
        finally:
            with contextlib.suppress(OSError):
                os.close(prog_fd)
    return count
