"""hooks/libaegis_hooks.so, the LD_PRELOAD library: the .mcp.json overlay, netmon events, the
embedded version string and the Makefile contract.

The library is built from a copy of hooks/ in a temporary directory, so that running the tests
never re-stamps the repository's own build (whose version `aegis-mcp --version` compares). Every
network test talks only to servers this file starts on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import serve_connections

REPO = Path(__file__).resolve().parent.parent
HOOKS_SRC = REPO / "hooks"
LIB_NAME = "libaegis_hooks.so"

STAMP = {
    "VERSION": "9.8.7",
    "BUILD_TIME": "2026-11-24 02:00:00 UTC",
    "GIT_HASH": "t3st123",
}
INFO = (
    "AEGIS_HOOKS_INFO version=9.8.7;built=2026-11-24 02:00:00 UTC;git=t3st123;features=first-bytes"
)

EXPORTED = {
    # version
    "aegis_hooks_version",
    "aegis_hooks_build_time",
    "aegis_hooks_git_hash",
    # overlay
    "open",
    "open64",
    "openat",
    "openat64",
    "__open_2",
    "__open64_2",
    "__openat_2",
    "__openat64_2",
    "fopen",
    "fopen64",
    # overlay target: the one file exists for readers
    "access",
    "faccessat",
    # netmon
    "connect",
    "accept",
    "accept4",
    "socket",
    "socketpair",
    "pipe",
    "pipe2",
    "dup",
    "dup2",
    "dup3",
    "close",
    "close_range",
    "closefrom",
    "fclose",
    "send",
    "sendto",
    "sendmsg",
    "sendmmsg",
    "sendfile",
    "sendfile64",
    "write",
    "writev",
    "recv",
    "__recv_chk",
    "recvfrom",
    "__recvfrom_chk",
    "recvmsg",
    "recvmmsg",
    "read",
    "__read_chk",
    "readv",
    "getaddrinfo",
}

COMM = Path(sys.executable).name[:15]
TIMEOUT = 60


# ---- building ------------------------------------------------------------------------------------


def _copy_sources(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in HOOKS_SRC.iterdir():
        if f.is_file() and (f.suffix in {".c", ".h"} or f.name == "Makefile"):
            shutil.copy2(f, dest / f.name)


def _make(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["make", "-C", str(directory), "--no-print-directory", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"make failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _info_strings(lib: Path) -> list[bytes]:
    return re.findall(rb"AEGIS_HOOKS_INFO [^\x00]*\x00", lib.read_bytes())


@pytest.fixture(scope="session")
def cc() -> str:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None or shutil.which("make") is None:
        pytest.skip("needs make and a C compiler (gcc) to build the hooks library")
    return compiler


@pytest.fixture(scope="session")
def hooks_lib(tmp_path_factory: pytest.TempPathFactory, cc: str) -> Path:
    src = tmp_path_factory.mktemp("hooks-build")
    _copy_sources(src)
    _make(src, *(f"{k}={v}" for k, v in STAMP.items()), "CFLAGS_OPT=-O2")
    lib = src / LIB_NAME
    assert lib.is_file()
    return lib


def compile_c(cc: str, tmp_path: Path, name: str, source: str, *flags: str) -> Path:
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    exe = tmp_path / name
    proc = subprocess.run(
        [cc, "-Wall", "-Werror", *flags, "-o", str(exe), str(src)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return exe


# ---- running -------------------------------------------------------------------------------------


def clean_env(lib: Path | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ without AEGIS_* and LD_PRELOAD, then lib preloaded (unless None) and extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_") and k != "LD_PRELOAD"}
    if lib is not None:
        env["LD_PRELOAD"] = str(lib)
    env.update(extra or {})
    return env


def run(
    lib: Path | None,
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs cmd with the library preloaded (unless lib is None) and a clean AEGIS_* environment."""
    proc = subprocess.run(
        cmd,
        env=clean_env(lib, env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    assert "ld.so" not in proc.stderr, proc.stderr
    return proc


def py(
    lib: Path | None,
    code: str,
    *args: object,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs Python code (python -c) with args, as run() does."""
    return run(lib, [sys.executable, "-c", code, *map(str, args)], env=env, cwd=cwd)


REQUIRED = {"ts", "pid", "comm", "source", "event", "bytes"}
PEER = {"fd", "family", "remote_addr", "remote_port"}


def read_events(log: Path) -> list[dict]:
    """Every line of the log, each checked to be one whole JSON object with the common fields."""
    if not log.exists():
        return []
    events = []
    for line in log.read_text().splitlines():
        ev = json.loads(line)
        assert isinstance(ev, dict)
        assert ev.keys() >= REQUIRED, ev
        assert ev["source"] == "preload"
        assert isinstance(ev["ts"], float) and abs(ev["ts"] - time.time()) < 3600
        if ev["event"] != "dns" or ev.get("kind") != "getaddrinfo":
            assert ev.keys() >= PEER, ev
            assert ev["family"] in {"inet", "inet6"}
        events.append(ev)
    return events


def total(events: list[dict], event: str, **match: object) -> int:
    return sum(
        e["bytes"]
        for e in events
        if e["event"] == event and all(e.get(k) == v for k, v in match.items())
    )


# ---- a local server ------------------------------------------------------------------------------


def recv_exactly(conn: socket.socket, n: int) -> int:
    got = 0
    while got < n:
        data = conn.recv(min(65536, n - got))
        if not data:
            break
        got += len(data)
    return got


def recv_to_eof(conn: socket.socket) -> int:
    got = 0
    while data := conn.recv(65536):
        got += len(data)
    return got


@contextlib.contextmanager
def tcp_server(handler: Callable[[socket.socket], None]) -> Iterator[int]:
    """A server on 127.0.0.1 (port 0) running handler(conn) per connection; yields the port."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            handler(conn)

    serve_connections(srv, serve)
    try:
        yield srv.getsockname()[1]
    finally:
        with contextlib.suppress(OSError):
            srv.shutdown(socket.SHUT_RDWR)
        srv.close()


def exchange(n_in: int, n_out: int) -> Callable[[socket.socket], None]:
    """Reads exactly n_in bytes, then answers n_out bytes and closes."""

    def handler(conn: socket.socket) -> None:
        recv_exactly(conn, n_in)
        conn.sendall(b"r" * n_out)

    return handler


CLIENT = r"""
import os, socket, sys
port, n_out, n_in = map(int, sys.argv[1:4])
s = socket.create_connection(("127.0.0.1", port))
for at in range(0, n_out, 65536):
    s.sendall(b"q" * min(65536, n_out - at))
got = 0
while got < n_in:
    data = s.recv(65536)
    if not data:
        break
    got += len(data)
s.close()
print(os.getpid(), got)
"""


# ---- (e) version string and exports --------------------------------------------------------------


def test_info_string_present_once_with_make_values(hooks_lib: Path) -> None:
    assert _info_strings(hooks_lib) == [INFO.encode() + b"\x00"]
    assert hooks_lib.read_bytes().count(b"AEGIS_HOOKS_INFO") == 1


def test_version_functions_return_make_values(hooks_lib: Path) -> None:
    code = (
        "import ctypes, sys\n"
        "lib = ctypes.CDLL(sys.argv[1])\n"
        "for name in ('aegis_hooks_version', 'aegis_hooks_build_time', 'aegis_hooks_git_hash'):\n"
        "    f = getattr(lib, name)\n"
        "    f.restype = ctypes.c_char_p\n"
        "    print(f().decode())\n"
        "print(hasattr(lib, 'aegis_resolve'), hasattr(lib, 'aegis_ready'))\n"
    )
    out = py(None, code, hooks_lib).stdout.splitlines()
    assert out == [STAMP["VERSION"], STAMP["BUILD_TIME"], STAMP["GIT_HASH"], "False False"]


def test_only_hooks_and_version_functions_are_exported(hooks_lib: Path) -> None:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    out = subprocess.run(
        [nm, "-D", "--defined-only", str(hooks_lib)],
        capture_output=True,
        text=True,
        check=True,
        timeout=TIMEOUT,
    ).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert names == EXPORTED


def test_makefile_defaults_and_rebuild_on_stamp_change(tmp_path: Path, cc: str) -> None:
    src = tmp_path / "hooks"
    _copy_sources(src)
    lib = src / LIB_NAME
    _make(src)
    assert _info_strings(lib) == [
        b"AEGIS_HOOKS_INFO version=0.0.0;built=unknown;git=unknown;features=first-bytes\x00"
    ]
    assert "Nothing to be done" in _make(src).stdout
    _make(src, "VERSION=1.2.3", "BUILD_TIME=2026-11-24 03:04:05 UTC", "GIT_HASH=feedbee")
    assert _info_strings(lib) == [
        b"AEGIS_HOOKS_INFO version=1.2.3;built=2026-11-24 03:04:05 UTC;git=feedbee"
        b";features=first-bytes\x00"
    ]
    _make(src, "VERSION=1.2.3", "BUILD_TIME=2026-11-24 03:04:05 UTC", "GIT_HASH=cafe000")
    assert b"git=cafe000" in _info_strings(lib)[0]
    _make(src, "clean")
    assert not lib.exists()
    assert not (src / "build").exists()


# ---- (a) the .mcp.json overlay -------------------------------------------------------------------

REAL = '{"mcpServers": {"real": {}}}\n'
OTHER = '{"mcpServers": {"other": {}}}\n'
OVERLAY = '{"mcpServers": {"aegis-mcp": {"command": "aegis-mcp"}}}\n'

READER = r"""
import ctypes, json, os
out = {}
out["open"] = open(".mcp.json").read()
out["open_abs"] = open(os.path.abspath(".mcp.json")).read()
fd = os.open(".mcp.json", os.O_RDONLY | os.O_CLOEXEC)
out["os_open"] = os.read(fd, 65536).decode()
os.close(fd)
dirfd = os.open(".", os.O_RDONLY)
fd = os.open(".mcp.json", os.O_RDONLY, dir_fd=dirfd)
out["openat"] = os.read(fd, 65536).decode()
os.close(fd)
os.close(dirfd)
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.fread.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
fp = libc.fopen(b".mcp.json", b"r")
buf = ctypes.create_string_buffer(65536)
n = libc.fread(buf, 1, 65536, fp)
libc.fclose(fp)
out["fopen"] = buf.raw[:n].decode()
out["x.mcp.json"] = open("x.mcp.json").read()
out["sub/.mcp.json"] = open("sub/.mcp.json").read()
out[".mcp.json.bak"] = open(".mcp.json.bak").read()
out["r+"] = open(".mcp.json", "r+").read()
print(json.dumps(out))
"""


def on_disk(path: Path) -> str:
    """What the file really holds. Opened read-write, which the overlay never redirects: the
    tests stay right when they themselves run under aegis-mcp with the overlay on."""
    fd = os.open(path, os.O_RDWR)
    try:
        return os.read(fd, 1 << 20).decode()
    finally:
        os.close(fd)


def project_files(work: Path) -> dict[Path, str]:
    return {p: on_disk(p) for p in work.rglob("*") if p.is_file()}


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    work = tmp_path / "project"
    (work / "sub").mkdir(parents=True)
    (work / ".mcp.json").write_text(REAL)
    (work / "sub" / ".mcp.json").write_text(REAL)
    (work / "x.mcp.json").write_text(OTHER)
    (work / ".mcp.json.bak").write_text(OTHER)
    overlay = tmp_path / "runtime" / "overlay.json"
    overlay.parent.mkdir()
    overlay.write_text(OVERLAY)
    return work, overlay


def test_overlay_redirects_reads_of_mcp_json(hooks_lib: Path, project: tuple[Path, Path]) -> None:
    work, overlay = project
    before = project_files(work)
    out = json.loads(
        py(hooks_lib, READER, cwd=work, env={"AEGIS_MCP_OVERLAY": str(overlay)}).stdout
    )
    for how in ("open", "open_abs", "os_open", "openat", "fopen", "sub/.mcp.json"):
        assert out[how] == OVERLAY, how
    # not the exact basename: not redirected
    assert out["x.mcp.json"] == OTHER
    assert out[".mcp.json.bak"] == OTHER
    # opened for writing (r+): the real file
    assert out["r+"] == REAL
    # nothing on disk changed
    assert project_files(work) == before
    assert overlay.read_text() == OVERLAY


def test_overlay_leaves_writes_to_the_real_file(
    hooks_lib: Path, project: tuple[Path, Path]
) -> None:
    work, overlay = project
    code = (
        "import os\n"
        "with open('.mcp.json', 'a') as f: f.write('appended\\n')\n"
        "fd = os.open('sub/.mcp.json', os.O_WRONLY | os.O_TRUNC)\n"
        "os.write(fd, b'{}\\n')\n"
        "os.close(fd)\n"
        "fd = os.open('new/.mcp.json', os.O_RDONLY | os.O_CREAT, 0o600)\n"
        "print(len(os.read(fd, 100)))\n"
    )
    (work / "new").mkdir()
    out = py(hooks_lib, code, cwd=work, env={"AEGIS_MCP_OVERLAY": str(overlay)}).stdout
    assert on_disk(work / ".mcp.json") == REAL + "appended\n"
    assert on_disk(work / "sub" / ".mcp.json") == "{}\n"
    # O_CREAT is a write: the real (new, empty) file was created and read
    assert out.strip() == "0"
    assert (work / "new" / ".mcp.json").exists()
    assert overlay.read_text() == OVERLAY


def test_overlay_target_redirects_that_one_file_and_its_access(
    hooks_lib: Path, project: tuple[Path, Path], tmp_path: Path
) -> None:
    work, overlay = project
    target = tmp_path / "home" / ".gemini" / "settings.json"
    code = (
        "import json, os\n"
        f"t = {str(target)!r}\n"
        "print(json.dumps({'exists': os.path.exists(t), 'access': os.access(t, os.R_OK),\n"
        "  'writable': os.access(t, os.W_OK), 'read': open(t).read(),\n"
        "  'mcp': open('.mcp.json').read()}))\n"
    )
    env = {"AEGIS_MCP_OVERLAY": str(overlay), "AEGIS_MCP_OVERLAY_TARGET": str(target)}
    out = json.loads(py(hooks_lib, code, cwd=work, env=env).stdout)
    # access() says the missing target is there to read (node's existsSync asks it);
    # stat() is not hooked (os.path.exists uses it), writing is not offered.
    assert out == {"exists": False, "access": True, "writable": False, "read": OVERLAY, "mcp": REAL}
    assert not target.exists()
    # A relative target is ignored: the .mcp.json rule applies as without one.
    env["AEGIS_MCP_OVERLAY_TARGET"] = "settings.json"
    out = py(hooks_lib, "print(open('.mcp.json').read(), end='')", cwd=work, env=env).stdout
    assert out == OVERLAY


def test_overlay_missing_falls_back_to_the_real_file(
    hooks_lib: Path, project: tuple[Path, Path], tmp_path: Path
) -> None:
    work, _ = project
    env = {"AEGIS_MCP_OVERLAY": str(tmp_path / "no-such-overlay.json")}
    out = py(hooks_lib, "print(open('.mcp.json').read(), end='')", cwd=work, env=env).stdout
    assert out == REAL


C_READER = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void show(const char *how, int fd) {
    char buf[4096];
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    printf("%s=%s", how, buf);
    if (fd >= 0) close(fd);
}

int main(void) {
    volatile int flags = O_RDONLY; /* not a constant: fortify calls __open_2 */
    show("open", open(".mcp.json", flags));
    show("openat", openat(AT_FDCWD, ".mcp.json", flags));
    show("open64", open64(".mcp.json", O_RDONLY));
    show("openat64", openat64(AT_FDCWD, ".mcp.json", O_RDONLY));
    FILE *f = fopen(".mcp.json", "re");
    char buf[4096] = {0};
    if (f) { fread(buf, 1, sizeof buf - 1, f); fclose(f); }
    printf("fopen=%s", buf);
    memset(buf, 0, sizeof buf);
    f = fopen64(".mcp.json", "r");
    if (f) { fread(buf, 1, sizeof buf - 1, f); fclose(f); }
    printf("fopen64=%s", buf);
    return 0;
}
"""


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(["-O0"], id="plain"),
        pytest.param(["-O2", "-D_FORTIFY_SOURCE=2"], id="fortify"),
        pytest.param(["-O2", "-D_FORTIFY_SOURCE=2", "-D_FILE_OFFSET_BITS=64"], id="fortify-lfs"),
    ],
)
def test_overlay_every_libc_entry_point(
    hooks_lib: Path, project: tuple[Path, Path], tmp_path: Path, cc: str, flags: list[str]
) -> None:
    work, overlay = project
    exe = compile_c(cc, tmp_path, "reader", C_READER, "-Wno-unused-result", *flags)
    out = run(hooks_lib, [str(exe)], cwd=work, env={"AEGIS_MCP_OVERLAY": str(overlay)}).stdout
    got = dict(line.split("=", 1) for line in out.splitlines())
    assert set(got) == {"open", "openat", "open64", "openat64", "fopen", "fopen64"}
    for how, text in got.items():
        assert text + "\n" == OVERLAY, how
    assert on_disk(work / ".mcp.json") == REAL


# ---- (b) netmon: connect, send, recv -------------------------------------------------------------


def test_netmon_counts_exact_bytes(hooks_lib: Path, tmp_path: Path) -> None:
    log = tmp_path / "netmon.jsonl"
    n_out, n_in = 3 * 1024 * 1024 + 123, 45_678
    with tcp_server(exchange(n_out, n_in)) as port:
        out = py(hooks_lib, CLIENT, port, n_out, n_in, env={"AEGIS_NETMON_LOG": str(log)})
    pid, got = map(int, out.stdout.split())
    assert got == n_in
    events = [e for e in read_events(log) if e["pid"] == pid]
    connects = [e for e in events if e["event"] == "connect"]
    assert len(connects) == 1
    c = connects[0]
    assert c["remote_port"] == port
    assert c["remote_addr"] == "127.0.0.1"
    assert c["family"] == "inet"
    assert c["proto"] == "tcp"
    assert c["result"] == 0
    assert c["comm"] == COMM
    assert isinstance(c["local_port"], int) and c["local_port"] > 0
    fd = c["fd"]
    assert total(events, "send", fd=fd, remote_port=port) == n_out
    assert total(events, "recv", fd=fd, remote_port=port) == n_in
    # 3 MiB in 64 KiB calls: the first call's bytes at once, then a line each time
    # 1 MiB gathered, each line a delta
    sends = [e for e in events if e["event"] == "send"]
    assert 3 <= len(sends) <= 6
    reasons = [e["reason"] for e in sends]
    assert reasons[0] == "first" and reasons.count("first") == 1
    assert reasons.count("threshold") >= 2
    recvs = [e for e in events if e["event"] == "recv"]
    assert recvs[0]["reason"] == "first"
    closes = [e for e in events if e["event"] == "close"]
    assert len(closes) == 1
    assert closes[0]["bytes_sent"] == n_out
    assert closes[0]["bytes_recv"] == n_in
    assert closes[0]["bytes"] == 0
    # the sum of "bytes" over everything the process logged is its traffic
    assert sum(e["bytes"] for e in events) == n_out + n_in
    # the line order is the order of events
    order = [e["event"] for e in events]
    assert order.index("connect") < order.index("close")


def test_netmon_aggregates_instead_of_one_line_per_call(hooks_lib: Path, tmp_path: Path) -> None:
    log = tmp_path / "netmon.jsonl"
    code = (
        "import socket, sys\n"
        "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
        "for _ in range(2000):\n"
        "    s.send(b'0123456789')\n"
        "s.sendall(b'.')\n"
        "print(len(s.recv(100)))\n"
        "s.close()\n"
    )
    with tcp_server(exchange(20_001, 7)) as port:
        assert py(hooks_lib, code, port, env={"AEGIS_NETMON_LOG": str(log)}).stdout.strip() == "7"
    events = read_events(log)
    sends = [e for e in events if e["event"] == "send"]
    assert sum(e["bytes"] for e in sends) == 20_001
    # 2001 send() calls: a handful of lines at most (close, maybe one interval sweep)
    assert 1 <= len(sends) <= 3
    assert total(events, "recv") == 7


def test_netmon_reports_long_lived_connection_while_open(hooks_lib: Path, tmp_path: Path) -> None:
    log = tmp_path / "netmon.jsonl"
    code = (
        "import socket, sys, time\n"
        "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
        "s.sendall(b'a' * 100)\n"
        "time.sleep(1.5)\n"
        "s.sendall(b'b')\n"
        "print('sent', flush=True)\n"
        "sys.stdin.readline()\n"
        "s.close()\n"
    )
    env = clean_env(hooks_lib, {"AEGIS_NETMON_LOG": str(log)})
    with tcp_server(recv_to_eof) as port:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(port)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stdout.readline().strip() == "sent"
            # still connected: the once-a-second sweep has already written the bytes
            live = read_events(log)
            assert total(live, "send", remote_port=port) == 101
            assert any(e.get("reason") == "interval" for e in live if e["event"] == "send")
            assert not any(e["event"] == "close" for e in live)
            proc.stdin.write("\n")
            proc.stdin.flush()
            assert proc.wait(TIMEOUT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    events = read_events(log)
    # nothing counted twice
    assert total(events, "send", remote_port=port) == 101
    assert [e["bytes_sent"] for e in events if e["event"] == "close"] == [101]


def test_netmon_flushes_open_connections_at_exit(hooks_lib: Path, tmp_path: Path) -> None:
    log = tmp_path / "netmon.jsonl"
    # detach(): Python forgets the fd without closing it; the kernel closes it at exit
    code = (
        "import socket, sys\n"
        "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
        "s.sendall(b'x' * 5000)\n"
        "s.detach()\n"
    )
    with tcp_server(recv_to_eof) as port:
        py(hooks_lib, code, port, env={"AEGIS_NETMON_LOG": str(log)})
    events = read_events(log)
    assert total(events, "send", remote_port=port) == 5000
    closes = [e for e in events if e["event"] == "close"]
    assert len(closes) == 1 and closes[0]["reason"] == "exit"


def test_netmon_fork_child_does_not_repeat_parent_counts(hooks_lib: Path, tmp_path: Path) -> None:
    log = tmp_path / "netmon.jsonl"
    code = (
        "import os, socket, subprocess, sys\n"
        "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
        "s.sendall(b'x' * 1000)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    sys.exit(0)\n"  # a normal exit: the child's destructor runs
        "os.waitpid(pid, 0)\n"
        "subprocess.run(['true'], close_fds=True, check=True)\n"  # vfork + close_range child
        "s.sendall(b'y' * 234)\n"
        "s.close()\n"
        "print(os.getpid())\n"
    )
    with tcp_server(recv_to_eof) as port:
        pid = int(py(hooks_lib, code, port, env={"AEGIS_NETMON_LOG": str(log)}).stdout)
    events = read_events(log)
    assert {e["pid"] for e in events} == {pid}
    assert total(events, "send", remote_port=port) == 1234
    assert len([e for e in events if e["event"] == "close"]) == 1


def test_netmon_connect_failure_keeps_errno(hooks_lib: Path, tmp_path: Path) -> None:
    log = tmp_path / "netmon.jsonl"
    probe = socket.create_server(("127.0.0.1", 0))
    closed_port = probe.getsockname()[1]
    probe.close()
    code = (
        "import errno, socket, sys\n"
        "port = int(sys.argv[1])\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', port))\n"
        "except ConnectionRefusedError as e:\n"
        "    print(errno.errorcode[e.errno])\n"
        "s = socket.socket()\n"
        "s.setblocking(False)\n"
        "print(errno.errorcode.get(s.connect_ex(('127.0.0.1', int(sys.argv[2]))), 'OK'))\n"
        "s.close()\n"
    )
    with tcp_server(recv_to_eof) as port:
        out = py(hooks_lib, code, closed_port, port, env={"AEGIS_NETMON_LOG": str(log)}).stdout
    assert out.split() == ["ECONNREFUSED", "EINPROGRESS"]
    connects = {e["remote_port"]: e for e in read_events(log) if e["event"] == "connect"}
    assert connects[closed_port]["result"] == "ECONNREFUSED"
    assert connects[closed_port]["errno"] == 111
    assert connects[port]["result"] == 0
    assert connects[port]["in_progress"] is True


def test_netmon_many_processes_and_threads(hooks_lib: Path, tmp_path: Path) -> None:
    log = tmp_path / "netmon.jsonl"
    code = (
        "import os, socket, sys, threading\n"
        "port = int(sys.argv[1])\n"
        "def work(k):\n"
        "    for i in range(10):\n"
        "        n = 1000 * k + i\n"
        "        s = socket.create_connection(('127.0.0.1', port))\n"
        "        s.sendall(b'z' * n)\n"
        "        s.shutdown(socket.SHUT_WR)\n"
        "        while s.recv(65536):\n"
        "            pass\n"
        "        s.close()\n"
        "ts = [threading.Thread(target=work, args=(k,)) for k in range(1, 5)]\n"
        "[t.start() for t in ts]\n"
        "[t.join() for t in ts]\n"
        "print(os.getpid())\n"
    )

    def double(conn: socket.socket) -> None:
        conn.sendall(b"d" * (2 * recv_to_eof(conn)))

    expected = sum(1000 * k + i for k in range(1, 5) for i in range(10))
    env = clean_env(hooks_lib, {"AEGIS_NETMON_LOG": str(log)})
    with tcp_server(double) as port:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(port)], env=env, stdout=subprocess.PIPE, text=True
            )
            for _ in range(4)
        ]
        pids = []
        for p in procs:
            out, _ = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0
            pids.append(int(out))
    events = read_events(log)  # every line whole JSON: no interleaving
    for pid in pids:
        mine = [e for e in events if e["pid"] == pid]
        assert len([e for e in mine if e["event"] == "connect"]) == 40
        assert len([e for e in mine if e["event"] == "close"]) == 40
        assert total(mine, "send") == expected
        assert total(mine, "recv") == 2 * expected


def test_netmon_getaddrinfo_names_the_peer(hooks_lib: Path, tmp_path: Path) -> None:
    log = tmp_path / "netmon.jsonl"
    code = (
        "import socket, sys\n"
        "infos = socket.getaddrinfo('localhost', int(sys.argv[1]), socket.AF_INET,"
        " socket.SOCK_STREAM)\n"
        "s = socket.socket()\n"
        "s.connect(infos[0][4])\n"
        "s.sendall(b'hi')\n"
        "s.close()\n"
    )
    with tcp_server(recv_to_eof) as port:
        py(hooks_lib, code, port, env={"AEGIS_NETMON_LOG": str(log)})
    events = read_events(log)
    dns = [e for e in events if e["event"] == "dns"]
    assert len(dns) == 1
    assert dns[0]["kind"] == "getaddrinfo"
    assert dns[0]["host"] == "localhost"
    assert dns[0]["result"] == 0
    assert "127.0.0.1" in dns[0]["answers"]
    connect = next(e for e in events if e["event"] == "connect")
    assert connect["host"] == "localhost"
    assert total(events, "send") == 2


DNS_CLIENT = r"""
import socket, struct, sys

def query(name, qtype):
    header = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return header + qname + struct.pack(">HH", qtype, 1)

c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.sendto(query("api.example.test", 1), ("127.0.0.1", 53))
print(len(c.recvfrom(512)[0]))
c.close()
"""


def test_netmon_dns_query_and_answer_on_port_53(hooks_lib: Path, tmp_path: Path) -> None:
    import struct

    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        srv.bind(("127.0.0.1", 53))
    except OSError as exc:
        srv.close()
        pytest.skip(f"cannot bind 127.0.0.1:53 for a stand-in DNS server ({exc})")

    def answer() -> None:
        with contextlib.suppress(OSError):
            data, addr = srv.recvfrom(512)
            header = data[:2] + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0)
            rr = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([10, 9, 8, 7])
            srv.sendto(header + data[12:] + rr, addr)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    log = tmp_path / "netmon.jsonl"
    try:
        py(hooks_lib, DNS_CLIENT, env={"AEGIS_NETMON_LOG": str(log)})
    finally:
        srv.close()
        thread.join(5)
    dns = [e for e in read_events(log) if e["event"] == "dns"]
    assert [e["kind"] for e in dns] == ["query", "answer"]
    assert all(e["host"] == "api.example.test" and e["qtype"] == "A" for e in dns)
    assert all(e["remote_port"] == 53 and e["proto"] == "udp" for e in dns)
    assert dns[1]["answers"] == ["10.9.8.7"]
    assert dns[1]["rcode"] == 0


# ---- (c) AF_UNIX is not network ------------------------------------------------------------------


def test_netmon_ignores_unix_sockets(hooks_lib: Path, tmp_path: Path) -> None:
    log = tmp_path / "netmon.jsonl"
    code = (
        "import os, socket, sys, threading\n"
        "a, b = socket.socketpair()\n"
        "a.sendall(b'p' * 1000); b.recv(1000); a.close(); b.close()\n"
        "path = os.path.join(sys.argv[2], 'sock')\n"
        "srv = socket.socket(socket.AF_UNIX); srv.bind(path); srv.listen()\n"
        "def serve():\n"
        "    c, _ = srv.accept(); c.sendall(c.recv(100)); c.close()\n"
        "t = threading.Thread(target=serve); t.start()\n"
        "u = socket.socket(socket.AF_UNIX); u.connect(path)\n"
        "u.sendall(b'hello'); u.recv(100); u.close(); t.join(); srv.close()\n"
        "x, y = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "x.send(b'dgram'); y.recv(100); x.close(); y.close()\n"
        # then one TCP connection: proves the library was active all along
        "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
        "s.sendall(b'tcp'); s.close()\n"
    )
    with tcp_server(recv_to_eof) as port:
        py(hooks_lib, code, port, tmp_path, env={"AEGIS_NETMON_LOG": str(log)})
    events = read_events(log)
    assert {e["event"] for e in events} == {"connect", "send", "close"}
    assert all(e["remote_port"] == port and e["family"] == "inet" for e in events)
    assert total(events, "send") == 3


# ---- (d) off unless asked ------------------------------------------------------------------------

PROBE = r"""
import errno, os, socket, sys
port = int(sys.argv[1])
print(open(".mcp.json").read().strip())
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"hello")
s.shutdown(socket.SHUT_WR)
print(s.recv(100).decode())
s.close()
try:
    os.close(987)
except OSError as e:
    print(errno.errorcode[e.errno])
try:
    open("/nonexistent/.mcp.json")
except OSError as e:
    print(errno.errorcode[e.errno])
"""


def test_without_env_vars_nothing_is_written_and_nothing_changes(
    hooks_lib: Path, project: tuple[Path, Path], tmp_path: Path
) -> None:
    work, _ = project

    def echo(conn: socket.socket) -> None:
        conn.sendall(b"got %d" % recv_to_eof(conn))

    files_before = sorted(tmp_path.rglob("*"))
    with tcp_server(echo) as port:
        plain = py(None, PROBE, port, cwd=work)
        preloaded = py(hooks_lib, PROBE, port, cwd=work)
        empty = py(hooks_lib, PROBE, port, cwd=work, env={"AEGIS_NETMON_LOG": ""})
    assert plain.stdout.splitlines() == [REAL.strip(), "got 5", "EBADF", "ENOENT"]
    assert preloaded.stdout == plain.stdout
    assert preloaded.stderr == plain.stderr
    assert empty.stdout == plain.stdout
    assert sorted(tmp_path.rglob("*")) == files_before


# ---- (f) the limit: raw syscalls are not seen ----------------------------------------------------

RAW = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

int main(int argc, char **argv) {
    if (argc != 3) return 1;
    struct sockaddr_in raw = loopback(atoi(argv[1])), libc = loopback(atoi(argv[2]));
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (syscall(SYS_connect, s, (struct sockaddr *)&raw, sizeof raw) != 0) return 2;
    if (write(s, "hello", 5) != 5) return 3;
    close(s);
    int t = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(t, (struct sockaddr *)&libc, sizeof libc) != 0) return 4;
    if (write(t, "abc", 3) != 3) return 5;
    close(t);
    return 0;
}
"""


def test_raw_syscall_connect_is_not_seen(hooks_lib: Path, tmp_path: Path, cc: str) -> None:
    log = tmp_path / "netmon.jsonl"
    exe = compile_c(cc, tmp_path, "rawconnect", RAW)
    with tcp_server(recv_to_eof) as raw_port, tcp_server(recv_to_eof) as libc_port:
        run(
            hooks_lib, [str(exe), str(raw_port), str(libc_port)], env={"AEGIS_NETMON_LOG": str(log)}
        )
    events = read_events(log)
    # the libc connect() is seen, with its bytes (write() on a tracked socket counts)...
    connects = [e for e in events if e["event"] == "connect"]
    assert [e["remote_port"] for e in connects] == [libc_port]
    assert total(events, "send", remote_port=libc_port) == 3
    # ...the one made with syscall(SYS_connect) is invisible: a documented limit
    assert not any(e.get("remote_port") == raw_port for e in events)
