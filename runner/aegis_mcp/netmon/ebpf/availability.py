"""What this machine offers eBPF monitoring, and why not when it cannot work.

Every check looks at the real thing (files the kernel exposes, BCC's package)
and compiles nothing, so that the runner can decide between eBPF and preload
quickly. The tiers:

- ``cgroup``: cgroup/connect4|6, sendmsg4|6, sock_release and cgroup_skb
  programs on the agent's cgroup v2 directory. Needs root, cgroup v2, BCC and
  kernel headers (any version: the programs read UAPI contexts only).
- ``tracepoint``: sock:inet_sock_set_state on top; needs tracefs (mounted here
  when missing).
- ``kprobe``: kprobes on tcp_v4_connect & co. on top; needs a kernel with
  kprobes and headers of that very kernel (the programs read struct sock).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
from pathlib import Path

from ._bcc import INSTALL_HINT, find_bcc, import_bcc
from .cgroup import cgroup2_mount

TRACEFS_MOUNTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
KPROBE_PMU = Path("/sys/bus/event_source/devices/kprobe")
KHEADERS = Path("/sys/kernel/kheaders.tar.xz")
SETUP_HINT = "run scripts/setup_bpf.sh"


def kernel_headers_dir() -> Path:
    """The header tree BCC compiles against: ``$BCC_KERNEL_SOURCE`` (BCC's own
    override) or ``/lib/modules/$(uname -r)/build``."""
    override = os.environ.get("BCC_KERNEL_SOURCE")
    if override:
        return Path(override)
    return Path("/lib/modules") / platform.release() / "build"


def headers_release(headers: Path) -> str | None:
    """The kernel release the headers were made for (``UTS_RELEASE``), if known."""
    try:
        text = (headers / "include/generated/utsrelease.h").read_text()
    except OSError:
        return None
    match = re.search(r'UTS_RELEASE\s+"([^"]+)"', text)
    return match[1] if match else None


def headers_problem(headers: Path | None = None) -> str | None:
    """Why BCC cannot compile here for lack of headers, or None when it can."""
    headers = kernel_headers_dir() if headers is None else headers
    # A distribution's build tree holds the generated headers (the rest is in
    # the "source" tree beside it); a full source tree has both.
    if any(
        (headers / name).is_file()
        for name in ("include/generated/autoconf.h", "include/linux/kconfig.h")
    ):
        return None
    # Without a header tree BCC falls back to the kernel's own archive (CONFIG_IKHEADERS)
    # unless it was pointed somewhere explicitly.
    if KHEADERS.exists() and "BCC_KERNEL_SOURCE" not in os.environ:
        return None
    return f"kernel headers missing at {headers} ({SETUP_HINT})"


def tracefs_dir() -> Path | None:
    """A mounted tracefs (its ``events`` directory is there), or None."""
    for base in TRACEFS_MOUNTS:
        # As a user, tracefs may be there but closed (0700): not usable either.
        with contextlib.suppress(OSError):
            if (base / "events").is_dir():
                return base
    return None


def ensure_tracefs() -> Path | None:
    """Mount tracefs at /sys/kernel/tracing when it is not mounted (root only).

    Returns where tracefs is, or None when it is not there and cannot be
    mounted; the tracepoint tier is then skipped, with the reason reported.
    """
    found = tracefs_dir()
    if found is not None or os.geteuid() != 0:
        return found
    target = TRACEFS_MOUNTS[0]
    if not target.is_dir():
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 4 + [ctypes.c_void_p]
    if libc.mount(b"nodev", str(target).encode(), b"tracefs", 0, None) != 0:
        return None
    return tracefs_dir()


def kprobes_supported() -> bool:
    """Whether the kernel has kprobes (its kprobe PMU is registered)."""
    return KPROBE_PMU.exists()


def kprobe_problem(headers: Path | None = None) -> str | None:
    """Why the kprobe tier cannot be used, or None when it can."""
    if not kprobes_supported():
        return "the kernel has no kprobes (CONFIG_KPROBES off)"
    headers = kernel_headers_dir() if headers is None else headers
    made_for = headers_release(headers)
    if made_for != platform.release():
        # struct sock offsets from other headers would make the numbers wrong, not fail.
        return (
            f"kernel headers are for {made_for or 'an unknown kernel'}, not {platform.release()}: "
            "the kprobe programs read kernel structs and need the kernel's own headers"
        )
    return None


def tracepoint_problem() -> str | None:
    """Why the tracepoint tier cannot be used (tracefs missing), or None."""
    base = tracefs_dir()
    if base is None:
        return "tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)"
    if not (base / "events/sock/inet_sock_set_state").is_dir():
        return "the kernel has no sock:inet_sock_set_state tracepoint"
    return None


def bcc_version() -> str:
    """The importable BCC's version; raises BccMissing when there is none."""
    bcc = import_bcc()
    return str(getattr(bcc, "__version__", "unknown"))


def ebpf_available() -> tuple[bool, str]:
    """Whether ``--netmon=ebpf`` can work here, and a one-line reason either way.

    Checked in the order a user would fix them: system, root, cgroup v2, BCC,
    kernel headers. Compiles, loads and imports nothing (BCC is imported only to
    compile, when this kernel has no compiled programs yet).
    """
    if platform.system() != "Linux":
        return False, "eBPF monitoring needs Linux"
    if os.geteuid() != 0:
        return False, "eBPF monitoring needs root (start aegis-mcp with sudo)"
    cgroup = cgroup2_mount()
    if cgroup is None:
        return False, "no cgroup v2 hierarchy is mounted (eBPF attribution needs one)"
    version = find_bcc()
    if version is None:
        return False, INSTALL_HINT
    problem = headers_problem()
    if problem is not None:
        return False, problem
    return True, f"BCC {version}, headers at {kernel_headers_dir()}, cgroup v2 at {cgroup}"


def tier_problems() -> dict[str, str | None]:
    """Each tier and why it cannot run here (None: it can), for ``aegis-mcp doctor``.

    Changes nothing: a missing tracefs is reported even though the runner mounts it
    when eBPF monitoring is asked for.
    """
    ok, reason = ebpf_available()
    base = None if ok else reason
    tracepoint = base or tracepoint_problem()
    if tracepoint is not None and tracefs_dir() is None and base is None:
        tracepoint += "; the runner mounts it when --netmon=ebpf runs as root"
    return {
        "cgroup": base,
        "tracepoint": tracepoint,
        "kprobe": base or kprobe_problem(),
    }
