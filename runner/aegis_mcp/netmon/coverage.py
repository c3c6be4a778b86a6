"""Whether a netmon source sees the agents: the evidence, and a verdict per process.

A source can be blind without knowing it: a hooks library ``ld.so`` could not open, a
static binary, a runtime that makes raw syscalls (Claude Code's Bun sends, receives
and closes that way), BPF programs no longer attached. So each source proves what it
sees (:meth:`~.source.NetmonSource.check`) against what the kernel shows of the
agents' tree, one look at a time: every process with its TCP sockets and their byte
counts (:class:`ProcessView`, gathered by the runner). It answers with a
:class:`Coverage` per process: whether it saw that process's connects and its bytes,
and if not, why. :class:`CoverageBook` keeps the verdicts of the run (a "not seen"
stays) and tells which are news; the bytes of a process that no source saw are
unknown, and reported so (None), not as 0.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

Verdict = Literal["full", "partial", "blind", "unknown"]
"""``full``: connects and bytes seen; ``partial``: one of the two; ``blind``: neither;
``unknown``: nothing to judge by yet (no traffic)."""
MAX_PROCESSES = 512


@dataclass(frozen=True)
class KernelSocket:
    """One TCP socket a process holds, as the kernel counts it (``inet_diag``)."""

    inode: int
    local_port: int
    remote: str
    """``addr:port`` (:func:`~.stats.format_endpoint`)."""
    written: int
    """Bytes the process sent through it."""
    read: int
    """Bytes the process read from it (received, less what still waits to be read)."""


@dataclass(frozen=True)
class ProcessView:
    """One process of the agents' tree, with the TCP sockets it holds."""

    pid: int
    comm: str
    sockets: tuple[KernelSocket, ...] = ()


def _worse(a: bool | None, b: bool | None) -> bool | None:
    """Merge two observations: "not seen" stays, "seen" beats "cannot tell"."""
    if a is False or b is False:
        return False
    return True if a or b else None


def _better(a: bool | None, b: bool | None) -> bool | None:
    """Across sources: one that saw it is enough."""
    if a or b:
        return True
    return False if a is False or b is False else None


@dataclass(frozen=True)
class Coverage:
    """What one source sees of one process."""

    pid: int
    comm: str
    connects: bool | None
    """True: seen; False: some were not; None: nothing to tell by yet."""
    bytes: bool | None
    reason: str | None = None
    """Why something is not seen (``raw syscalls``, ``statically linked``, ...)."""
    unseen: tuple[str, ...] = ()
    """Endpoints (``addr:port``) of connections whose bytes were not seen."""

    @property
    def verdict(self) -> Verdict:
        """``full``, ``partial``, ``blind`` or ``unknown``."""
        seen = [x for x in (self.connects, self.bytes) if x is not None]
        if not seen:
            return "unknown"
        if all(seen):
            return "full" if len(seen) == 2 else "unknown"
        return "partial" if any(seen) else "blind"

    def merged(self, later: Coverage) -> Coverage:
        """This verdict updated with a later look at the same process by the same source."""
        return dataclasses.replace(
            later,
            connects=_worse(self.connects, later.connects),
            bytes=_worse(self.bytes, later.bytes),
            reason=later.reason or self.reason,
            unseen=tuple(dict.fromkeys((*self.unseen, *later.unseen))),
        )

    def line(self, hint: str | None = None) -> str:
        """One line for people: ``claude: connects seen, bytes not: raw syscalls; hint``."""
        if self.verdict == "full":
            text = "connects and bytes seen"
        elif self.verdict == "unknown":
            text = "connects seen, no bytes yet" if self.connects else "no traffic seen yet"
        elif self.connects is False and self.bytes is False:
            text = f"not seen: {self.reason}"
        elif self.connects:
            text = f"connects seen, bytes not: {self.reason}"
        else:
            text = f"bytes seen, connects not: {self.reason}"
        tail = f"; {hint}" if hint and self.verdict in ("partial", "blind") else ""
        return f"{self.comm or self.pid}: {text}{tail}"


class CoverageBook:
    """The run's verdicts: per process, per source, kept for as long as the run."""

    def __init__(self, max_processes: int = MAX_PROCESSES) -> None:
        self._entries: OrderedDict[int, dict[str, Coverage]] = OrderedDict()
        self._max = max_processes
        self.checks = 0

    def update(self, source: str, found: list[Coverage]) -> list[Coverage]:
        """Take one source's look; returns the processes whose verdict from it changed."""
        changed = []
        for cov in found:
            by_source = self._entries.setdefault(cov.pid, {})
            before = by_source.get(source)
            now = before.merged(cov) if before is not None else cov
            by_source[source] = now
            self._entries.move_to_end(cov.pid)
            if before is None or before.verdict != now.verdict:
                changed.append(now)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return changed

    def overall(self, pid: int) -> Coverage | None:
        """What the run's sources together see of ``pid``."""
        by_source = self._entries.get(pid)
        if not by_source:
            return None
        covs = list(by_source.values())
        seen = covs[0]
        for cov in covs[1:]:
            seen = dataclasses.replace(
                seen,
                connects=_better(seen.connects, cov.connects),
                bytes=_better(seen.bytes, cov.bytes),
            )
        # A reason only where something stays unseen by every source.
        reasons = [c.reason for c in covs if c.reason and c.verdict != "full"]
        unseen = () if seen.bytes else tuple(u for c in covs for u in c.unseen)
        blind = seen.verdict in ("partial", "blind")
        return dataclasses.replace(
            seen, reason=reasons[0] if blind and reasons else None, unseen=unseen
        )

    def missed_bytes(self, source: str) -> bool:
        """Whether ``source`` failed to see the bytes of some process."""
        return any(
            by_source[source].bytes is False
            for by_source in self._entries.values()
            if source in by_source
        )

    def bytes_unknown(self) -> tuple[set[int], set[str]]:
        """Processes and endpoints whose bytes no source saw."""
        pids: set[int] = set()
        endpoints: set[str] = set()
        for pid in self._entries:
            cov = self.overall(pid)
            if cov is not None and cov.bytes is False:
                pids.add(pid)
                endpoints.update(cov.unseen)
        return pids, endpoints

    def verdict(self) -> Verdict:
        """The run's: the worst of its processes' (``unknown`` until there is evidence)."""
        verdicts = {c.verdict for pid in self._entries if (c := self.overall(pid)) is not None}
        for verdict in ("blind", "partial", "full"):
            if verdict in verdicts:
                return verdict  # type: ignore[return-value]
        return "unknown"

    def status(self, hint: str | None = None) -> dict[str, Any]:
        """JSON-able: the run's verdict and each process's (see control/snapshot.py)."""
        processes = []
        for pid, by_source in reversed(self._entries.items()):
            cov = self.overall(pid)
            if cov is None:
                continue
            processes.append(
                {
                    "pid": pid,
                    "comm": cov.comm,
                    "verdict": cov.verdict,
                    "connects": cov.connects,
                    "bytes": cov.bytes,
                    "reason": cov.reason,
                    "line": cov.line(hint),
                    "sources": {name: c.verdict for name, c in by_source.items()},
                }
            )
        return {
            "verdict": self.verdict(),
            "checks": self.checks,
            "hint": hint,
            "processes": processes,
        }
