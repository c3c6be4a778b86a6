"""The ``netns`` source: what the agents' network sandboxes see of their traffic.

A netns sandbox watches its namespace from the inside (NFLOG, conntrack, its
DNS forwarder) and pushes each observation, already in the event format, to
the callback it was made with: :meth:`NetnsView.sink`. This source knows
nothing of sandboxes; the runner hands the sink to each one it makes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from .coverage import Coverage, ProcessView
from .source import NetmonSource
from .stats import NetmonStats


class NetnsView(NetmonSource):
    """Events pushed by the run's netns sandboxes."""

    name = "netns"
    # The namespace's flows, all of them (without telling which process moved them).
    counts_every_byte = True

    def __init__(self) -> None:
        self._stats: NetmonStats | None = None
        self._lock = threading.Lock()
        self.events = 0
        self.dropped = 0

    def start(self, stats: NetmonStats) -> None:
        """Events given to :meth:`sink` go to ``stats`` from now on."""
        self._stats = stats

    def sink(self, event: Mapping[str, Any]) -> None:
        """Take one event from a sandbox (any thread)."""
        stats = self._stats
        with self._lock:
            if stats is None:
                self.dropped += 1
                return
            self.events += 1
        stats.ingest(event)

    def check(self, processes: list[ProcessView]) -> list[Coverage]:
        """A process in a network namespace of its own is watched whole by its sandbox
        (every flow, whatever syscalls made it); one left in the runner's is not."""
        ours = _netns("self")
        found = []
        for proc in processes:
            theirs = _netns(str(proc.pid))
            if theirs is None or ours is None:
                continue
            if theirs != ours:
                found.append(Coverage(proc.pid, proc.comm, True, True))
            else:
                reason = "outside the sandbox: in the host's network namespace"
                found.append(Coverage(proc.pid, proc.comm, False, False, reason))
        return found

    def describe(self) -> dict[str, Any]:
        """How many events the sandboxes pushed."""
        return {"events": self.events, "dropped": self.dropped}

    def stop(self) -> None:
        """Later events are dropped (counted)."""
        self._stats = None


def _netns(pid: str) -> tuple[int, int] | None:
    try:
        info = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return (info.st_dev, info.st_ino)
