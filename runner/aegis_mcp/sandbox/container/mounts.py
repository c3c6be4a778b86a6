"""What of the host a container sees: bind mounts, each at the same path as on the host.

- the working directory, read-write: the agent's project;
- the agent's CLI, read-only, found from its command line: a native binary,
  the node package a script belongs to with the ``node_modules`` tree around
  it (where its dependencies and platform packages, such as Codex's native
  ``@openai/codex-linux-x64``, are installed) and the host's ``node``, or the
  virtualenv of a Python entry point: the container runs what the user
  installed, not a copy baked into the image;
- aegis-mcp itself, read-only (its virtualenv and package: the MCP server the
  agent starts inside, and the hooks library of ``LD_PRELOAD``);
- the runner's files the agent's environment names (control socket, MCP
  overlay, netmon log), so that the MCP server reaches the runner;
- ``[container] mounts``;
- ``/etc/passwd`` and ``/etc/group`` naming the agent's user, so that tools
  that look the user up (git, ssh, node's ``os.userInfo()``) find it.

Nothing else of the host, and nothing else of its home: the agent's home is
its own volume (:mod:`.volumes`). System directories (``/usr/bin``...) are never
mounted: the image has its own.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import SandboxError

SYSTEM_DIRS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/libexec")
"""Where the image has its own programs: host copies there are not mounted over them."""
SYSTEM_PYTHON = "/usr/lib/python3"
"""... and its own Python standard library (``/usr/lib/python3.11``, ``/usr/lib/python3``)."""
_SCRIPT_ROOT_MARKERS = ("package.json", "pyvenv.cfg")


@dataclass(frozen=True)
class Bind:
    """One bind mount."""

    source: str
    target: str
    read_only: bool = True

    def spec(self) -> str:
        """The engine's ``SOURCE:TARGET:MODE`` form."""
        for path in (self.source, self.target):
            if ":" in path:
                raise SandboxError(f"cannot mount {path!r} into a container: it contains ':'")
        return f"{self.source}:{self.target}:{'ro' if self.read_only else 'rw'}"


def _is_system(path: str) -> bool:
    return path.startswith(SYSTEM_PYTHON) or any(inside(path, d) for d in SYSTEM_DIRS)


def inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _shebang(path: str) -> list[str] | None:
    try:
        with open(path, "rb") as f:
            first = f.readline(256)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    return first[2:].decode(errors="replace").split()


def _package_root(path: str) -> str | None:
    """The node package or virtualenv a script belongs to (its nearest marked ancestor)."""
    directory = os.path.dirname(path)
    while directory not in ("/", ""):
        if any(os.path.exists(os.path.join(directory, m)) for m in _SCRIPT_ROOT_MARKERS):
            return directory
        directory = os.path.dirname(directory)
    return None


def _node_modules_of(path: str) -> str | None:
    """The outermost ``node_modules`` directory ``path`` is in: node resolves a
    package's dependencies (and npm's optional platform packages) from the
    ``node_modules`` directories above it, so the whole tree must be visible."""
    parts = path.split("/")
    if "node_modules" not in parts:
        return None
    return "/".join(parts[: parts.index("node_modules") + 1])


def _venv_of(path: str) -> str | None:
    """The virtualenv a ``.../bin/python`` belongs to."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    return root if os.path.isfile(os.path.join(root, "pyvenv.cfg")) else None


def _which(name: str, path_env: str) -> str | None:
    for directory in path_env.split(os.pathsep):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _node_install(node: str) -> str:
    """What to mount for a host ``node``: its install tree (nvm, a tarball), or the binary."""
    real = os.path.realpath(node)
    root = os.path.dirname(os.path.dirname(real))
    if (
        os.path.basename(os.path.dirname(real)) == "bin"
        and os.path.isdir(os.path.join(root, "lib", "node_modules"))
        and not _is_system(real)
    ):
        return root
    return real


def agent_binds(argv: list[str], path_env: str) -> tuple[list[str], list[Bind]]:
    """The agent's command line as the container runs it, and the mounts that make it run.

    A command under the image's system directories is left to the image's copy.
    """
    if not argv:
        return argv, []
    command = argv[0]
    if not os.path.isabs(command):
        found = _which(command, path_env)
        if found is None:
            return argv, []
        command = found
    venv = _venv_of(command)
    if venv is not None:
        # A virtualenv's python (a link to the system's): the image's interpreter
        # with the host's packages.
        return argv, [Bind(venv, venv)]
    real = os.path.realpath(command)
    if _is_system(real):
        return argv, []
    binds: list[Bind] = []
    interpreter = _shebang(real)
    if interpreter is None:
        binds.append(Bind(real, real))
    else:
        root = _package_root(real)
        root = (_node_modules_of(root) or root) if root else real
        binds.append(Bind(root, root))
        binds.extend(_interpreter_binds(interpreter, path_env))
    # Run the file by its real path: the symlink that led to it may not exist inside.
    return [real, *argv[1:]], binds


def _interpreter_binds(interpreter: list[str], path_env: str) -> list[Bind]:
    program = interpreter[0]
    if os.path.basename(program) == "env" and len(interpreter) > 1:
        program = _which(interpreter[-1], path_env) or interpreter[-1]
    if not os.path.isabs(program):
        return []
    venv = _venv_of(program)
    if venv is not None:
        return [Bind(venv, venv)]
    if os.path.basename(program).startswith("node") and os.path.exists(program):
        # The host's node: the version the package was installed for, over the image's.
        install = _node_install(program)
        binds = [Bind(install, install)]
        if install == os.path.realpath(program) and program != install:
            binds.append(Bind(install, program))
        return binds
    return []


def self_binds() -> list[Bind]:
    """aegis-mcp itself, read-only: its virtualenv and the directory its package is in."""
    binds = []
    if sys.prefix != sys.base_prefix:
        binds.append(Bind(sys.prefix, sys.prefix))
    package_parent = str(Path(__file__).resolve().parents[3])
    binds.append(Bind(package_parent, package_parent))
    return binds


def file_binds(paths: Iterable[str], writable: Iterable[str] = ()) -> list[Bind]:
    """Existing files (sockets, logs, libraries) at their own paths."""
    rw = set(writable)
    return [Bind(p, p, read_only=p not in rw) for p in paths if p and os.path.exists(p)]


def preload_paths(env: dict[str, str]) -> list[str]:
    """The libraries ``LD_PRELOAD`` names (the hooks library): they must exist inside."""
    return [p for p in env.get("LD_PRELOAD", "").replace(":", " ").split() if os.path.isabs(p)]


def merge(binds: Iterable[Bind]) -> list[Bind]:
    """Drop repeats and identity mounts already visible through a parent identity mount.

    A mount inside one of another mode is kept (a read-only island protects its tree).
    """
    unique: dict[str, Bind] = {}
    for bind in binds:
        known = unique.get(bind.target)
        if known is not None:
            if known.source != bind.source:
                raise SandboxError(f"two mounts at {bind.target}: {known.source} and {bind.source}")
            if not bind.read_only:
                unique[bind.target] = bind
            continue
        unique[bind.target] = bind
    kept = []
    for bind in unique.values():
        covered = any(
            other is not bind
            and other.source == other.target
            and bind.source == bind.target
            and inside(bind.target, other.target)
            and other.read_only == bind.read_only
            and other.target != bind.target
            for other in unique.values()
        )
        if not covered:
            kept.append(bind)
    return sorted(kept, key=lambda b: b.target.count("/"))


def passwd_files(
    passwd: Path, group_file: Path, name: str, uid: int, gid: int, home: str
) -> list[Bind]:
    """``/etc/passwd`` and ``/etc/group`` naming the agent's user, written at these paths."""
    import grp

    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = name
    users = ["root:x:0:0:root:/root:/bin/bash", "nobody:x:65534:65534:nobody:/nonexistent:/bin/sh"]
    groups = ["root:x:0:", "nogroup:x:65534:"]
    if uid not in (0, 65534):
        users.append(f"{name}:x:{uid}:{gid}::{home}:/bin/bash")
    if gid not in (0, 65534):
        groups.append(f"{group}:x:{gid}:")
    from ...files import write_atomic

    binds = []
    for path, target, lines in ((passwd, "/etc/passwd", users), (group_file, "/etc/group", groups)):
        write_atomic(path, ("\n".join(lines) + "\n").encode(), mode=0o644)
        binds.append(Bind(str(path), target))
    return binds
