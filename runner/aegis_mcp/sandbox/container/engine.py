"""Finding the container engine, and talking to it through the docker SDK.

Candidates, in order (:func:`candidates`): ``[container] engine`` from the
config; ``DOCKER_HOST``; under sudo, the invoking user's own rootless engine
(``/run/user/UID/docker.sock``, ``/run/user/UID/podman/podman.sock``) where one
runs; the Docker Engine's default socket; the user's rootless Docker; Podman's
socket (root's ``/run/podman/podman.sock`` or ``$XDG_RUNTIME_DIR/podman/``);
last, where ``podman`` is installed but no socket answers, a private
``podman system service`` started for the length of the run
(:mod:`.service`). A socket counts when it accepts a connection.

:func:`choose` is cheap (a ``connect()`` per socket, no SDK import), so that
a run's plan can say early what engine it will get and whether it is rootless;
:func:`connect` imports the SDK (about 100 ms) and makes the client.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import EngineMissing, EngineRefused
from .exits import exit_dir_of, read_exit_code

if TYPE_CHECKING:
    import docker

    from .service import PrivateService

API_VERSION = "1.41"
"""What podman 4.x's compatible API and Docker Engine 20.10+ both speak: no version
round trip at connect."""
CONNECT_TIMEOUT = 0.5
REQUEST_TIMEOUT = 60
QUICK_EXIT_SECS = 0.25
"""How long after its start a container's exit file is looked for before the end of its
output (the relay, a process to start, says that later)."""
LEARN_SECS = 1.0
"""How long an exit may wait for the exit directory being learnt (one request)."""
DOCKER_SOCKET = "/var/run/docker.sock"
PODMAN_ROOT_SOCKET = "/run/podman/podman.sock"


@dataclass(frozen=True)
class Candidate:
    """An engine that may be used: where it listens, and what is known of it before asking."""

    url: str
    source: str
    """Where it was found, for the user: ``[container] engine``, ``DOCKER_HOST``, ..."""
    kind: str | None = None
    """``docker`` or ``podman`` where the socket's name says so; None until asked."""
    rootless: bool | None = None
    """From the socket's owner; None for a non-local engine until asked."""
    private: bool = False
    """No socket yet: a ``podman system service`` to start for the run."""

    def describe(self) -> str:
        """One line: what engine and from where."""
        kind = self.kind or "engine"
        mode = {True: "rootless ", False: "rootful ", None: ""}[self.rootless]
        return f"{mode}{kind} at {self.url} ({self.source})"


def _unix_path(url: str) -> str | None:
    if url.startswith("unix://"):
        return url[len("unix://") :]
    return None


def _answers(path: str) -> bool:
    # A socket file left by an engine that died refuses connections: not a candidate.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def _kind_of(path: str) -> str | None:
    real = os.path.realpath(path)
    if "podman" in real:
        return "podman"
    if real.endswith("docker.sock"):
        return "docker"
    return None


def _local(url: str, source: str) -> Candidate | None:
    """The candidate at a local socket ``url`` if something listens there."""
    path = _unix_path(url)
    if path is None or not _answers(path):
        return None
    try:
        owner = os.stat(path).st_uid
    except OSError:
        return None
    return Candidate(url, source, _kind_of(path), rootless=owner != 0)


def _invoking_user(environ: Mapping[str, str]) -> int | None:
    uid = environ.get("SUDO_UID", "")
    if os.geteuid() == 0 and uid.isdigit() and int(uid) != 0:
        return int(uid)
    return None


def candidates(explicit: str | None, environ: Mapping[str, str]) -> list[Candidate]:
    """Every engine socket that answers now, best first, then a private podman if installed."""
    found: list[Candidate] = []

    def offer(url: str, source: str) -> None:
        candidate = _local(url, source)
        if candidate is not None and all(c.url != url for c in found):
            found.append(candidate)

    for url, source in (
        (explicit, "[container] engine"),
        (environ.get("DOCKER_HOST"), "DOCKER_HOST"),
    ):
        if url:
            if _unix_path(url) is None:
                # A remote engine cannot be probed cheaply: take it as given.
                found.append(Candidate(url, source))
            else:
                offer(url, source)
    sudo_uid = _invoking_user(environ)
    if sudo_uid is not None:
        run = f"/run/user/{sudo_uid}"
        offer(f"unix://{run}/docker.sock", "the invoking user's rootless Docker")
        offer(f"unix://{run}/podman/podman.sock", "the invoking user's rootless podman")
    offer(f"unix://{DOCKER_SOCKET}", "Docker Engine's default socket")
    runtime = environ.get("XDG_RUNTIME_DIR")
    if os.geteuid() != 0 and runtime:
        offer(f"unix://{runtime}/docker.sock", "rootless Docker")
    if os.geteuid() == 0:
        offer(f"unix://{PODMAN_ROOT_SOCKET}", "podman's socket")
    elif runtime:
        offer(f"unix://{runtime}/podman/podman.sock", "podman's socket")
    if shutil.which("podman"):
        found.append(
            Candidate(
                "private",
                "a podman service started for this run",
                kind="podman",
                rootless=os.geteuid() != 0,
                private=True,
            )
        )
    return found


def choose(explicit: str | None, environ: Mapping[str, str] | None = None) -> Candidate:
    """The engine a run gets (see the module docstring); EngineMissing when there is none."""
    env = os.environ if environ is None else environ
    found = candidates(explicit, env)
    if explicit and (not found or found[0].source != "[container] engine"):
        raise EngineMissing(f"[container] engine = {explicit!r} does not answer")
    if not found:
        raise EngineMissing(
            "no container engine: install podman (`apt-get install podman runc`; rootless "
            "also needs uidmap and slirp4netns) or Docker, or set [container] engine"
        )
    return found[0]


@dataclass
class Engine:
    """A connected engine: its SDK client and what it is."""

    url: str
    source: str
    kind: str
    rootless: bool
    client: docker.DockerClient
    service: PrivateService | None = None
    _version: dict[str, Any] | None = None
    created: threading.Event = field(default_factory=threading.Event)
    """Set once a container was created through this connection: the engine then works on
    initialising it, and background requests wait for that rather than slow the start."""
    _exit_dir: Path | None = None
    _learning: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def api(self) -> docker.APIClient:
        """The SDK's low-level client (some settings exist only there: ``UsernsMode``)."""
        return self.client.api

    def version(self) -> dict[str, Any]:
        """The engine's ``/version`` answer (asked once)."""
        with self._lock:
            if self._version is None:
                self._version = refused(self.api.version)
            return self._version

    def product(self) -> str:
        """``podman 4.3.1`` or ``docker 20.10.24``: what the engine says it is."""
        version = self.version()
        return f"{self.kind} {version.get('Version', '?')} (API {version.get('ApiVersion', '?')})"

    def wait_exit(self, container_id: str, output_ended: threading.Event | None = None) -> int:
        """Block until the container exits; its exit code (EngineRefused if the engine fails).

        A podman container's exit code comes from conmon's exit file (:mod:`.exits`),
        40-150 ms before podman's ``wait`` answers, when it exits within its first
        moments (a quick command) or once ``output_ended`` is set (the container's output
        has ended); the event is set again when the engine's answer comes.
        """
        if output_ended is None or self.kind != "podman":
            return self._wait_call(container_id)
        learning = self._learning
        if learning is not None:
            learning.join(LEARN_SECS)
        exit_dir = self._exit_dir
        if exit_dir is None:
            return self._wait_call(container_id)
        answer: list[Any] = []

        def engine_wait() -> None:
            try:
                answer.append(self._wait_call(container_id))
            except BaseException as exc:  # handed to the waiting thread
                answer.append(exc)
            output_ended.set()

        threading.Thread(target=engine_wait, name="aegis-container-exit", daemon=True).start()
        path = exit_dir / container_id
        code = read_exit_code(path, QUICK_EXIT_SECS)
        if code is not None:
            return code
        output_ended.wait()
        if not answer:
            code = read_exit_code(path)
            if code is not None:
                return code
            # Output closed, the container still runs: the engine's answer it is.
            output_ended.clear()
            if not answer:
                output_ended.wait()
        if isinstance(answer[0], BaseException):
            raise answer[0]
        return int(answer[0])

    def _wait_call(self, container_id: str) -> int:
        """The engine's own ``wait``.

        podman's compatible ``wait`` re-reads the container's state every 250 ms;
        its own API takes a shorter interval, which the end of every agent waits on.
        """
        api = self.api
        if self.kind == "podman":
            url = f"{api.base_url}/v4.0.0/libpod/containers/{container_id}/wait"
            params = {"condition": "exited", "interval": "10ms"}
            response = refused(api._post, url, params=params, timeout=None)
            refused(api._raise_for_status, response)
            return int(response.json())
        return int(refused(api.wait, container_id, timeout=None).get("StatusCode", 255))

    def learn_exit_dir(self, container_id: str) -> None:
        """Learn podman's exit directory from the conmon of container ``container_id``,
        initialised and not yet started (its conmon is gone soon after a quick exit), in
        the background: once per engine, none for Docker Engine."""
        with self._lock:
            if self.kind != "podman" or self._exit_dir is not None or self._learning:
                return
            self._learning = threading.Thread(
                target=self._read_exit_dir,
                args=(container_id,),
                name="aegis-container-exits",
                daemon=True,
            )
        self._learning.start()

    def _read_exit_dir(self, container_id: str) -> None:
        api = self.api
        url = f"{api.base_url}/v4.0.0/libpod/containers/{container_id}/json"
        with contextlib.suppress(Exception):
            state = refused(api._result, refused(api._get, url), True).get("State") or {}
            pid = state.get("ConmonPid")
            if isinstance(pid, int) and pid > 0:
                self._exit_dir = exit_dir_of(pid)
        if self._exit_dir is None:
            # No shortcut for this container; the next one tries again.
            with self._lock:
                self._learning = None

    def describe(self) -> dict[str, Any]:
        """JSON-able facts for the status."""
        return {
            "url": self.url,
            "source": self.source,
            "kind": self.kind,
            "rootless": self.rootless,
            "private_service": self.service is not None,
        }

    def close(self) -> None:
        """Close the client; stop the private service if this run started it."""
        with contextlib.suppress(Exception):
            self.client.close()
        if self.service is not None:
            self.service.stop()


def refused(call: Any, *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)``, the engine's own refusal turned into EngineRefused.

    ``docker.errors.NotFound`` passes through: that something is absent is an answer.
    """
    import docker.errors
    import requests.exceptions

    try:
        return call(*args, **kwargs)
    except docker.errors.NotFound:
        raise
    except docker.errors.APIError as exc:
        reason = exc.explanation or str(exc)
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        raise EngineRefused(f"the container engine refused: {reason}") from None
    except docker.errors.BuildError as exc:
        raise EngineRefused(f"the container engine refused the build: {exc.msg}") from None
    except (requests.exceptions.RequestException, docker.errors.DockerException, OSError) as exc:
        raise EngineRefused(f"the container engine did not answer: {exc}") from None


def connect(
    candidate: Candidate,
    private_paths: tuple[Path, Path] | None = None,
    as_user: pwd.struct_passwd | None = None,
) -> Engine:
    """A connected :class:`Engine` for ``candidate``, starting the private podman if need be
    (its socket and log at ``private_paths``; as ``as_user``, root only: that user's
    rootless podman)."""
    import docker

    service = None
    url = candidate.url
    if candidate.private:
        from .service import PrivateService

        if private_paths is None:
            raise EngineMissing("no socket path for a private podman service")
        service = PrivateService.start(*private_paths, as_user)
        url = service.url
    try:
        client = docker.DockerClient(base_url=url, version=API_VERSION, timeout=REQUEST_TIMEOUT)
        kind, rootless = candidate.kind, candidate.rootless
        if kind is None or rootless is None:
            info = refused(client.info)
            options = " ".join(info.get("SecurityOptions") or [])
            rootless = "rootless" in options if rootless is None else rootless
            kind = kind or _kind_from_version(refused(client.version))
        # Else no ping: the socket answered (candidates), and the first request says
        # what the engine refuses, with its message.
    except BaseException:
        if service is not None:
            service.stop()
        raise
    engine = Engine(url, candidate.source, kind, rootless, client, service)
    if service is not None:
        service.hold(engine.api)
    return engine


def _kind_from_version(version: dict[str, Any]) -> str:
    names = " ".join(str(c.get("Name", "")) for c in version.get("Components") or [])
    return "podman" if "podman" in names.lower() else "docker"
