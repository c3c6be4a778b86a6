"""Proof that the eBPF source sees the agents: its programs are attached to the agent's
cgroup, and the agents' processes are in it.

The kernel is asked, not our own bookkeeping: ``BPF_PROG_QUERY`` lists the programs
attached to the cgroup for each attach type, and each of ours must be among them
(by the id ``BPF_OBJ_GET_INFO_BY_FD`` gives its descriptor), both through
:mod:`.attached` (BCC 0.26 has no query call); ``/proc/PID/cgroup`` says which cgroup
v2 directory a process is in.
"""

from __future__ import annotations

from pathlib import Path

from .attached import program_id, query


def missing_programs(cgroup_fd: int, programs: list[tuple[str, int, int]]) -> list[str]:
    """Which of ``programs`` (name, program fd, attach type) are not attached to the
    cgroup of ``cgroup_fd``; a program the kernel cannot be asked about counts."""
    missing = []
    for name, prog_fd, attach_type in programs:
        try:
            if program_id(prog_fd) not in query(cgroup_fd, attach_type):
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
