"""The BPF programs compiled once per kernel and source, and loaded without BCC (issue 14)."""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import time
from pathlib import Path

import pytest

from aegis_mcp.netmon.ebpf import ebpf_available, objects, programs
from aegis_mcp.netmon.ebpf.loader import LoadedObject, LoadError, decode_type
from aegis_mcp.netmon.ebpf.monitor import EbpfMonitor
from aegis_mcp.netmon.stats import NetmonStats
from aegis_mcp.processes import close_detached

OK, REASON = ebpf_available()
needs_ebpf = pytest.mark.skipif(not OK, reason=f"eBPF monitoring unavailable: {REASON}")
TIERS = ("cgroup",)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AEGIS_MCP_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / objects.CACHE


@needs_ebpf
def test_compiled_once_then_loaded_from_the_cache(cache: Path) -> None:
    first, cached = objects.obtain(TIERS)
    assert not cached
    (stored,) = cache.iterdir()
    assert stored.stat().st_mode & 0o777 == 0o600
    second, cached = objects.obtain(TIERS)
    assert cached and second == first
    # What the cache gives loads and runs: a monitor from it sees a connect.
    monitor = EbpfMonitor(os.getpid(), "objects-test", NetmonStats(), tiers=TIERS)
    try:
        assert monitor.from_cache
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        pid = os.fork()
        if pid == 0:  # in the monitored cgroup, connect once
            try:
                monitor.confine[0]()
                socket.create_connection(("127.0.0.1", port)).close()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        listener.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            events = monitor.fresh_stats().recent(100)
            if any(e.get("event") == "connect" and e.get("remote_port") == port for e in events):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the cached programs saw no connect")
    finally:
        assert monitor.close()


@needs_ebpf
def test_a_changed_program_or_kernel_is_compiled_anew(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects.obtain(TIERS)
    key = objects.object_key(TIERS)
    # A program changed: another key, and the stored object is not taken for it.
    sources = tmp_path / "bpf"
    shutil.copytree(programs.bpf_dir(), sources)
    connect = sources / "connect.c"
    connect.write_text(connect.read_text() + "\n/* changed */\n")
    monkeypatch.setenv("AEGIS_BPF_DIR", str(sources))
    changed = objects.object_key(TIERS)
    assert changed != key and objects.load_cached(cache, changed) is None
    _, cached = objects.obtain(TIERS)
    assert not cached and len(list(cache.iterdir())) == 2
    monkeypatch.delenv("AEGIS_BPF_DIR")
    # Another kernel build (same release): another key too.
    real = os.uname()
    other = os.uname_result((*real[:3], real.version + " rebuilt", real.machine))
    monkeypatch.setattr(os, "uname", lambda: other)
    assert objects.object_key(TIERS) != key
    assert objects.load_cached(cache, objects.object_key(TIERS)) is None


@needs_ebpf
def test_an_unsafe_or_damaged_cache_file_is_not_loaded(cache: Path) -> None:
    objects.obtain(TIERS)
    key = objects.object_key(TIERS)
    path = cache / objects.file_name(key)
    path.chmod(0o660)  # others could have changed the bytecode root loads
    assert objects.load_cached(cache, key) is None
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    assert objects.load_cached(cache, key) is None
    os.chown(path, 0, 0)
    data = json.loads(path.read_text())
    name = next(iter(data["programs"]))
    data["programs"][name]["relocations"].append([0, 999])  # a map that does not exist
    path.write_text(json.dumps(data))
    assert objects.load_cached(cache, key) is None
    data["key"] = "another kernel"
    path.write_text(json.dumps(data))
    assert objects.load_cached(cache, key) is None


@needs_ebpf
def test_a_relocation_that_is_no_map_load_is_refused(cache: Path) -> None:
    compiled, _ = objects.obtain(TIERS)
    program = compiled.programs["aegis_connect4"]
    index, map_index = program.relocations[0]
    broken = objects.Program(program.insns, ((index + 1, map_index),))
    loaded = LoadedObject(
        objects.CompiledObject(compiled.key, compiled.maps, {"aegis_connect4": broken})
    )
    try:
        with pytest.raises(LoadError, match="not a map load"):
            loaded.program_fd("aegis_connect4", "CGROUP_SOCK_ADDR", "CGROUP_INET4_CONNECT")
    finally:
        loaded.close()


def test_bcc_type_descriptions_decode_to_the_c_layout() -> None:
    desc = [
        "flow_key",
        [
            ["cookie", "unsigned long long"],
            ["raddr", "unsigned char", [16]],
            ["rport", "unsigned short"],
            ["family", "unsigned short"],
            ["pad", "unsigned int"],
        ],
        "struct",
    ]
    key = decode_type(desc)
    assert key.__name__ == "flow_key"
    assert [f[0] for f in key._fields_] == ["cookie", "raddr", "rport", "family", "pad"]
    assert key.__dict__["raddr"].offset == 8 and key.__dict__["rport"].offset == 24
    import ctypes

    assert ctypes.sizeof(key) == 32
    assert decode_type("unsigned long long") is ctypes.c_ulonglong


def test_close_detached_releases_in_a_child_that_holds_nothing_else() -> None:
    """The caller's copies close at once; the child keeps none of the caller's other
    descriptors open (a pipe the caller closes reads EOF), and releases its own."""
    given_r, given_w = os.pipe()
    other_r, other_w = os.pipe()
    close_detached([given_w])
    with pytest.raises(OSError):
        os.fstat(given_w)  # the caller's copy is gone
    os.close(other_w)
    for reader in (other_r, given_r):
        ready, _, _ = select.select([reader], [], [], 10)
        assert ready and os.read(reader, 1) == b""  # EOF: no process holds a writer
        os.close(reader)
