"""The ``preload`` source: the JSON-lines log that libaegis_hooks.so writes.

The library (hooks/netmon.c) appends whole lines with O_APPEND from every
process of the agent, so the reader (:class:`PreloadLog`) only has to cope with
what a file being appended to can look like at any moment: not there yet, a
last line still being written, or (after a restart with the same name)
shorter than before. :class:`PreloadSource` is the source the runner starts:
it puts the library and the log's path into each agent's environment.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

from ..files import create_new
from ..hooks_lib import HooksInfo, preload_into
from ..privileges import AgentUser, as_user
from ..processes import SpawnSpec
from .coverage import Coverage, ProcessView
from .errors import NetmonUnavailable
from .preload_check import HookedConnections, PreloadCheck
from .source import NetmonSource
from .stats import NetmonStats

# The library's lines are at most 1536 bytes; anything far longer without a
# newline is not one of ours and must not be buffered without bound.
MAX_LINE_BYTES = 64 * 1024
# Per poll: a burst of traffic must not stall the runner's event loop for long;
# the rest is read at the next poll.
MAX_READ_BYTES = 8 * 1024 * 1024
_CHUNK = 256 * 1024


class PreloadLog:
    """Reads new lines of an ``AEGIS_NETMON_LOG`` file into a :class:`NetmonStats`."""

    def __init__(self, path: Path, stats: NetmonStats | None = None) -> None:
        self.path = Path(path)
        self.stats = stats if stats is not None else NetmonStats(mode="preload")
        if self.stats.log_file is None:
            self.stats.log_file = self.path
        self.offset = 0
        self.malformed_lines = 0
        self.lines_read = 0
        self.connections = HookedConnections()
        """Bytes per TCP connection, for :class:`~.preload_check.PreloadCheck`."""
        self._identity: tuple[int, int] | None = None
        self._partial = b""
        self._skipping = False  # inside an over-long line: drop up to its newline

    def poll(self, max_bytes: int = MAX_READ_BYTES) -> int:
        """Ingest the lines appended since the last call; returns how many events were added."""
        data = self._read_new(max_bytes)
        if not data:
            return 0
        lines = data.split(b"\n")
        # The last piece has no newline yet: an unfinished line, kept for the next poll.
        tail = lines.pop()
        added = 0
        for index, line in enumerate(lines):
            if index == 0:
                line = self._partial + line
                self._partial = b""
                if self._skipping:
                    self._skipping = False
                    continue
            added += self._ingest_line(line)
        if self._skipping:
            return added
        self._partial += tail
        if len(self._partial) > MAX_LINE_BYTES:
            self._malformed()
            self._partial = b""
            self._skipping = True
        return added

    def fresh_stats(self) -> NetmonStats:
        """Poll, then return the stats: a ``stats_source`` for the netmon ops."""
        self.poll()
        return self.stats

    def _read_new(self, max_bytes: int) -> bytes:
        # O_NOFOLLOW and the regular-file check: the agent's user can write in
        # the directory of this file, and a symlink or FIFO put in its place
        # must neither leak another file into netmon_log nor block the runner.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            # Gone (or not there yet): whatever appears next is a new file, even
            # if it gets the old inode number back.
            if self._identity is not None:
                self._restart()
                self._identity = None
            return b""
        except OSError:
            return b""
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return b""
            identity = (info.st_dev, info.st_ino)
            if identity != self._identity or info.st_size < self.offset:
                # A new file under the same name, or the old one truncated: start over.
                if self._identity is not None:
                    self._restart()
                self._identity = identity
            if info.st_size == self.offset:
                return b""
            chunks = []
            wanted = min(info.st_size - self.offset, max_bytes)
            while wanted > 0:
                chunk = os.pread(fd, min(wanted, _CHUNK), self.offset)
                if not chunk:
                    break
                chunks.append(chunk)
                self.offset += len(chunk)
                wanted -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _restart(self) -> None:
        self.offset = 0
        self._partial = b""
        self._skipping = False

    def _ingest_line(self, line: bytes) -> int:
        if not line.strip():
            return 0
        self.lines_read += 1
        try:
            event = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            self._malformed()
            return 0
        if not isinstance(event, dict):
            self._malformed()
            return 0
        if not self.stats.ingest(event):
            # ingest() has counted it in the stats already
            self.malformed_lines += 1
            return 0
        self.connections.note(event)
        return 1

    def _malformed(self) -> None:
        self.malformed_lines += 1
        self.stats.count_malformed()


class PreloadSource(NetmonSource):
    """What the hooks library sees in every process of the agents (their libc calls)."""

    name = "preload"

    def __init__(self, log_file: Path, hooks: HooksInfo, user: AgentUser | None = None) -> None:
        self.log_file = Path(log_file)
        self.hooks = hooks
        self.user = user
        """The agents' account when the runner drops to it (None: the runner's own)."""
        self.reader: PreloadLog | None = None
        self._check: PreloadCheck | None = None
        # The runner's loop polls; the coverage check polls from its worker thread.
        self._lock = threading.Lock()

    def start(self, stats: NetmonStats) -> None:
        """Make the log, then follow it into ``stats`` (the agents write it once they run).

        Raises NetmonUnavailable when the agents' user could not append to it.
        """
        user = self.user
        # Made here, for the hooks to append to: the agent's user cannot create
        # names in root's runtime directory, and must not.
        owner = (user.uid, user.gid) if user is not None else None
        os.close(create_new(self.log_file, owner=owner, replace=True))
        if user is not None:
            try:
                # As the hooks open it, with the user's credentials.
                flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
                as_user(user, lambda: os.close(os.open(self.log_file, flags)))
            except OSError as exc:
                self.log_file.unlink(missing_ok=True)
                raise NetmonUnavailable(
                    f"--netmon=preload: {user.name} cannot write the netmon log "
                    f"{self.log_file} ({exc.strerror or exc}): its directory must be one they "
                    "can reach (AEGIS_MCP_RUNTIME_DIR)"
                ) from None
        self.reader = PreloadLog(self.log_file, stats)
        first_bytes = "first-bytes" in self.hooks.features
        self._check = PreloadCheck(self.hooks.path, self.reader.connections, first_bytes)

    def poll(self) -> None:
        """Read the lines appended since the last call."""
        if self.reader is not None:
            with self._lock:
                self.reader.poll()

    def prepare(self, spec: SpawnSpec) -> SpawnSpec:
        """The library first in LD_PRELOAD, and the log's path for it to write to."""
        env = dict(spec.env)
        preload_into(env, self.hooks)
        env["AEGIS_NETMON_LOG"] = str(self.log_file)
        return dataclasses.replace(spec, env=env)

    def check(self, processes: list[ProcessView]) -> list[Coverage]:
        """The hooks loaded in each process, and its sockets' bytes in the log
        (:mod:`.preload_check`); the log is read first, after the kernel's counts."""
        reader, check = self.reader, self._check
        if reader is None or check is None:
            return []
        with self._lock:
            reader.poll()
            return check.check(processes, log_written=reader.lines_read > 0)

    def describe(self) -> dict[str, Any]:
        """The log, and how much of it was read."""
        reader = self.reader
        return {
            "log_file": str(self.log_file),
            "hooks_library": str(self.hooks.path),
            "lines_read": reader.lines_read if reader else 0,
            "malformed_lines": reader.malformed_lines if reader else 0,
        }

    def stop(self) -> None:
        """Take in the last lines; the file stays (the runner removes its runtime files)."""
        self.poll()
