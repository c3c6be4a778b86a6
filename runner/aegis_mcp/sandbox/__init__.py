"""Sandbox backends: where an agent runs and what it may reach.

- :mod:`.base` — the :class:`~.base.Sandbox` interface every backend implements,
  and the :class:`~.base.SandboxRequest` a backend is made from;
- :mod:`.kinds` — the kinds, named once;
- :mod:`.none` — ``none``: the agent runs on the host as it is;
- :mod:`.netns` — ``netns``: a network namespace per agent, built in process
  through netlink (pyroute2's message classes over our own sockets) with one
  nftables table per sandbox, and the listing and clean-up of what crashed
  runners left;
- :mod:`.container` — ``container``: each agent start in a fresh container
  through the docker SDK (Docker Engine, podman, rootful or rootless), rootful
  ones inside a netns sandbox of their own;
- :mod:`.policy` — the egress policy (``--allow`` / ``--deny`` specs and the
  ``[policy]`` config section), independent of any backend;
- :mod:`.dns_proxy` — the small DNS forwarder a netns sandbox resolves
  through, whose answers keep the policy's host-name sets fresh.

:func:`get_sandbox` chooses the backend by kind and imports it only then (a
netns sandbox costs pyroute2's import). Nothing here imports the runner or
netmon: the runner makes a sandbox, runs the agent's spec through
:meth:`~.base.Sandbox.wrap` and tears it down.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .errors import SandboxUnavailable
from .kinds import SANDBOX_KINDS

if TYPE_CHECKING:
    from .base import Sandbox, SandboxRequest

# The module of each kind's backend, with ``problem()`` and ``create(request)``.
_BACKENDS: dict[str, str | None] = {
    "none": ".none",
    "netns": ".netns.backend",
    "container": ".container.backend",
}


def _backend(kind: str) -> ModuleType:
    if kind not in SANDBOX_KINDS:
        known = ", ".join(SANDBOX_KINDS)
        raise SandboxUnavailable(f"unknown sandbox kind {kind!r}; known: {known}")
    home = _BACKENDS[kind]
    if home is None:
        raise SandboxUnavailable(f"sandbox '{kind}' is not available in this version")
    return importlib.import_module(home, __name__)


def problem(kind: str, settings: Any = None) -> str | None:
    """Why no ``kind`` sandbox can be made on this machine, or None when one can.

    ``settings``: the backend's config section (``[container]``), where it has one.
    """
    try:
        backend = _backend(kind)
    except SandboxUnavailable as exc:
        return str(exc)
    return backend.problem(settings) if kind == "container" else backend.problem()


def network_problem(kind: str, settings: Any = None) -> str | None:
    """Why ``kind`` sandboxes cannot put their agents under a kernel egress policy and
    the netns monitor here (None when they can); ``none`` never does."""
    if kind == "netns":
        return None
    if kind == "container":
        return _backend(kind).network_problem(settings)
    return "the agent is not in a network namespace of its own"


def shutdown() -> None:
    """Release what loaded backends share between a run's sandboxes (an engine connection,
    a private engine service); call once every sandbox is torn down."""
    for home in _BACKENDS.values():
        module = sys.modules.get(f"{__name__}{home}") if home else None
        close = getattr(module, "shutdown", None)
        if close is not None:
            close()


def get_sandbox(kind: str, request: SandboxRequest) -> Sandbox:
    """Make the ``kind`` sandbox of one agent.

    Raises SandboxUnavailable when this machine offers no such backend, and the
    backend's SandboxError (or PolicyError) when making it fails; nothing is
    left behind then.
    """
    return _backend(kind).create(request)
