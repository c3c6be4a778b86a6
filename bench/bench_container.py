"""Benchmarks of --sandbox=container (root only; rows say so when they cannot run).

container-start     `aegis-mcp run --sandbox=container -- true` start to exit, next to
                    `podman run --rm IMAGE true` of the same image in the same run (the
                    engine's own floor; `--network none` and the ulimits our containers
                    get), and next to a host start and a netns start; rootful podman
                    through its API socket, the runs alternating, medians
container-private   the same with no socket running: the run starts its own podman
                    service, next to the run with one
container-rootless  the rootless test user's `aegis-mcp run --sandbox=container -- true`
                    next to that user's `podman run --rm IMAGE true` and host start
"""

from __future__ import annotations

import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "runner"))
sys.path.insert(0, str(REPO / "tests"))

Row = tuple[str, str, str, str]
AEGIS = [sys.executable, "-m", "aegis_mcp"]
IMAGE = "aegis-mcp-base"
ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _unavailable(name: str) -> list[Row] | None:
    if os.geteuid() != 0:
        return [(name, "skipped", "needs root", "run `sudo make bench`")]
    if shutil.which("podman") is None:
        return [(name, "skipped", "podman missing", "scripts/setup_containers.sh")]
    return None


def _alternating(commands: dict[str, Callable[[], None]], runs: int) -> dict[str, float]:
    """Median wall time of each command, the commands taking turns (fair under load)."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for command in commands.values():
        command()  # a warm-up each: page cache, the engine's first-run work
    for _ in range(runs):
        for name, command in commands.items():
            started = time.perf_counter()
            command()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def _runner(argv: list[str], env: dict[str, str], cwd: Path, **drop) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
            **drop,
        )

    return run


def _env(base: Path, config: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AEGIS_", "SUDO_"))}
    (base / "config.toml").write_text(config)
    env.update(
        AEGIS_MCP_RUNTIME_DIR=str(base / "run"),
        AEGIS_MCP_STATE_DIR=str(base / "state"),
        AEGIS_MCP_CONFIG=str(base / "config.toml"),
        PYTHONPATH=str(REPO / "runner"),
    )
    return env


def _versus(name: str, ours: tuple[str, float], theirs: tuple[str, float]) -> Row:
    """One row: our start next to another, and what ours costs on top."""
    (our_label, our_secs), (label, secs) = ours, theirs
    return (
        name,
        f"{our_label} {_ms(our_secs)}",
        f"{label} {_ms(secs)}",
        f"+{_ms(our_secs - secs)}",
    )


def _rows(name: str, found: dict[str, float], engine_label: str) -> list[Row]:
    ours = ("container", found["container"])
    others = [(engine_label, found["engine"]), ("host", found["host"])]
    if "netns" in found:
        others.append(("netns", found["netns"]))
    return [_versus(name, ours, other) for other in others]


def bench_container_start(tmp: Path, quick: bool) -> list[Row]:
    """Rootful container start to exit, next to podman's own, a host and a netns start."""
    skipped = _unavailable("container-start")
    if skipped:
        return skipped
    from engines import build_image, podman_service

    service = podman_service(tmp)
    try:
        build_image(service.url)
        env = _env(tmp, f'[container]\nengine = "{service.url}"\n')
        true = ["--no-watchdog", "--", "true"]
        commands = {
            "host": _runner([*AEGIS, "run", *true], env, tmp),
            "netns": _runner([*AEGIS, "run", "--sandbox=netns", *true], env, tmp),
            "container": _runner([*AEGIS, "run", "--sandbox=container", *true], env, tmp),
            "engine": _runner(
                ["podman", "run", "--rm", "--network", "none", *ULIMITS, IMAGE, "true"], env, tmp
            ),
        }
        found = _alternating(commands, 3 if quick else 10)
        (tmp / "private").mkdir()
        private_env = _env(tmp / "private", "")  # no engine named: the run starts its own
        private = _alternating(
            {
                "container": commands["container"],
                "private": _runner([*AEGIS, "run", "--sandbox=container", *true], private_env, tmp),
            },
            2 if quick else 5,
        )
    finally:
        service.stop()
    rows = _rows("container-start", found, "podman run --rm")
    rows.append(
        _versus(
            "container-private",
            ("own podman service", private["private"]),
            ("socket running", private["container"]),
        )
    )
    return rows


def bench_container_rootless(tmp: Path, quick: bool) -> list[Row]:
    """The rootless test user's container start, next to that user's podman run and host start."""
    skipped = _unavailable("container-rootless")
    if skipped:
        return skipped
    from engines import ROOTLESS_USER, as_user, build_image, own_dir, podman_service, user_env

    try:
        user = pwd.getpwnam(ROOTLESS_USER)
    except KeyError:
        return [
            ("container-rootless", "skipped", f"no user {ROOTLESS_USER}", "setup_containers.sh")
        ]
    base = own_dir(Path(tempfile.mkdtemp(prefix="aegis-bench-", dir="/tmp")), user)
    service = podman_service(Path(f"/run/user/{user.pw_uid}"), user)
    try:
        build_image(service.url)
        for name in ("run", "state"):
            own_dir(base / name, user, 0o700)
        (base / "config.toml").write_text(f'[container]\nengine = "{service.url}"\n')
        env = user_env(user, base)
        drop = as_user(user)
        true = ["--no-watchdog", "--", "true"]
        found = _alternating(
            {
                "host": _runner([*AEGIS, "run", *true], env, base, **drop),
                "container": _runner(
                    [*AEGIS, "run", "--sandbox=container", *true], env, base, **drop
                ),
                "engine": _runner(
                    ["podman", "run", "--rm", "--network", "slirp4netns", *ULIMITS, IMAGE, "true"],
                    env,
                    base,
                    **drop,
                ),
            },
            3 if quick else 10,
        )
    finally:
        service.stop()
        shutil.rmtree(base, ignore_errors=True)
    return _rows("container-rootless", found, "podman run --rm (slirp4netns)")


BENCHES: dict[str, Callable[[Path, bool], list[Row]]] = {
    "container-start": bench_container_start,
    "container-rootless": bench_container_rootless,
}
