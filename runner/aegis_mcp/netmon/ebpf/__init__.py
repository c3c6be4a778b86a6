"""eBPF network monitoring (``--netmon=ebpf``): BPF programs on the agent's own cgroup.

The programs (``bpf/*.c``) are compiled by BCC once per kernel and source
(:mod:`.objects`) and loaded by the runner as root (:mod:`.loader`), before the
agent starts; the agent and everything it starts join its
cgroup, so every connection and byte is attributed to the agent whatever it
is written in (a raw ``syscall(SYS_connect)`` included). Tiers, chosen by what
the kernel offers: ``cgroup`` (always), ``tracepoint``, ``kprobe``.

Public API, imported on first use (nothing here imports BCC until asked):

- :func:`ebpf_available` -> ``(ok, reason)``: whether to use eBPF or fall back;
- :class:`EbpfMonitor` / :class:`EbpfUnavailable`: one agent's monitoring;
- the egress policy is the sandbox's (``aegis_mcp.sandbox.policy.Policy``), enforced
  in the kernel by the connect/sendmsg hooks (EPERM, ``blocked``): see :mod:`.policy`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .availability import ebpf_available
    from .monitor import EbpfMonitor, EbpfUnavailable

__all__ = ["EbpfMonitor", "EbpfUnavailable", "ebpf_available"]

_HOMES = {
    "ebpf_available": "availability",
    "EbpfMonitor": "monitor",
    "EbpfUnavailable": "monitor",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
