"""The start-up report: one JSON line per start describing how the agent was launched.

Tests of the supervisor read it to check what the agent really got: arguments, process
group and session, credentials after privilege dropping, capabilities, network
namespaces, terminal, environment. Several starts (hot reloads) append to one file, so
each line is a single ``os.write`` to an ``O_APPEND`` descriptor.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from aegis_mcp.demo.cli import Options
from aegis_mcp.demo.output import append_json_line

_ENV_NAMES = ("HOME", "USER", "LOGNAME", "SHELL", "LD_PRELOAD", "IS_SANDBOX")
_NAMESPACES = ("net", "mnt", "pid", "cgroup", "user")


def _proc_status() -> dict[str, str]:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            return dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)
    except OSError:
        return {}


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _term_size() -> list[int] | None:
    for fd in (1, 0, 2):
        try:
            size = os.get_terminal_size(fd)
        except OSError:
            continue
        return [size.columns, size.lines]
    return None


def _safe(call: Callable[..., object], *args: object) -> object:
    """``call(*args)``, or None where the kernel refuses (e.g. no /proc in a sandbox)."""
    try:
        return call(*args)
    except OSError:
        return None


def collect(opts: Options, servers: list[str], error: str | None = None) -> dict:
    """Everything the report records about this process, as a JSON-ready dict."""
    status = _proc_status()
    no_new_privs = status.get("NoNewPrivs")
    env = {k: v for k, v in os.environ.items() if k.startswith("AEGIS_")}
    if "AEGIS_MCP_AGENT_TOKEN" in env:
        # A secret: the report (a file tests read) says it was there, not what it is.
        env["AEGIS_MCP_AGENT_TOKEN"] = "(set)"
    env.update({k: os.environ[k] for k in _ENV_NAMES if k in os.environ})
    report = {
        "argv": opts.argv,
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "sid": _safe(os.getsid, 0),
        "pgid": _safe(os.getpgid, 0),
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "egid": os.getegid(),
        "groups": _safe(os.getgroups),
        "cap_eff": status.get("CapEff"),
        "no_new_privs": int(no_new_privs) if no_new_privs and no_new_privs.isdigit() else None,
        "netns": _safe(os.readlink, "/proc/self/ns/net"),
        "namespaces": {kind: _safe(os.readlink, f"/proc/self/ns/{kind}") for kind in _NAMESPACES},
        "cwd": _safe(os.getcwd),
        "isatty": {"stdin": _isatty(0), "stdout": _isatty(1), "stderr": _isatty(2)},
        "term_size": _term_size(),
        "continue": opts.continuing,
        "resume": opts.resume,
        "prompt": opts.prompt,
        "headless": opts.headless,
        "output_format": opts.output_format,
        "model": opts.model,
        "skip_permissions": opts.skip_permissions,
        "mcp_servers": servers,
        "env": env,
    }
    if error:
        report["error"] = error
    return report


def write(path: str, report: dict) -> None:
    """Append ``report`` as one line to ``path``; on failure warn on stderr and go on."""
    try:
        # Opened with this process's own credentials: a dropped-privilege agent must not
        # be able to write where its user could not.
        append_json_line(path, report)
    except OSError as exc:
        print(f"demo: cannot write start-up report {path}: {exc}", file=sys.stderr, flush=True)
