"""CPU and memory of the primary agent's process tree and of the machine, for the state.

The watchdog samples the tree only while it is enabled and only for its own
rule; the dashboard's System panel needs the numbers always. Sampling walks
``/proc`` for every process of the tree, so it happens at most once per
``min_interval`` however often the state is rebuilt (the feed rebuilds it up to
twenty times a second under a flood of netmon events); between samples the
last one is reported with its time.

Nothing is sampled during the run's first second: the first sample imports psutil and walks
``/proc``, about 10 ms that every agent start (and a one-second `run -- true`) would wait for,
to report a CPU use that is 0 on a first look anyway. The section is None until then.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..control.snapshot import SystemInfo
from ..watchdog.health import TreeSampler

if TYPE_CHECKING:
    from ..processes import AgentProcess

MIN_INTERVAL_SECS = 1.0
FIRST_SAMPLE_SECS = 1.0


class ResourceSampler:
    """The ``system`` section of the state, refreshed at most once per ``min_interval``."""

    def __init__(
        self, min_interval: float = MIN_INTERVAL_SECS, first_after: float | None = None
    ) -> None:
        """``first_after``: seconds without a sample (default ``FIRST_SAMPLE_SECS``)."""
        self._min_interval = min_interval
        delay = FIRST_SAMPLE_SECS if first_after is None else first_after
        self._first_at = time.monotonic() + delay
        self._tree = TreeSampler()
        self._pid: int | None = None
        self._last: SystemInfo | None = None
        self._last_at = 0.0

    def section(self, agent: AgentProcess | None) -> SystemInfo | None:
        """The agent tree's and the machine's use now (or as of the last sample); None
        during the first ``first_after`` seconds."""
        now = time.monotonic()
        if now < self._first_at:
            return None
        if self._last is not None and now - self._last_at < self._min_interval:
            return self._last
        self._last = self._sample(agent)
        self._last_at = now
        return self._last

    def _sample(self, agent: AgentProcess | None) -> SystemInfo:
        import psutil

        running = agent is not None and agent.running
        if running and agent.pid != self._pid:
            # A new agent process: the old baseline would count its start as a burst.
            self._tree.reset()
        self._pid = agent.pid if running else None
        tree = None
        if running:
            sample, _io = self._tree.sample(agent.tree())
            tree = {
                "processes": sample.processes,
                "rss_mb": round(sample.rss_bytes / (1024 * 1024), 1),
                "cpu_percent": round(sample.cpu_percent, 1),
            }
        memory = psutil.virtual_memory()
        return {
            "sampled_at": time.time(),
            "agent_tree": tree,
            "machine": {
                "cpus": psutil.cpu_count() or 1,
                # Since the previous call: the first one of a run says 0.
                "cpu_percent": psutil.cpu_percent(interval=None),
                "memory_total_mb": round(memory.total / (1024 * 1024), 1),
                "memory_used_mb": round((memory.total - memory.available) / (1024 * 1024), 1),
            },
        }
