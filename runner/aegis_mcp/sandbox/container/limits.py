"""A container's resource limits: ``[container] memory/cpus/pids`` and its ulimits.

Engines start every container with their own default ulimits, which fail
(``error setting rlimit``) where they exceed the hard limits the engine itself
runs under (DESIGN.md fact 7: ``nofile`` 20000 here). So every container gets
``nofile`` and ``nproc`` explicitly, the configured value or a default, never
above this process's hard limits (the engine's, when it is local and ours).
"""

from __future__ import annotations

import resource
from typing import Any

from .settings import ContainerSettings

DEFAULT_NOFILE = 20000
DEFAULT_NPROC = 32768


def _within(wanted: int | None, default: int, hard: int) -> int:
    value = wanted if wanted is not None else default
    return value if hard == resource.RLIM_INFINITY else min(value, hard)


def ulimit_values(settings: ContainerSettings) -> dict[str, int]:
    """``{"nofile": N, "nproc": M}`` within this process's hard limits."""
    nofile_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc_hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    return {
        "nofile": _within(settings.nofile, DEFAULT_NOFILE, nofile_hard),
        "nproc": _within(settings.nproc, DEFAULT_NPROC, nproc_hard),
    }


def host_config_limits(settings: ContainerSettings) -> dict[str, Any]:
    """Keyword arguments of the SDK's ``create_host_config`` for the limits."""
    import docker.types

    values = ulimit_values(settings)
    limits: dict[str, Any] = {
        "ulimits": [docker.types.Ulimit(name=k, soft=v, hard=v) for k, v in values.items()]
    }
    if settings.memory is not None:
        # No swap on top: the limit is what the agent gets.
        limits["mem_limit"] = settings.memory
        limits["memswap_limit"] = settings.memory
    if settings.cpus is not None:
        limits["nano_cpus"] = int(settings.cpus * 1e9)
    if settings.pids is not None:
        limits["pids_limit"] = settings.pids
    return limits


def describe(settings: ContainerSettings) -> dict[str, Any]:
    """The limits a container gets, for the status."""
    return {
        "memory_bytes": settings.memory,
        "cpus": settings.cpus,
        "pids": settings.pids,
        **ulimit_values(settings),
    }
