"""A private ``podman system service`` for the length of one run.

Where podman is installed but no API socket runs (a fresh machine, a user who
never enabled ``podman.socket``), the runner starts one on a socket in its own
runtime directory, as itself: rootful for root, rootless for a user. It is
started with an idle timeout and kept from idling by a ping every few
seconds: when the runner ends, even by SIGKILL, the pings stop and the
service exits by itself, so a crashed runner leaves no service behind. (An
open request cannot do it: podman notices a client gone only when it writes
to it, and an attached terminal does not count as activity.) A run that ends
normally stops it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EngineMissing, RootlessNotReady
from .rootless import missing_prerequisites

IDLE_SECS = 10
"""How long the service outlives the runner's last request (after a crash)."""
PING_SECS = 2.0
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


@dataclass
class PrivateService:
    """One ``podman system service`` process and its socket."""

    process: subprocess.Popen[bytes]
    socket_path: Path
    log_path: Path
    _stopped: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        """The docker SDK base URL of the socket."""
        return f"unix://{self.socket_path}"

    @classmethod
    def start(
        cls, socket_path: Path, log_path: Path, as_user: pwd.struct_passwd | None = None
    ) -> PrivateService:
        """Start the service and wait until it answers; EngineMissing/RootlessNotReady if not.

        It runs as this process, or (root only) as ``as_user``, whose rootless
        storage it then serves, listening on ``socket_path``, its output in ``log_path``.
        """
        podman = shutil.which("podman")
        if podman is None:
            raise EngineMissing("podman is not installed (apt-get install podman runc)")
        env = dict(os.environ)
        account = as_user or (pwd.getpwuid(os.geteuid()) if os.geteuid() != 0 else None)
        if account is not None:
            if as_user is not None:
                env.update(
                    HOME=as_user.pw_dir,
                    USER=as_user.pw_name,
                    LOGNAME=as_user.pw_name,
                    XDG_RUNTIME_DIR=f"/run/user/{as_user.pw_uid}",
                )
            missing = missing_prerequisites(
                account.pw_name, account.pw_uid, env.get("XDG_RUNTIME_DIR")
            )
            if missing:
                raise RootlessNotReady(
                    f"rootless podman cannot run for {account.pw_name}: " + "; ".join(missing)
                )
            # Rootless podman keeps per-user state there and fails if it is missing.
            state = Path(env["XDG_RUNTIME_DIR"]) / "podman"
            if not state.is_dir():
                state.mkdir(mode=0o700)
                os.chown(state, account.pw_uid, account.pw_gid)
        socket_path.unlink(missing_ok=True)
        drop: dict[str, Any] = {}
        if as_user is not None:
            drop = dict(
                user=as_user.pw_uid,
                group=as_user.pw_gid,
                extra_groups=os.getgrouplist(as_user.pw_name, as_user.pw_gid),
                cwd=as_user.pw_dir,
            )
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [podman, "system", "service", f"--time={IDLE_SECS}", f"unix://{socket_path}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                # Not in the runner's session: a Ctrl-C meant for the agent is not for it.
                start_new_session=True,
                **drop,
            )
        service = cls(process, socket_path, log_path)
        try:
            service._wait_ready()
        except BaseException:
            service.stop()
            raise
        return service

    def _wait_ready(self) -> None:
        import docker
        import docker.errors
        import requests.exceptions

        deadline = time.monotonic() + READY_TIMEOUT
        client = None
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise EngineMissing(f"podman system service exited: {self.log_tail()}")
                if self.socket_path.exists():
                    client = client or docker.DockerClient(
                        base_url=self.url, version="1.41", timeout=5
                    )
                    with contextlib.suppress(
                        docker.errors.DockerException, requests.exceptions.RequestException
                    ):
                        if client.ping():
                            return
                time.sleep(0.01)
        finally:
            if client is not None:
                client.close()
        raise EngineMissing(f"podman system service did not answer in {READY_TIMEOUT:.0f} s")

    def log_tail(self, limit: int = 400) -> str:
        """The end of the service's log, for an error message."""
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except OSError:
            return "(no log)"
        return text[-limit:] or "(no output)"

    def hold(self, api: Any) -> None:
        """Keep the service from idling out while we live: ping it through ``api`` (the
        SDK's low-level client on this service) every few seconds."""

        def ping() -> None:
            while not self._stop.wait(PING_SECS):
                with contextlib.suppress(Exception):
                    api.ping()

        threading.Thread(target=ping, name="aegis-podman-keepalive", daemon=True).start()

    def stop(self) -> None:
        """Stop the service and remove its socket and log (idempotent)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop.set()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(STOP_TIMEOUT)
        self.socket_path.unlink(missing_ok=True)
        self.log_path.unlink(missing_ok=True)
