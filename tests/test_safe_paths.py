"""Attack tests for the runtime and state directories (issue 9, "Runtime and state files").

aegis-mcp runs as root under sudo and writes pid-named files: every directory it
writes in must be one that only root (or its owner) can change, all the way up
from ``/``. Each test plants what another user could plant, runs the real
runner or the real store, and checks that it was refused, that nothing was
written outside and that nothing was chowned.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from pathlib import Path

import pytest

from aegis_mcp.control.protocol import ControlError
from aegis_mcp.files import create_new, write_atomic
from aegis_mcp.pool.errors import PoolUnavailable
from aegis_mcp.safe_paths import UnsafeDirectoryError, private_dir
from helpers import AEGIS, runner_socket, wait_for

NOBODY = 65534  # another user, present on every Debian system

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def _as_nobody(path: Path) -> Path:
    os.lchown(path, NOBODY, NOBODY)
    return path


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.chmod(victim, 0o644)
    return victim


def _intact(victim: Path) -> None:
    info = victim.stat()
    assert victim.read_text() == "precious\n"
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o644)


def _sudo_env(aegis_env: dict[str, str], runtime: Path) -> dict[str, str]:
    # With a sudo user the runner would chown its files to that user.
    return dict(
        aegis_env,
        AEGIS_MCP_RUNTIME_DIR=str(runtime),
        SUDO_UID=str(NOBODY),
        SUDO_GID=str(NOBODY),
        SUDO_USER="nobody",
    )


def _run_true(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """``aegis-mcp run -- true``: the finished process (its pid matters) and its stderr."""
    proc = subprocess.Popen(
        [*AEGIS, "run", "--no-watchdog", "--", "true"],
        env=env,
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = proc.communicate(timeout=60)
    return proc, err


def _refused(env: dict[str, str], needle: str) -> None:
    proc, err = _run_true(env)
    lines = err.strip().splitlines()
    assert proc.returncode == 2, err
    assert len(lines) == 1 and lines[0].startswith("aegis-mcp: error: refusing the runtime")
    assert needle in lines[0], lines[0]


def _plant_links(directory: Path, target: Path, count: int = 3000) -> tuple[range, set[str]]:
    """Symlinks to ``target``, made by another user, for the next ``count`` pids."""
    last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    pids = range(last + 1, last + 1 + count)
    names = set()
    for pid in pids:
        for name in (f"events-{pid}.jsonl", f"runner-{pid}.lock", f"state-{pid}.json"):
            _as_nobody_link(directory / name, target)
            names.add(name)
    return pids, names


def _as_nobody_link(link: Path, target: Path) -> None:
    os.symlink(target, link)
    os.lchown(link, NOBODY, NOBODY)


def test_world_writable_sticky_runtime_dir_is_refused_and_planted_links_unused(aegis_env, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    victim = _victim(tmp_path)
    pids, planted = _plant_links(shared, victim)
    proc, err = _run_true(_sudo_env(aegis_env, shared))
    assert proc.pid in pids, "the runner's pid was not among the planted ones"
    assert proc.returncode == 2 and err.count("\n") == 1, err
    assert "writable by others (mode 1777)" in err and "not repaired" in err
    _intact(victim)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777  # refused, not chmodded
    assert set(os.listdir(shared)) == planted  # nothing created beside the links


def test_symlinked_parent_is_refused(aegis_env, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    # Another user's link in a shared directory: it can point anywhere at any time.
    _as_nobody_link(sticky / "link", elsewhere)
    _refused(_sudo_env(aegis_env, sticky / "link" / "rt"), "symbolic link made by nobody")
    # Root's own link, but in a directory another user owns (and so may swap it).
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    _as_nobody(theirs)
    os.symlink(elsewhere, theirs / "link")
    _refused(_sudo_env(aegis_env, theirs / "link" / "rt"), "is owned by nobody (uid 65534)")
    assert os.listdir(elsewhere) == []


def test_another_users_or_group_writable_dir_is_refused(aegis_env, tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    _as_nobody(theirs)
    _refused(_sudo_env(aegis_env, theirs), "owned by nobody (uid 65534), not by root")
    _refused(_sudo_env(aegis_env, theirs / "rt"), "owned by nobody (uid 65534)")
    info = theirs.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode), os.listdir(theirs)) == (NOBODY, 0o700, [])
    group = tmp_path / "group"
    group.mkdir()
    os.chmod(group, 0o770)
    _refused(_sudo_env(aegis_env, group), "writable by its group (mode 0770)")
    assert stat.S_IMODE(group.stat().st_mode) == 0o770 and os.listdir(group) == []


def test_runtime_dir_that_is_a_file_or_a_dangling_link(aegis_env, tmp_path):
    regular = tmp_path / "file"
    regular.write_text("x")
    _refused(dict(aegis_env, AEGIS_MCP_RUNTIME_DIR=str(regular)), "is not a directory")
    dangling = tmp_path / "dangling"
    os.symlink(tmp_path / "nowhere", dangling)
    _refused(dict(aegis_env, AEGIS_MCP_RUNTIME_DIR=str(dangling)), "is a symbolic link")
    assert not (tmp_path / "nowhere").exists()


def test_leftover_links_in_a_private_dir_are_replaced_not_followed(aegis_env, tmp_path):
    """Defence in depth: even names under our pid left in our own directory (a
    crashed runner's, or root's mistake) are never opened through."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o755)
    victim = _victim(tmp_path)
    pids, _ = _plant_links(runtime, victim, count=2000)
    for pid in pids:
        os.lchown(runtime / f"events-{pid}.jsonl", 0, 0)
        os.lchown(runtime / f"runner-{pid}.lock", 0, 0)
        os.lchown(runtime / f"state-{pid}.json", 0, 0)
    proc, err = _run_true(_sudo_env(aegis_env, runtime))
    assert proc.pid in pids
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    _intact(victim)
    # The runner's own names were replaced by its files and removed at exit.
    left = {p.name for p in runtime.iterdir() if p.name.endswith(f"-{proc.pid}.jsonl")}
    assert left == set()


def test_preload_log_is_made_by_the_runner_for_the_agent_user(aegis_env, tmp_path):
    runtime = Path("/tmp") / f"aegis-test-preload-{os.getpid()}"
    runtime.mkdir(mode=0o755)
    try:
        env = _sudo_env(aegis_env, runtime / "run")
        proc = subprocess.Popen(
            [*AEGIS, "run", "--no-watchdog", "--netmon=preload", "--", "sleep", "300"],
            env=env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            runner_socket(runtime / "run")
            log = runtime / "run" / f"netmon-{proc.pid}.jsonl"
            info = wait_for(lambda: log.exists() and log.lstat(), what="netmon log")
            assert stat.S_ISREG(info.st_mode)
            assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY, NOBODY, 0o600)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        subprocess.run(["rm", "-rf", str(runtime)], check=False)


def test_state_files_follow_the_same_rules(tmp_path):
    """Pool database, pool logs, worktrees, sandbox markers and resolv.conf directories."""
    from aegis_mcp.pool import PoolStore
    from aegis_mcp.pool.worktree import Git
    from aegis_mcp.privileges import resolve_agent_user
    from aegis_mcp.processes import ChildReaper
    from aegis_mcp.sandbox.errors import SandboxError
    from aegis_mcp.sandbox.netns import markers

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    _as_nobody(theirs)
    with pytest.raises(PoolUnavailable, match="writable by others"):
        PoolStore.open(shared)
    with pytest.raises(PoolUnavailable, match="owned by nobody"):
        PoolStore.open(theirs / "state")
    with pytest.raises(SandboxError, match=r"refusing the marker directory .*writable by others"):
        markers.state_dir(shared)
    with pytest.raises(SandboxError, match=r"refusing the resolv\.conf directory .*nobody"):
        markers.checked_dir(theirs / "aegis-1", "resolv.conf directory")
    with pytest.raises(UnsafeDirectoryError, match="owned by nobody"):
        private_dir(theirs / "pool-logs")  # as AgentPool checks its log directory

    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (
        ["init", "-q"],
        ["-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True)

    async def worktree() -> None:
        git = Git(ChildReaper(asyncio.get_running_loop()), resolve_agent_user(keep_root=True))
        await git.create(str(repo), "abcd1234", theirs / "worktrees")

    with pytest.raises(ControlError, match=r"refusing the worktree directory .*nobody"):
        asyncio.run(worktree())
    assert os.listdir(shared) == [] and os.listdir(theirs) == []


def test_directories_made_for_another_user_are_fchowned(tmp_path):
    made = private_dir(tmp_path / "home" / "state" / "worktrees", owner=(NOBODY, NOBODY))
    for path in (made, made.parent, made.parent.parent):
        info = path.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (NOBODY, 0o700)
    # Root does not follow that user's links when it makes directories for them.
    os.symlink(tmp_path, made / "link")
    os.lchown(made / "link", NOBODY, NOBODY)
    with pytest.raises(UnsafeDirectoryError, match="symbolic link made by nobody"):
        private_dir(made / "link" / "x", owner=(NOBODY, NOBODY))
    assert not (tmp_path / "x").exists()


def test_files_are_created_new_never_through_a_link(tmp_path):
    victim = _victim(tmp_path)
    link = tmp_path / "events-1.jsonl"
    os.symlink(victim, link)
    with pytest.raises(FileExistsError):
        create_new(link)
    fd = create_new(link, owner=(NOBODY, NOBODY), replace=True)
    os.write(fd, b"{}\n")
    os.close(fd)
    info = link.lstat()
    assert stat.S_ISREG(info.st_mode) and (info.st_uid, stat.S_IMODE(info.st_mode)) == (
        NOBODY,
        0o600,
    )
    # A link planted under write_atomic's temporary name is replaced, not written through.
    target = tmp_path / "state-1.json"
    os.symlink(victim, tmp_path / f".state-1.json.{os.getpid()}.tmp")
    write_atomic(target, b"{}", owner=(NOBODY, NOBODY))
    assert target.read_bytes() == b"{}" and target.stat().st_uid == NOBODY
    _intact(victim)
