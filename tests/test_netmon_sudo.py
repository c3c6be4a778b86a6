"""Preload monitoring under ``sudo``: root's runner, an agent dropped to a test user.

The hooks library sits where ``make install`` as root puts it (a 0700 home's
``.local/lib``), which the user cannot open: the runner checks that with the user's
credentials and copies it where they can. A client that makes raw syscalls is
reported as seen in part, with its bytes unknown; a library that cannot be made
loadable, and a log the user cannot reach, are said, not silently unrecorded.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from aegis_mcp.hooks_lib import HooksUnusable, hooks_for_user, read_info
from aegis_mcp.privileges import as_user, resolve_agent_user
from helpers import AEGIS, call, runner_socket, serve_connections, start_aegis, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a privilege drop needs root")

CLIENT = """\
import socket, sys, time
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
s.sendall(b'x' * 5000)
got = 0
while got < 321:
    got += len(s.recv(65536))
print('done', flush=True)
time.sleep(300)
"""

# connect() through libc, then every byte with syscall(SYS_sendto): what Bun does.
RAW_SENDER = r"""
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) return 2;
    char buf[1000];
    memset(buf, 'r', sizeof buf);
    for (int i = 0; i < 7; i++)
        if (syscall(SYS_sendto, s, buf, sizeof buf, 0, NULL, 0) != sizeof buf) return 3;
    printf("sent\n");
    fflush(stdout);
    sleep(300);
    return 0;
}
"""


class Server:
    """A TCP server on loopback: counts what each client sends, answers 321 bytes once
    5000 have arrived."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[int] = []
        self.answered = threading.Event()
        serve_connections(self.sock, self._client)

    def _client(self, conn: socket.socket) -> None:
        total, answered = 0, False
        with conn:
            try:
                while chunk := conn.recv(65536):
                    total += len(chunk)
                    if total >= 5000 and not answered:
                        conn.sendall(b"y" * 321)
                        answered = True
                        self.answered.set()
            except ConnectionResetError:
                pass  # a client killed with our answer unread
        self.received.append(total)

    def totals(self) -> list[int]:
        """What each client sent, once one has closed."""
        return wait_for(lambda: self.received, what="a client to close")


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.sock.close()


@pytest.fixture
def sudo(aegis_env, throwaway_user, public_runtime, hooks_in_roots_home):
    """``sudo aegis-mcp`` by the test user: (env, user's AgentUser, a directory they can
    read for the agent's files)."""
    name, _group = throwaway_user
    entry = pwd.getpwnam(name)
    env = dict(aegis_env)
    env.update(SUDO_USER=name, SUDO_UID=str(entry.pw_uid), SUDO_GID=str(entry.pw_gid))
    env["AEGIS_HOOKS_LIB"] = str(hooks_in_roots_home)
    user = resolve_agent_user(False, env)
    assert user.drop
    return env, user, public_runtime.parent


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    proc.terminate()
    return proc.communicate(timeout=30)


def _status(runtime: Path, verdict: str) -> dict:
    sock = runner_socket(runtime)
    return wait_for(
        lambda: (
            (s := call(sock, "netmon_status"))
            and s.get("coverage")
            and s["coverage"]["verdict"] == verdict
            and s
        ),
        what=f"coverage {verdict!r}",
    )


def test_preload_counts_exact_bytes_with_the_library_in_roots_home(
    sudo, server, public_runtime, hooks_in_roots_home
):
    env, user, shared = sudo
    client = shared / "client.py"
    client.write_text(CLIENT)
    argv = [sys.executable, str(client), str(server.port)]
    proc = start_aegis(["run", "--netmon=preload", "--no-watchdog", "--", *argv], env)
    try:
        status = wait_for(
            lambda: (s := _status(public_runtime, "full"))["bytes_received"] == 321 and s
        )
        assert status["mode"] == "preload" and status["bytes_sent"] == 5000
        assert status["total_connections"] == 1
        assert status["top_targets"][0]["target"] == f"127.0.0.1:{server.port}"
        sock = runner_socket(public_runtime)
        info = call(sock, "server_status")
        agent_pid = info["agent"]["pid"]
        assert [p["pid"] for p in status["coverage"]["processes"]] == [agent_pid]
        assert status["coverage"]["processes"][0]["line"].endswith("connects and bytes seen")
        # It ran as the user, with a copy of the library they can read and cannot change.
        assert os.stat(f"/proc/{agent_pid}").st_uid == user.uid
        copy = Path(info["runner"]["hooks_library"])
        assert copy.parent == public_runtime and copy != hooks_in_roots_home
        assert copy.read_bytes() == hooks_in_roots_home.read_bytes()
        st = copy.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o644)
        assert os.stat(public_runtime).st_uid == 0
        assert Path(status["log_file"]).stat().st_uid == user.uid
    finally:
        _out, err = _stop(proc)
    assert server.totals() == [5000]
    assert not copy.exists(), "the copy outlived the run"
    assert "cannot be preloaded" not in err


def test_raw_sendto_after_a_libc_connect_is_partial_with_bytes_unknown(
    sudo, server, public_runtime
):
    env, _user, shared = sudo
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("needs a C compiler")
    (shared / "rawsend.c").write_text(RAW_SENDER)
    exe = shared / "rawsend"
    subprocess.run([cc, "-O1", "-o", str(exe), str(shared / "rawsend.c")], check=True)
    argv = [str(exe), str(server.port)]
    proc = start_aegis(["run", "--netmon=preload", "--no-watchdog", "--", *argv], env)
    try:
        status = _status(public_runtime, "partial")
        (process,) = status["coverage"]["processes"]
        assert process["comm"] == "rawsend"
        assert (process["connects"], process["bytes"], process["reason"]) == (
            True,
            False,
            "raw syscalls",
        )
        assert process["line"] == (
            "rawsend: connects seen, bytes not: raw syscalls; use --netmon=ebpf"
        )
        # The connect was seen; its 7000 bytes were not, and read as unknown, not 0.
        assert status["total_connections"] == 1
        assert status["bytes_sent"] is None and status["bytes_received"] is None
        assert status["bytes_counted"] == {"sent": 0, "received": 0}
        assert status["bytes_unknown_pids"] == [process["pid"]]
        (shown,) = [p for p in status["processes"] if p["pid"] == process["pid"]]
        assert shown["bytes_sent"] is None and shown["connections"] == 1
        assert status["top_targets"][0]["bytes_sent"] is None
        netmon = call(runner_socket(public_runtime), "server_status")["netmon"]
        assert netmon["coverage"]["verdict"] == "partial"
    finally:
        _out, err = _stop(proc)
    assert server.totals() == [7000]
    assert "netmon (preload): rawsend: connects seen, bytes not: raw syscalls" in err


def test_a_library_that_cannot_be_made_loadable_is_said(sudo, server, public_runtime):
    env, _user, shared = sudo
    # The runtime directory (where the copy would go) on a noexec mount.
    mount = public_runtime.parent / "noexec"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "noexec,mode=755", "tmpfs", str(mount)], check=True
    )
    try:
        runtime = mount / "run"
        env["AEGIS_MCP_RUNTIME_DIR"] = str(runtime)
        client = shared / "client.py"
        client.write_text(CLIENT)
        argv = [sys.executable, str(client), str(server.port)]
        proc = start_aegis(["run", "--netmon=preload", "--no-watchdog", "--", *argv], env)
        try:
            sock = runner_socket(runtime)
            status = call(sock, "netmon_status")
            info = call(sock, "server_status")
            assert server.answered.wait(30)
        finally:
            _out, err = _stop(proc)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    assert server.totals() == [5000]  # the agent ran, unwatched
    why = "cannot load the hooks library"
    assert why in err and "noexec" in err and "preload monitoring is off" in err
    # Not "preload, zero traffic": off, and why.
    assert status["enabled"] is False and status["mode"] == "off"
    assert why in status["message"] and "bytes_sent" not in status
    assert info["netmon"]["mode"] == "off" and why in info["netmon"]["reason"]
    assert info["runner"]["hooks_library"] is None


def test_a_log_the_user_cannot_reach_refuses_the_run(sudo, tmp_path):
    env, _user, shared = sudo
    # A library they can read, and a runtime directory inside root's private tmp tree.
    readable = shared / "libaegis_hooks.so"
    shutil.copyfile(env["AEGIS_HOOKS_LIB"], readable)
    readable.chmod(0o755)
    env["AEGIS_HOOKS_LIB"] = str(readable)
    env["AEGIS_MCP_RUNTIME_DIR"] = str(tmp_path / "private" / "run")
    proc = start_aegis(["run", "--netmon=preload", "--no-watchdog", "--", "true"], env)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "cannot write the netmon log" in err and "Permission denied" in err


# ---- the checks themselves, with the user's credentials --------------------------------------


def test_as_user_asks_the_kernel_with_the_users_credentials(sudo, hooks_in_roots_home):
    _env, user, shared = sudo
    mine = shared / "theirs"
    mine.write_text("x")
    mine.chmod(0o600)
    os.chown(mine, user.uid, user.gid)

    def who() -> tuple[int, int]:
        return (os.getuid(), os.geteuid())

    groups = os.getgroups()
    with pytest.raises(PermissionError):
        as_user(user, lambda: open(hooks_in_roots_home, "rb").close())
    assert as_user(user, lambda: mine.read_text()) == "x"
    # Only the filesystem ids change, in that thread only: ours are untouched.
    assert as_user(user, who) == (0, 0)
    assert os.getgroups() == groups
    assert hooks_in_roots_home.read_bytes()[:4] == b"\x7fELF"
    root_only = shared / "root-only"
    root_only.write_text("r")
    root_only.chmod(0o600)
    with pytest.raises(PermissionError):
        as_user(user, root_only.read_text)
    assert root_only.read_text() == "r"


def test_hooks_for_user_copies_what_they_cannot_load(sudo, hooks_in_roots_home, public_runtime):
    _env, user, shared = sudo
    original = read_info(hooks_in_roots_home)
    assert original is not None
    public_runtime.mkdir(mode=0o755, exist_ok=True)
    copy_to = public_runtime / "hooks-1.so"
    copied = hooks_for_user(original, user, copy_to)
    assert copied.path == copy_to and copied.git == original.git
    assert copied.features == original.features and "first-bytes" in copied.features
    # Readable by the user as they are: nothing copied.
    readable = shared / "lib.so"
    shutil.copyfile(hooks_in_roots_home, readable)
    readable.chmod(0o755)
    assert hooks_for_user(read_info(readable), user, shared / "unused.so").path == readable
    assert not (shared / "unused.so").exists()
    # A destination they cannot reach: refused, with both reasons, and nothing left.
    hidden = Path(hooks_in_roots_home).parent / "copy.so"
    with pytest.raises(HooksUnusable, match=r"cannot load .*Permission denied.*nor a copy"):
        hooks_for_user(original, user, hidden)
    assert not hidden.exists()


def test_doctor_says_the_sudo_user_cannot_load_the_library(sudo, hooks_in_roots_home):
    env, user, _shared = sudo
    result = subprocess.run(
        [*AEGIS, "doctor"], env=env, capture_output=True, text=True, timeout=120
    )
    line = next(line for line in result.stdout.splitlines() if "hooks library" in line)
    assert str(hooks_in_roots_home) in line
    assert f"{user.name} cannot load it (Permission denied): each run uses a copy" in line
