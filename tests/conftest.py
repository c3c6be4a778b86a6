"""Fixtures: each test gets private runtime, state and config locations."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import REPO


@pytest.fixture(scope="session", autouse=True)
def aegis_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One cache directory for the whole session (the MCP handshake's record, compiled BPF
    programs), for the runs the tests start and for the code they run in process: made once,
    as on a user's machine, then reused; never the machine's own."""
    path = tmp_path_factory.mktemp("cache")
    saved = os.environ.get("AEGIS_MCP_CACHE_DIR")
    os.environ["AEGIS_MCP_CACHE_DIR"] = str(path)
    yield path
    if saved is None:
        os.environ.pop("AEGIS_MCP_CACHE_DIR", None)
    else:
        os.environ["AEGIS_MCP_CACHE_DIR"] = saved


@pytest.fixture
def aegis_env(tmp_path: Path, aegis_cache: Path) -> dict[str, str]:
    """Environment for an aegis-mcp run isolated in ``tmp_path`` (the cache is the session's)."""
    env = dict(os.environ)
    for key in list(env):
        if key.startswith(("AEGIS_", "SUDO_")):
            del env[key]
    runtime = tmp_path / "run"
    env.update(
        AEGIS_MCP_RUNTIME_DIR=str(runtime),
        AEGIS_MCP_STATE_DIR=str(tmp_path / "state"),
        AEGIS_MCP_CONFIG=str(tmp_path / "config.toml"),
        AEGIS_MCP_CACHE_DIR=str(aegis_cache),
        AEGIS_DEMO_HOME=str(tmp_path / "demo"),
        AEGIS_DEMO_REPORT=str(tmp_path / "report.jsonl"),
        PYTHONPATH=str(REPO / "runner"),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def runtime_dir(aegis_env: dict[str, str]) -> Path:
    """The runtime directory of ``aegis_env``."""
    return Path(aegis_env["AEGIS_MCP_RUNTIME_DIR"])


@pytest.fixture
def report(aegis_env: dict[str, str]) -> Path:
    """Where the demo agent writes its start-up reports."""
    return Path(aegis_env["AEGIS_DEMO_REPORT"])


@pytest.fixture
def throwaway_user():
    """A real, temporary user with a supplementary group (root only)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a user and drop privileges")
    name = f"aegist{os.getpid() % 100000}"
    group = f"{name}x"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "--create-home", "--groups", group, name], check=True)
    try:
        yield name, group
    finally:
        # userdel refuses (8) while a process of the user is still there, a zombie
        # waiting to be reaped included: give those a moment, or the next test's
        # useradd finds the name taken.
        for _ in range(50):
            done = subprocess.run(["userdel", "--remove", name], capture_output=True)
            if done.returncode != 8:
                break
            time.sleep(0.1)
        subprocess.run(["groupdel", group], check=False, capture_output=True)


@pytest.fixture
def public_runtime(aegis_env: dict[str, str]):
    """A runtime directory other users can reach (pytest's tmp tree is private to root)."""
    shared = Path(tempfile.mkdtemp(prefix="aegis-test-"))
    os.chmod(shared, 0o755)
    aegis_env["AEGIS_MCP_RUNTIME_DIR"] = str(shared / "run")
    try:
        yield shared / "run"
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture(scope="session")
def built_hooks() -> Path:
    """The project's hooks library (``make build`` first if need be)."""
    from aegis_mcp.hooks_lib import find_hooks

    built = find_hooks()
    if built is None:
        subprocess.run(["make", "-C", str(REPO), "build"], check=True, capture_output=True)
        built = find_hooks()
    if built is None:
        pytest.skip("the hooks library could not be built (gcc missing?)")
    return built.path


@pytest.fixture
def hooks_in_roots_home(tmp_path: Path, built_hooks: Path) -> Path:
    """The built hooks library where ``make install`` as root puts it: ``~/.local/lib``
    of a home only root can enter (point AEGIS_HOOKS_LIB at it)."""
    home = tmp_path / "root-home"
    lib = home / ".local" / "lib"
    lib.mkdir(parents=True)
    home.chmod(0o700)
    target = lib / "libaegis_hooks.so"
    shutil.copyfile(built_hooks, target)
    target.chmod(0o755)
    return target


# -- container engines (tests/engines.py) ----------------------------------------------


IN_CI = os.environ.get("CI", "").lower() in ("true", "1")
"""CI (root, its set-up run) has every engine: a missing one fails there, never skips."""


def _engine_missing(reason: str):
    if IN_CI:
        pytest.fail(f"CI=true, yet {reason}: scripts/setup_containers.sh should have set it up")
    pytest.skip(reason)


def _engine_or_skip(start):
    try:
        return start()
    except Exception as exc:  # the reason the engine is missing, as the skip's
        _engine_missing(f"container engine unavailable: {exc}")


@pytest.fixture(scope="session")
def podman_engine():
    """Rootful podman through its API, started for the session."""
    from engines import TestEngine, build_image, podman_service

    if os.geteuid() != 0:
        _engine_missing("rootful podman needs root")
    if shutil.which("podman") is None:
        _engine_missing("podman is not installed (scripts/setup_containers.sh installs it)")
    directory = Path(tempfile.mkdtemp(prefix="aegis-podman-"))
    service = _engine_or_skip(lambda: podman_service(directory))
    try:
        build_image(service.url)
        yield TestEngine("podman", service.url, "podman", rootless=False)
    finally:
        service.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_engine():
    """Debian's Docker Engine (dockerd) on a private socket, started for the session."""
    from engines import Dockerd, TestEngine, build_image

    if os.geteuid() != 0:
        _engine_missing("dockerd needs root")
    if shutil.which("dockerd") is None:
        _engine_missing("dockerd is not installed (scripts/setup_containers.sh installs docker.io)")
    daemon = _engine_or_skip(Dockerd)
    try:
        build_image(daemon.url)
        yield TestEngine("docker", daemon.url, "docker", rootless=False)
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def rootless_engine():
    """The rootless test user's own podman, started as that user for the session."""
    from engines import TestEngine, build_image, podman_service, rootless_user

    if os.geteuid() != 0:
        _engine_missing("starting another user's rootless podman needs root")
    user = rootless_user()
    if user is None:
        _engine_missing("no rootless test user (scripts/setup_containers.sh makes aegis-rootless)")
    service = _engine_or_skip(lambda: podman_service(Path(f"/run/user/{user.pw_uid}"), user))
    try:
        build_image(service.url)
        yield TestEngine("rootless", service.url, "podman", rootless=True, user=user)
    finally:
        service.stop()
