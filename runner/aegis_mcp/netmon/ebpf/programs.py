"""The BPF programs of each tier: which C files, which functions, where they attach.

The C lives in ``bpf/`` at the top of the repository (one file per concern).
``bpf`` beside this module is a symlink to it, which a wheel turns into a copy
(package data), so an installed package finds it too; ``AEGIS_BPF_DIR``
overrides both.
The files of the chosen tiers are compiled as one BCC module (:mod:`.objects`),
so that they share the ring buffer and the maps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TIERS = ("cgroup", "tracepoint", "kprobe")


@dataclass(frozen=True)
class CgroupProgram:
    """A program attached to the agent's cgroup directory."""

    function: str
    prog_type: str  # BPF.<name>: CGROUP_SOCK_ADDR, CGROUP_SKB, CGROUP_SOCK, SOCK_OPS
    attach_type: str  # BPFAttachType.<name>


@dataclass(frozen=True)
class Kprobe:
    """A kprobe (or kretprobe) on a kernel function."""

    event: str
    function: str
    ret: bool = False


# Headers whose inline helpers use maps: pasted first, like the programs.
HEADER_FILES = ("aegis_common.h", "policy.h")
CGROUP_FILES = ("connect.c", "sendmsg.c", "traffic.c", "tcp_bytes.c", "release.c")
TRACEPOINT_FILES = ("tcp_state.c",)
KPROBE_FILES = ("kprobes.c",)

CGROUP_PROGRAMS = (
    CgroupProgram("aegis_connect4", "CGROUP_SOCK_ADDR", "CGROUP_INET4_CONNECT"),
    CgroupProgram("aegis_connect6", "CGROUP_SOCK_ADDR", "CGROUP_INET6_CONNECT"),
    CgroupProgram("aegis_sendmsg4", "CGROUP_SOCK_ADDR", "CGROUP_UDP4_SENDMSG"),
    CgroupProgram("aegis_sendmsg6", "CGROUP_SOCK_ADDR", "CGROUP_UDP6_SENDMSG"),
    CgroupProgram("aegis_egress", "CGROUP_SKB", "CGROUP_INET_EGRESS"),
    CgroupProgram("aegis_ingress", "CGROUP_SKB", "CGROUP_INET_INGRESS"),
    CgroupProgram("aegis_release", "CGROUP_SOCK", "CGROUP_INET_SOCK_RELEASE"),
    CgroupProgram("aegis_sockops", "SOCK_OPS", "CGROUP_SOCK_OPS"),
)

TRACEPOINT = "sock:inet_sock_set_state"
TRACEPOINT_FUNCTION = "tracepoint__sock__inet_sock_set_state"
"""The function BCC makes of ``TRACEPOINT_PROBE(sock, inet_sock_set_state)``."""

KPROBES = (
    Kprobe("tcp_v4_connect", "aegis_kp_tcp_connect"),
    Kprobe("tcp_v4_connect", "aegis_kp_tcp_connect_ret", ret=True),
    Kprobe("tcp_v6_connect", "aegis_kp_tcp_connect"),
    Kprobe("tcp_v6_connect", "aegis_kp_tcp_connect_ret", ret=True),
    Kprobe("tcp_sendmsg", "aegis_kp_sendmsg"),
    Kprobe("tcp_sendmsg", "aegis_kp_sendmsg_ret", ret=True),
    Kprobe("udp_sendmsg", "aegis_kp_sendmsg"),
    Kprobe("udp_sendmsg", "aegis_kp_sendmsg_ret", ret=True),
    Kprobe("tcp_cleanup_rbuf", "aegis_kp_tcp_cleanup_rbuf"),
)


def bpf_dir() -> Path:
    """The directory of the C programs."""
    override = os.environ.get("AEGIS_BPF_DIR")
    if override:
        return Path(override)
    here = Path(__file__).resolve().parent
    # runner/aegis_mcp/netmon/ebpf/ -> the repository's bpf/, for a tree without the link
    for candidate in (here / "bpf", here.parents[3] / "bpf"):
        if (candidate / "aegis_common.h").is_file():
            return candidate
    return here / "bpf"


def files_for(tiers: tuple[str, ...] | list[str]) -> list[str]:
    """The C files of ``tiers``, in compile order (the shared headers first)."""
    files = [*HEADER_FILES, *CGROUP_FILES]
    if "tracepoint" in tiers:
        files += TRACEPOINT_FILES
    if "kprobe" in tiers:
        files += KPROBE_FILES
    return files


def source_for(tiers: tuple[str, ...] | list[str], directory: Path | None = None) -> str:
    """The text BCC compiles for ``tiers``: the files pasted one after the other.

    Pasted, not #included: BCC rewrites map calls (``events.ringbuf_reserve``)
    and generates the argument struct of a TRACEPOINT_PROBE only in its main
    file, and a ``#line`` directive would make that look like another file.
    The headers are pasted too (their helpers use maps); the ``#include`` lines
    in the files then find their include guards already defined.
    """
    directory = bpf_dir() if directory is None else directory
    parts = []
    for name in files_for(tiers):
        path = directory / name
        parts.append(f"/* ---- {name} ---- */\n{path.read_text()}")
    return "\n".join(parts)


def cflags(directory: Path | None = None) -> list[str]:
    """Compiler flags: the include path of the programs, no warnings as noise."""
    directory = bpf_dir() if directory is None else directory
    return [f"-I{directory}", "-Wno-macro-redefined", "-Wno-unused-function"]
