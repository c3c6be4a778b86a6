"""``aegis-mcp doctor``: what this machine supports, and what a missing piece disables.

Each check looks at the real thing (files the kernel exposes, binaries on
PATH, imports) and never changes the machine.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .agents.profiles import BUILTIN_PROFILES
from .hooks_lib import find_hooks, load_problem
from .privileges import PrivilegeError, resolve_agent_user


@dataclass(frozen=True)
class Check:
    """One capability and its consequences."""

    name: str
    ok: bool
    detail: str
    disables: str = ""


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _root() -> Check:
    root = os.geteuid() == 0
    return Check(
        "root",
        root,
        "running as root" if root else f"running as uid {os.geteuid()}",
        "" if root else "network namespaces, eBPF monitoring, privilege drop (run with sudo)",
    )


def _user_namespaces() -> Check:
    limit = _read("/proc/sys/user/max_user_namespaces")
    ok = limit.isdigit() and int(limit) > 0
    return Check(
        "user namespaces",
        ok,
        f"max_user_namespaces={limit or 'unknown'}",
        "" if ok else "rootless sandboxes",
    )


def _net_namespaces() -> Check:
    ok = Path("/proc/self/ns/net").exists()
    return Check(
        "network namespaces",
        ok,
        "/proc/self/ns/net present" if ok else "absent",
        "" if ok else "--sandbox=netns",
    )


def _cgroup_v2() -> Check:
    from .netmon.ebpf.availability import cgroup2_mount

    mount = cgroup2_mount()
    if mount is not None:
        return Check("cgroup v2", True, f"mounted at {mount}")
    return Check("cgroup v2", False, "no cgroup2 mount found", "per-agent eBPF attribution")


def _bcc() -> Check:
    from .netmon.ebpf._bcc import BccMissing
    from .netmon.ebpf.availability import bcc_version

    try:
        detail = f"BCC {bcc_version()} importable"
    except BccMissing as exc:
        return Check("BCC (python3-bpfcc)", False, str(exc), "--netmon=ebpf")
    return Check("BCC (python3-bpfcc)", True, detail)


def _kernel_headers() -> Check:
    from .netmon.ebpf.availability import headers_problem, kernel_headers_dir

    build = kernel_headers_dir()
    problem = headers_problem(build)
    if problem is not None:
        return Check("kernel headers", False, problem, "--netmon=ebpf (BCC compiles against them)")
    return Check("kernel headers", True, f"{build} -> {os.path.realpath(build)}")


def _ebpf_tiers() -> list[Check]:
    from .netmon.ebpf import ebpf_available
    from .netmon.ebpf.availability import tier_problems

    ok, reason = ebpf_available()
    checks = [Check("eBPF netmon", ok, "ready" if ok else reason, "" if ok else "--netmon=ebpf")]
    for tier, problem in tier_problems().items():
        disables = f"the {tier} netmon tier" if problem else ""
        checks.append(Check(f"  {tier} tier", problem is None, problem or "usable", disables))
    return checks


def _nftables() -> Check:
    from .sandbox.netns.nft import available

    ok = available()
    detail = "libnftables loads" if ok else "libnftables not found (apt-get install nftables)"
    return Check("nftables", ok, detail, "" if ok else "--sandbox=netns and its egress policy")


def _container_engine() -> list[Check]:
    from .config import ConfigError, load_config
    from .paths import config_file
    from .sandbox.container.doctor import engine_checks
    from .sandbox.container.settings import ContainerSettings

    try:
        settings = load_config(config_file()).container
    except ConfigError:
        settings = ContainerSettings()
    checks = engine_checks(settings.engine, settings.image)
    return [Check(name, ok, detail, disables) for name, ok, detail, disables in checks]


def _hooks() -> Check:
    info = find_hooks()
    if info is None:
        return Check(
            "hooks library",
            False,
            "libaegis_hooks.so not found",
            "--netmon=preload, MCP injection by preload",
        )
    detail = f"{info.path} (v{info.version}, git {info.git})"
    with contextlib.suppress(PrivilegeError):
        user = resolve_agent_user(keep_root=False)
        problem = load_problem(user, info.path) if user.drop else None
        if problem is not None:
            # What the runner does about it at each start (hooks_lib.hooks_for_user).
            detail += f"; {user.name} cannot load it ({problem}): each run uses a copy"
    return Check("hooks library", True, detail)


def _agents() -> Check:
    found = [
        p.name for p in BUILTIN_PROFILES.values() if p.name != "demo" and shutil.which(p.command[0])
    ]
    return Check(
        "agents on PATH",
        bool(found),
        ", ".join(found) if found else "none (the bundled `aegis-mcp demo` agent always works)",
    )


CHECKS: list[Callable[[], Check]] = [
    _root,
    _user_namespaces,
    _net_namespaces,
    _cgroup_v2,
    _bcc,
    _kernel_headers,
    _nftables,
    _hooks,
    _agents,
]


def run_checks() -> list[Check]:
    """All checks, in display order."""
    return [check() for check in CHECKS] + _container_engine() + _ebpf_tiers()


def print_report() -> int:
    """Print the report; exit code 0 (missing features are not errors)."""
    print(f"aegis-mcp doctor: Linux {platform.release()}, Python {sys.version.split()[0]}")
    for check in run_checks():
        mark = "ok  " if check.ok else "MISS"
        line = f"  [{mark}] {check.name:22} {check.detail}"
        if check.disables:
            line += f"\n         -> disables: {check.disables}"
        print(line)
    return 0
