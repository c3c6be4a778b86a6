"""Containers that runners which died left behind: found by their labels, removed.

A runner removes its containers when it ends; one killed with SIGKILL cannot.
Its containers still carry ``aegis-mcp.owner=<pid>`` and the owner's start
time: where no process with that pid and start time runs, they are leftovers.
:class:`ContainerLeftovers` finds them in every engine that answers, for
``aegis-mcp cleanup`` (through :mod:`aegis_mcp.cleanup.registry`); a container
run's backend removes those of its own engine when it starts, off the start-up
path (:func:`remove_dead`). A live runner's containers are never touched. What
else of a container can outlive its runner (a private podman service, cgroup v1
directories) is :mod:`.host_leftovers`' business.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...leftovers import Leftover
from ...owners import owner_alive
from ..netns.markers import process_start_time
from .lifecycle import LABEL_AGENT, LABEL_OWNER, LABEL_OWNER_START, LABEL_ROLE

if TYPE_CHECKING:
    from .engine import Candidate, Engine


def owner_is_alive(found: dict[str, str]) -> bool:
    """Whether the runner named by a container's labels still runs."""
    pid_text = found.get(LABEL_OWNER, "")
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    start = found.get(LABEL_OWNER_START, "")
    if start.isdigit():
        return process_start_time(pid) == int(start)
    return owner_alive(pid)


def listed(engine: Engine) -> list[dict[str, Any]]:
    """The engine's aegis-mcp containers: id, name, owner_pid, owner_alive, agent, role."""
    from .engine import refused

    found = []
    for entry in refused(engine.api.containers, all=True, filters={"label": LABEL_OWNER}):
        labels = entry.get("Labels") or {}
        names = entry.get("Names") or [entry["Id"][:12]]
        owner = labels.get(LABEL_OWNER, "")
        found.append(
            {
                "id": entry["Id"],
                "name": names[0].lstrip("/"),
                "owner_pid": int(owner) if owner.isdigit() else None,
                "owner_alive": owner_is_alive(labels),
                "agent": labels.get(LABEL_AGENT),
                "role": labels.get(LABEL_ROLE),
            }
        )
    return found


def remove_container(engine: Engine, container_id: str) -> None:
    """Remove one container, running or not (gone already is fine); SandboxError if refused."""
    import docker.errors

    from .engine import refused

    with contextlib.suppress(docker.errors.NotFound):
        refused(engine.api.remove_container, container_id, force=True)


def remove_dead(engine: Engine) -> list[str]:
    """Remove the containers of dead runners from ``engine`` (a container run's start);
    returns their names. One that cannot be removed is left for ``aegis-mcp cleanup``."""
    from ..errors import SandboxError

    removed = []
    with contextlib.suppress(SandboxError):
        for entry in listed(engine):
            if entry["owner_alive"]:
                continue
            with contextlib.suppress(SandboxError):
                remove_container(engine, entry["id"])
                removed.append(entry["name"])
    return removed


class ContainerLeftovers:
    """The :class:`aegis_mcp.leftovers.LeftoverSource` of containers, in every engine
    that answers here (a private podman started for the look if need be)."""

    KIND = "container"

    def __init__(
        self, configured: str | None = None, private_paths: tuple[Path, Path] | None = None
    ) -> None:
        self.configured = configured
        """``[container] engine`` (None: read from the config file)."""
        self.private_paths = private_paths
        """Socket and log of a private podman service (None: this process's runtime files)."""
        self._where: dict[str, tuple[Candidate, str]] = {}
        self._engines: dict[str, Engine] = {}

    def possible(self) -> bool:
        """Whether an engine is there to ask. Asking it is not cheap (a private podman
        takes a second), so the registry leaves runner starts to the backend."""
        from .engine import candidates

        return bool(candidates(self._configured(), os.environ))

    def _configured(self) -> str | None:
        if self.configured is None:
            from ...config import load_config
            from ...paths import config_file

            self.configured = load_config(config_file()).container.engine or ""
        return self.configured or None

    def _paths(self) -> tuple[Path, Path]:
        if self.private_paths is None:
            from ...paths import runtime_dir

            # Not a runner's podman-PID.sock: the sweep may run inside a runner (the
            # netmon_namespace_cleanup tool) whose own private service has that name.
            name = runtime_dir() / f"podman-cleanup-{os.getpid()}"
            self.private_paths = (name.with_suffix(".sock"), name.with_suffix(".log"))
        return self.private_paths

    def find(self) -> list[Leftover]:
        """Every aegis-mcp container of every engine found, live runners' included.

        A private podman that cannot run for this user (rootless prerequisites
        missing) holds no container of this user's: it is passed over. Any other
        engine's refusal is an error naming the engine.
        """
        from ..errors import SandboxError
        from .engine import candidates
        from .errors import EngineMissing, RootlessNotReady

        found: list[Leftover] = []
        failures = []
        every = candidates(self._configured(), os.environ)
        podman_socket = any(c.kind == "podman" and not c.private for c in every)
        for candidate in every:
            if candidate.private and podman_socket:
                continue  # the same storage, already seen through its socket
            try:
                with self._connected(candidate, keep=False) as engine:
                    entries = listed(engine)
            except (EngineMissing, RootlessNotReady) as exc:
                if candidate.private:
                    continue
                failures.append(f"{candidate.describe()}: {exc}")
                continue
            except SandboxError as exc:
                failures.append(f"{candidate.describe()}: {exc}")
                continue
            for entry in entries:
                self._where[entry["name"]] = (candidate, entry["id"])
                found.append(
                    Leftover(
                        kind=self.KIND,
                        id=entry["name"],
                        owner_pid=entry["owner_pid"],
                        owner_alive=entry["owner_alive"],
                        group=entry["name"],
                        detail=f"agent {entry['agent']}, {candidate.describe()}",
                    )
                )
        if failures:
            raise SandboxError("; ".join(failures))
        return found

    @contextlib.contextmanager
    def _connected(self, candidate: Candidate, keep: bool) -> Any:
        """The engine of ``candidate``: kept open for the removals, else closed after use."""
        from .engine import connect

        engine = self._engines.get(candidate.url)
        if engine is None:
            engine = connect(candidate, self._paths())
            if keep:
                self._engines[candidate.url] = engine
        try:
            yield engine
        finally:
            if not keep:
                with contextlib.suppress(Exception):
                    engine.close()

    def remove(self, item: Leftover) -> None:
        """Remove the container (its processes go with it)."""
        candidate, container_id = self._where[item.id]
        with self._connected(candidate, keep=True) as engine:
            remove_container(engine, container_id)

    def finish(self) -> None:
        """Close the engines (stopping a private podman started for the removals)."""
        for engine in self._engines.values():
            with contextlib.suppress(Exception):
                engine.close()
        self._engines.clear()
