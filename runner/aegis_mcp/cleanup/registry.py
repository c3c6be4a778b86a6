"""The kinds of leftovers, each made by the package that creates such things.

To add one: a :class:`aegis_mcp.leftovers.LeftoverSource` in that package, and one
:class:`Kind` below. Sources are made (and their modules imported) only when a
sweep gets to them; :meth:`~aegis_mcp.leftovers.LeftoverSource.possible` must stay
cheap, since every root runner asks it at start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..leftovers import LeftoverSource


@dataclass(frozen=True)
class Kind:
    """One kind of leftovers."""

    name: str
    what: str
    """What it covers, for messages: ``network namespaces, veths, ...``."""
    needs_root: bool
    source: Callable[[], LeftoverSource]


def _cgroups() -> LeftoverSource:
    from ..netmon.ebpf.leftovers import CgroupLeftovers

    return CgroupLeftovers()


def _netns() -> LeftoverSource:
    from ..sandbox.netns.leftovers import NetnsLeftovers

    return NetnsLeftovers()


def _strays() -> LeftoverSource:
    from ..runner.strays import StrayProcesses

    return StrayProcesses()


def _runtime_files() -> LeftoverSource:
    from ..runner.runtime_files import RuntimeFileLeftovers

    return RuntimeFileLeftovers()


KINDS: tuple[Kind, ...] = (
    # First: one cgroup.kill ends what an agent left, wherever it runs.
    Kind("cgroups", "agent cgroups with their BPF programs", True, _cgroups),
    Kind(
        "netns",
        "network namespaces, veths, nft tables, resolv.conf directories, markers",
        True,
        _netns,
    ),
    # After those two: what runs outside any namespace or cgroup.
    Kind("processes", "processes of dead runners' agents", False, _strays),
    Kind("runtime_files", "runtime files", False, _runtime_files),
)
