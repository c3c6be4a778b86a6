"""Proof that the eBPF source sees the agents: its programs are attached to the agent's
cgroup, and the agents' processes are in it.

The kernel is asked, not our own bookkeeping: ``BPF_PROG_QUERY`` lists the programs
attached to the cgroup for each attach type, and each of ours must be among them
(by the id ``BPF_OBJ_GET_INFO_BY_FD`` gives its descriptor); ``/proc/PID/cgroup``
says which cgroup v2 directory a process is in. Plain ``bpf(2)`` through ctypes:
BCC 0.26 has no query call.
"""

from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
_SYS_BPF = {"x86_64": 321, "aarch64": 280}
_ATTR_SIZE = 128
MAX_PROGRAMS = 64

_libc = ctypes.CDLL(None, use_errno=True)


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> None:
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        raise OSError(f"bpf(2) is not known on {platform.machine()}")
    if _libc.syscall(number, cmd, attr, _ATTR_SIZE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def program_id(prog_fd: int) -> int:
    """The kernel's id of the program behind ``prog_fd``."""
    info = ctypes.create_string_buffer(16)  # struct bpf_prog_info: type, id, ...
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    ctypes.c_uint32.from_buffer(attr, 0).value = prog_fd
    ctypes.c_uint32.from_buffer(attr, 4).value = len(info)
    ctypes.c_uint64.from_buffer(attr, 8).value = ctypes.addressof(info)
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return ctypes.c_uint32.from_buffer(info, 4).value


def attached_ids(cgroup_fd: int, attach_type: int) -> set[int]:
    """Ids of the programs attached to the cgroup of ``cgroup_fd`` for ``attach_type``."""
    ids = (ctypes.c_uint32 * MAX_PROGRAMS)()
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    ctypes.c_uint32.from_buffer(attr, 0).value = cgroup_fd
    ctypes.c_uint32.from_buffer(attr, 4).value = attach_type
    ctypes.c_uint64.from_buffer(attr, 16).value = ctypes.addressof(ids)
    ctypes.c_uint32.from_buffer(attr, 24).value = MAX_PROGRAMS
    _bpf(BPF_PROG_QUERY, attr)
    count = ctypes.c_uint32.from_buffer(attr, 24).value
    return set(ids[: min(count, MAX_PROGRAMS)])


def missing_programs(cgroup_fd: int, programs: list[tuple[str, int, int]]) -> list[str]:
    """Which of ``programs`` (name, program fd, attach type) are not attached to the
    cgroup of ``cgroup_fd``; a program the kernel cannot be asked about counts."""
    missing = []
    for name, prog_fd, attach_type in programs:
        try:
            if program_id(prog_fd) not in attached_ids(cgroup_fd, attach_type):
                missing.append(name)
        except OSError as exc:
            missing.append(f"{name} ({exc.strerror or exc})")
    return missing


def cgroup_of(pid: int) -> str | None:
    """The cgroup v2 path of ``pid`` (``/aegis-mcp/...``), None when gone or unknown."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    return next((line[3:] for line in lines if line.startswith("0::")), None)


def in_cgroup(pid: int, cgroup: Path, mount: Path) -> bool | None:
    """Whether ``pid`` is in ``cgroup`` (a directory under the cgroup v2 ``mount``) or
    below it; None when it cannot be told."""
    path = cgroup_of(pid)
    if path is None:
        return None
    wanted = "/" + str(cgroup.relative_to(mount)).strip("/")
    return path == wanted or path.startswith(wanted + "/")
