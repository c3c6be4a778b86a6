"""What every netmon source is: the interface the runner starts, feeds from and stops.

A source turns what it observes into events of :mod:`.schema` and hands each
to the run's :class:`~.stats.NetmonStats` (``ingest``, safe from any thread):
pushed as they happen (eBPF's ring buffer, the sandbox's monitor) or taken in
when :meth:`NetmonSource.poll` is called (the hooks' log file). A source may
need something of each agent's process to see it (a variable, a pre-exec
step): :meth:`NetmonSource.prepare` adds it to the spawn spec. A source proves
what it sees of the agents' processes with :meth:`NetmonSource.check`
(:mod:`.coverage`). Sources know nothing of who reads their events.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from ..processes import SpawnSpec
from .coverage import Coverage, ProcessView
from .schema import SourceName
from .stats import NetmonStats


class NetmonSource(ABC):
    """One way of seeing the agents' network traffic."""

    name: ClassVar[SourceName]
    counts_every_byte: ClassVar[bool] = False
    """It counts the bytes of the whole run, whatever syscalls the agents make (the
    totals stand even where it cannot tell which process moved them)."""

    @abstractmethod
    def start(self, stats: NetmonStats) -> None:
        """Begin: every event from now on goes to ``stats``. Raises NetmonUnavailable."""

    def poll(self) -> None:  # noqa: B027 (most sources push: nothing to do)
        """Take in what has arrived since the last call (sources that are read, not pushed)."""

    def prepare(self, spec: SpawnSpec) -> SpawnSpec:
        """``spec`` with what this source needs to see the agent's process."""
        return spec

    def check(self, processes: list[ProcessView]) -> list[Coverage]:
        """What this source sees of each of ``processes`` (the agents' tree, as the
        kernel shows it now); processes it cannot judge are left out. Called from a
        worker thread, about once a second while an agent runs."""
        return []

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able state for the runner's status."""

    @abstractmethod
    def stop(self) -> None:
        """Stop observing and release what was made; idempotent."""
