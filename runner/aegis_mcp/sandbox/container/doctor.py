"""What ``aegis-mcp doctor`` says of containers: which engine a run gets, and rootless.

Nothing is started: an engine that runs is asked for its version; podman
without a socket is named with its installed version (a run starts its own
service); rootless is judged by its prerequisites for the user who would run it.
"""

from __future__ import annotations

import os
import pwd
import subprocess

from ..errors import SandboxError
from .engine import choose, connect
from .image import find_image
from .rootless import missing_prerequisites, tun_problem
from .settings import DEFAULT_IMAGE

CheckTuple = tuple[str, bool, str, str]
"""(name, ok, detail, what a failure disables)."""


def _podman_version() -> str:
    try:
        out = subprocess.run(
            ["podman", "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "podman"
    return out.strip() or "podman"


def _rootless_user() -> tuple[str, int, str | None]:
    uid = int(os.environ.get("SUDO_UID", "0")) if os.geteuid() == 0 else os.geteuid()
    if uid == 0:
        return "root", 0, None
    name = pwd.getpwuid(uid).pw_name
    runtime = os.environ.get("XDG_RUNTIME_DIR") if os.geteuid() != 0 else f"/run/user/{uid}"
    return name, uid, runtime


def engine_checks(configured: str | None = None, image: str = DEFAULT_IMAGE) -> list[CheckTuple]:
    """The container engine's checks: the engine, its image, rootless."""
    checks: list[CheckTuple] = []
    try:
        candidate = choose(configured)
    except SandboxError as exc:
        return [("container engine", False, str(exc), "--sandbox=container")]
    if candidate.private:
        detail = (
            f"{_podman_version()} installed, no API socket runs: each run starts a private "
            f"{'rootless' if candidate.rootless else 'rootful'} `podman system service`"
        )
        checks.append(("container engine", True, detail, ""))
    else:
        try:
            engine = connect(candidate)
            try:
                detail = f"{engine.product()}, {candidate.describe()}"
                found = find_image(engine, image) is not None
            finally:
                engine.close()
        except SandboxError as exc:
            return [
                ("container engine", False, f"{candidate.describe()}: {exc}", "--sandbox=container")
            ]
        checks.append(("container engine", True, detail, ""))
        checks.append(
            (
                "container image",
                found,
                f"{image} {'present' if found else 'missing: `aegis-mcp image build` makes it'}",
                "" if found else "--sandbox=container",
            )
        )
    name, uid, runtime = _rootless_user()
    if uid == 0:
        checks.append(("rootless containers", False, "not asked: root without a sudo user", ""))
        return checks
    missing = missing_prerequisites(name, uid, runtime)
    network = tun_problem() if os.geteuid() == uid else None
    if network is not None:
        missing.append(f"network: {network}")
    detail = (
        f"work for {name} (subuid/subgid, newuidmap, XDG_RUNTIME_DIR, slirp4netns)"
        if not missing
        else f"for {name}: " + "; ".join(missing)
    )
    checks.append(
        (
            "rootless containers",
            not missing,
            detail,
            "" if not missing else "rootless --sandbox=container",
        )
    )
    return checks
