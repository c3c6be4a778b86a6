"""What netmon sources produce: the event format of DESIGN.md, and the monitoring modes.

Events are JSON objects, one per line where they are written, with at least
``ts``, ``pid``, ``comm``, ``source``, ``event``, ``family``, ``remote_addr``,
``remote_port``, ``bytes``, and ``host`` where a name is known. Sources add
fields of their own (``result``, ``agent``, ``qtype``, ``answers``, ...).
This module is the one part of netmon a sandbox backend may import.
"""

from __future__ import annotations

from typing import Literal, TypedDict, get_args

SourceName = Literal["preload", "ebpf", "netns"]
SOURCES: tuple[str, ...] = get_args(SourceName)

NetmonMode = Literal["auto", "preload", "ebpf", "netns"]
"""``--netmon`` alone is ``auto``: the best source this machine offers."""
NETMON_MODES: tuple[str, ...] = get_args(NetmonMode)


class NetmonEvent(TypedDict, total=False):
    """One observation of a source (the fields every source fills; sources add more)."""

    ts: float
    pid: int | None
    comm: str | None
    source: SourceName
    event: str
    """``connect``, ``close``, ``send``, ``recv``, ``dns``, ``blocked``, ``accept``, ..."""
    family: str
    remote_addr: str
    remote_port: int
    bytes: int
    host: str
    agent: str
