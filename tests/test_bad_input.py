"""Bad input on the command line and in agent_spawn, and a clean exit (issue 9).

Every mistake gets one ``aegis-mcp: error: ...`` line and exit code 2; nothing
hangs, and no exit path prints a traceback.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest

from aegis_mcp.control.protocol import ControlError
from helpers import AEGIS, call, runner_socket, start_aegis


def run(argv: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        AEGIS + argv,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
    )


def one_error_line(result: subprocess.CompletedProcess, needle: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("aegis-mcp: error: "), result.stderr
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["restart", "abc"], "Invalid value for 'pid'"),
        (["status", "x1"], "Invalid value for 'pid'"),
        (["netns", "bogus"], "No such command 'bogus'"),
        (["netns"], "Missing command"),
        (["doctor", "--frobnicate"], "No such option: --frobnicate"),
        (["run", "--", "/etc"], "'/etc' (etc) is a directory, not a program"),
        (["run", "--", "/etc/passwd"], "is not executable"),
        (["run", "--", "/no/such/program"], "does not exist"),
    ],
)
def test_usage_mistakes_are_one_line_and_exit_2(aegis_env, argv, needle):
    one_error_line(run(argv, aegis_env), needle)


def test_a_directory_on_path_is_named_as_such(aegis_env, tmp_path):
    (tmp_path / "bin" / "fake-agent").mkdir(parents=True)
    env = dict(aegis_env, PATH=f"{tmp_path / 'bin'}:{aegis_env['PATH']}")
    one_error_line(run(["run", "--", "fake-agent"], env), "which is a directory")


def test_runtime_dir_naming_a_file_or_a_dangling_link(aegis_env, tmp_path):
    regular = tmp_path / "file"
    regular.write_text("x")
    env = dict(aegis_env, AEGIS_MCP_RUNTIME_DIR=str(regular))
    one_error_line(run(["run", "--", "true"], env), "exists and is not a directory")
    dangling = tmp_path / "dangling"
    os.symlink(tmp_path / "nowhere", dangling)
    env = dict(aegis_env, AEGIS_MCP_RUNTIME_DIR=str(dangling))
    one_error_line(run(["run", "--", "true"], env), "is a symbolic link")
    assert not (tmp_path / "nowhere").exists() and regular.read_text() == "x"


def test_config_naming_a_fifo_is_an_error_not_a_hang(aegis_env, tmp_path):
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    env = dict(aegis_env, AEGIS_MCP_CONFIG=str(fifo))
    one_error_line(run(["run", "--", "true"], env), "not a regular file")


def test_exit_with_a_pool_database_prints_no_traceback(aegis_env, runtime_dir):
    from aegis_mcp.pool import PoolStore

    state = Path(aegis_env["AEGIS_MCP_STATE_DIR"])
    PoolStore.open(state).close()
    # Long enough for the runner to take the pool over (0.5 s after start).
    result = run(["run", "--no-watchdog", "--", "sleep", "1.5"], aegis_env)
    assert result.returncode == 0
    assert result.stderr == "", result.stderr
    assert list(runtime_dir.iterdir()) == []  # no snapshot written after the files went


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda sig: sig.name
)
def test_a_signalled_exit_with_a_pool_database_prints_no_traceback(aegis_env, runtime_dir, sig):
    from aegis_mcp.pool import PoolStore

    PoolStore.open(Path(aegis_env["AEGIS_MCP_STATE_DIR"])).close()
    proc = start_aegis(["run", "--no-watchdog", "--", "sleep", "300"], aegis_env)
    try:
        sock = runner_socket(runtime_dir)
        call(sock, "agent_list")  # the pool is open from here on
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, err) == (128 + sig, "")
    assert list(runtime_dir.iterdir()) == []


def test_no_snapshot_is_written_once_the_run_is_over(tmp_path):
    """The shutdown's order: once closed, neither a pending write nor a new request
    writes the snapshot (the runner removes it with its other files, then closes the
    pool store that a write would read)."""
    from aegis_mcp.runner.state import SNAPSHOT_MIN_INTERVAL, SnapshotWriter

    path = tmp_path / "state-1.json"
    builds = []

    async def run() -> None:
        writer = SnapshotWriter(path, lambda: builds.append(1) or {}, None)
        writer.write_now()  # the next request waits SNAPSHOT_MIN_INTERVAL: pending
        path.unlink()
        writer.request()
        writer.close()
        writer.request()
        await asyncio.sleep(2 * SNAPSHOT_MIN_INTERVAL)

    asyncio.run(run())
    assert not path.exists() and builds == [1]


def test_agent_spawn_refuses_directories_the_agent_cannot_work_in(aegis_env, public_runtime):
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    env = dict(aegis_env, SUDO_UID="65534", SUDO_GID="65534", SUDO_USER="nobody")
    proc = start_aegis(["run", "--no-watchdog", "--", "sleep", "300"], env, cwd="/")
    try:
        sock = runner_socket(public_runtime)

        def refused(directory: str) -> str:
            with pytest.raises(ControlError) as caught:
                call(
                    sock,
                    "agent_spawn",
                    description="x",
                    agent_type="demo",
                    working_directory=directory,
                )
            assert caught.value.code == "invalid_argument"
            return caught.value.message

        assert "kernel pseudo-filesystem" in refused("/proc/self")
        assert "kernel pseudo-filesystem" in refused("/sys/kernel")
        private = Path(aegis_env["AEGIS_MCP_STATE_DIR"]).parent  # root's, 0700
        message = refused(str(private))
        assert "not a directory the agent's user nobody (uid 65534) can enter" in message
        # A directory nobody can enter passes that check (the next one refuses).
        with pytest.raises(ControlError, match="max_iterations"):
            call(
                sock,
                "agent_spawn",
                description="x",
                agent_type="demo",
                working_directory="/tmp",
                max_iterations=0,
            )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
