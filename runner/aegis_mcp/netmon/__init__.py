"""Network monitoring: what the agent and its children connect to, with bytes and host names.

Data flows one way through the package:

- **sources** (:class:`~.source.NetmonSource`) turn what they observe into
  events of :mod:`.schema` (``ts``, ``pid``, ``comm``, ``source``, ``event``,
  ``remote_addr``, ...), one module each: :mod:`.preload_log` follows the log
  written by ``libaegis_hooks.so``, :mod:`.ebpf` runs BPF programs on the
  agents' cgroup, :mod:`.netns_view` takes what netns sandboxes push. Sources
  know nothing of who reads their events.
- :func:`choose_sources` (:mod:`.choice`) decides which sources a run gets:
  what was asked, held against what the machine offers, with a one-line reason.
- :mod:`.stats` (:class:`~.stats.NetmonStats`) aggregates the events of every
  source: connections, failures, bytes, targets, processes, recent events.
- :mod:`.ops` serves the stats as control operations (``netmon_status``,
  ``netmon_log``), for the runner's socket and the MCP tools. The namespace
  operations that share their ``netmon_`` prefix are the netns sandbox's
  (:mod:`aegis_mcp.sandbox.netns.ops`).

The submodules are imported on demand: nothing here is loaded on an agent
start that does not ask for netmon.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .choice import choose_sources, start_sources

__all__ = ["choose_sources", "start_sources"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import choice

        return getattr(choice, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
