"""The kinds of leftovers, each made by the package that creates such things.

To add one: a :class:`aegis_mcp.leftovers.LeftoverSource` in that package, and one
:class:`Kind` below. Sources are made (and their modules imported) only when a
sweep gets to them; :meth:`~aegis_mcp.leftovers.LeftoverSource.possible` must stay
cheap, since every root runner asks it at start (unless the kind says ``at_start=False``).
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
    at_start: bool = True
    """Whether a runner's start sweeps it (``quick``): not where finding them is costly."""


def _cgroups() -> LeftoverSource:
    from ..netmon.ebpf.leftovers import CgroupLeftovers

    return CgroupLeftovers()


def _netns() -> LeftoverSource:
    from ..sandbox.netns.leftovers import NetnsLeftovers

    return NetnsLeftovers()


def _containers() -> LeftoverSource:
    from ..sandbox.container.leftovers import ContainerLeftovers

    return ContainerLeftovers()


def _podman_services() -> LeftoverSource:
    from ..sandbox.container.host_leftovers import EngineServiceLeftovers

    return EngineServiceLeftovers()


def _container_cgroups() -> LeftoverSource:
    from ..sandbox.container.host_leftovers import CgroupParentLeftovers

    return CgroupParentLeftovers()


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
    # Every engine is asked (a private podman started if need be): a container run's
    # backend removes those of its own engine when it starts, off the start-up path.
    Kind(
        "containers",
        "containers of dead runners in every engine found",
        False,
        _containers,
        at_start=False,
    ),
    Kind("podman_services", "private podman services of dead runners", False, _podman_services),
    # After the containers, whose cgroups are inside.
    Kind("container_cgroups", "cgroup v1 parents of containers", True, _container_cgroups),
    # After those: what runs outside any namespace or cgroup.
    Kind("processes", "processes of dead runners' agents", False, _strays),
    Kind("runtime_files", "runtime files", False, _runtime_files),
)
