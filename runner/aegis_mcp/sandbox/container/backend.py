"""The ``container`` backend as :func:`aegis_mcp.sandbox.get_sandbox` makes it.

A run's sandboxes share one engine connection (and, where podman had no
socket, one private podman service), made by the first sandbox and released by
:func:`shutdown` once the run has torn its sandboxes down. The first
connection also removes the containers that runners which died left in that
engine (:mod:`.leftovers`), off the agent's start path.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..errors import SandboxError
from .engine import Engine, choose, connect
from .network import policy_problem
from .sandbox import ContainerSandbox
from .settings import ContainerSettings

if TYPE_CHECKING:
    from ..base import SandboxRequest

SWEEP_DELAY_SECS = 5.0
"""At the latest this long after the engine connection, dead runners' containers go."""
_engine: Engine | None = None
_lock = threading.Lock()


def problem(settings: ContainerSettings | None = None) -> str | None:
    """Why no container sandbox can be made here (no engine), or None; starts nothing."""
    settings = settings or ContainerSettings()
    try:
        choose(settings.engine)
    except SandboxError as exc:
        return str(exc)
    return None


def network_problem(settings: ContainerSettings | None = None) -> str | None:
    """Why containers here cannot get a kernel egress policy and the netns view, or None."""
    settings = settings or ContainerSettings()
    if settings.network == "none":
        return '[container] network = "none"'
    try:
        candidate = choose(settings.engine)
    except SandboxError as exc:
        return str(exc)
    # A non-local engine's mode is known only once asked; a rootful one is assumed here
    # and checked again when the sandbox is made.
    return policy_problem(bool(candidate.rootless))


def engine(settings: ContainerSettings, request: SandboxRequest) -> Engine:
    """The run's engine connection, made on first use."""
    global _engine
    with _lock:
        if _engine is None:
            scratch = request.scratch
            paths = None
            if "engine_socket" in scratch and "engine_log" in scratch:
                paths = (scratch["engine_socket"], scratch["engine_log"])
            _engine = connect(choose(settings.engine), paths)
            _start_leftover_cleanup(_engine)
        return _engine


def _start_leftover_cleanup(connected: Engine) -> None:
    from .leftovers import remove_dead

    def sweep() -> None:
        # While the engine initialises the agent's first container, not while this
        # process still makes its network and asks for the image.
        connected.created.wait(SWEEP_DELAY_SECS)
        remove_dead(connected)

    # Only this engine, already connected: the registry's sweep at a runner's start
    # does not ask engines (a private podman would take a second).
    threading.Thread(target=sweep, name="aegis-container-cleanup", daemon=True).start()


def create(request: SandboxRequest) -> ContainerSandbox:
    """One agent's container sandbox (see :mod:`.sandbox`)."""
    settings = request.container or ContainerSettings()
    return ContainerSandbox.create(engine(settings, request), request, settings)


def shutdown() -> None:
    """Close the run's engine connection (stopping a private podman service)."""
    global _engine
    with _lock:
        connected, _engine = _engine, None
    if connected is not None:
        connected.close()
