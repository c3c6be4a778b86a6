"""What of a dead runner's containers is left on the host itself, outside every engine.

A private podman service exits by itself once its runner's pings stop; one that
still serves a dead runner is stopped (:class:`EngineServiceLeftovers`). An
engine makes a container's cgroup parent (the eBPF source's cgroup,
``aegis-mcp/<pid>-<agent>``) in every cgroup v1 hierarchy too: those of dead
runners are removed once empty (:class:`CgroupParentLeftovers`). Both are asked
at every root runner's start, so this module imports nothing of the engines.
A live runner's things are never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path

from ...leftovers import Leftover, kill_processes
from ...owners import owner_alive

_SOCKET_NAME = re.compile(r"podman-(?P<pid>[1-9][0-9]{0,9})\.sock")
_SERVICE_SOCKET = re.compile(rb"unix://.*/podman-(?P<pid>[1-9][0-9]{0,9})\.sock")


def _services() -> list[tuple[int, int]]:
    """Every private podman service running here: (its pid, its runner's pid)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[1:3] == [b"system", b"service"] and (m := _SERVICE_SOCKET.fullmatch(argv[-2])):
            found.append((int(entry), int(m["pid"])))
    return found


class EngineServiceLeftovers:
    """The :class:`aegis_mcp.leftovers.LeftoverSource` of private podman services (named
    by their socket ``podman-<runner pid>.sock``) whose runner is gone."""

    KIND = "podman_service"
    STOP_SECS = 5.0

    def __init__(self, directory: Path | None = None) -> None:
        self._directory = directory

    def possible(self) -> bool:
        """Whether a socket of a dead runner's service is in this user's runtime directory,
        where its runners make them (a scan of every process would cost a runner's start
        ten times as much; a service some other user's runner left exits by itself)."""
        from ...paths import runtime_dir

        directory = self._directory or runtime_dir()
        with contextlib.suppress(OSError):
            for name in os.listdir(directory):
                match = _SOCKET_NAME.fullmatch(name)
                if match and not owner_alive(int(match["pid"])):
                    return True
        return False

    def find(self) -> list[Leftover]:
        """Every private podman service, its runner alive or not."""
        return [
            Leftover(
                kind=self.KIND,
                id=f"pid {pid}",
                owner_pid=runner,
                owner_alive=owner_alive(runner),
                group=f"podman-{runner}",
                processes=(pid,),
            )
            for pid, runner in _services()
        ]

    def remove(self, item: Leftover) -> None:
        """SIGTERM (podman finishes what it writes to its storage), SIGKILL after a while."""
        (pid,) = item.processes
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.STOP_SECS
        while time.monotonic() < deadline and any(p == pid for p, _ in _services()):
            time.sleep(0.05)
        if left := kill_processes(item.processes):
            raise OSError(f"podman service {left} outlived SIGKILL")

    def finish(self) -> None:
        """Nothing to restore (the runtime files source removes its socket and log)."""


CGROUP_PARENT = "aegis-mcp"
_CGROUP_NAME = re.compile(r"(?P<pid>[1-9][0-9]{0,9})-[A-Za-z0-9][A-Za-z0-9_.-]*")


class CgroupParentLeftovers:
    """The :class:`aegis_mcp.leftovers.LeftoverSource` of the cgroup v1 directories
    ``aegis-mcp/<pid>-<agent>`` that engines made for containers' cgroup parents."""

    KIND = "cgroup_v1"

    def __init__(self, mounts: Path = Path("/proc/self/mounts")) -> None:
        self.mounts = mounts

    def _entries(self) -> list[tuple[Path, int]]:
        try:
            lines = self.mounts.read_text().splitlines()
        except OSError:
            return []
        found = []
        for fields in (line.split() for line in lines):
            if len(fields) < 3 or fields[2] != "cgroup":
                continue
            parent = Path(fields[1]) / CGROUP_PARENT
            with contextlib.suppress(OSError):
                for entry in sorted(parent.iterdir()):
                    match = _CGROUP_NAME.fullmatch(entry.name)
                    if match is not None and entry.is_dir():
                        found.append((entry, int(match["pid"])))
        return found

    def possible(self) -> bool:
        """Whether a dead runner's directory is there."""
        return any(not owner_alive(pid) for _, pid in self._entries())

    def find(self) -> list[Leftover]:
        """Every such directory, its runner alive or not."""
        return [
            Leftover(self.KIND, str(path), pid, owner_alive(pid), group=str(path))
            for path, pid in self._entries()
        ]

    def remove(self, item: Leftover) -> None:
        """Remove the directory: empty once its containers are gone (the container kind
        comes first), else the kernel refuses and the error says so. An engine may
        leave its own empty directories below."""
        for directory, _, _ in os.walk(item.id, topdown=False):
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(directory)

    def finish(self) -> None:
        """Nothing to restore."""
