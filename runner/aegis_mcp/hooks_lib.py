"""Finding ``libaegis_hooks.so``, reading its build stamp without loading it, and
making sure the agent's user can load it.

The library embeds ``AEGIS_HOOKS_INFO version=..;built=..;git=..``; reading the
file's bytes avoids running its constructors inside the runner.

Under sudo the library found may be one the agent's user cannot open (``make
install`` as root puts it in ``/root/.local/lib``): ``ld.so`` would then print
"cannot be preloaded ... ignored" and the agent would run unhooked, recording
nothing. :func:`hooks_for_user` asks the kernel with that user's credentials
before the start, and copies the library where the user can read it when they
cannot: into the runner's runtime directory, owned by root and writable by
root alone, so that the agent cannot swap the code other processes load.
"""

from __future__ import annotations

import errno
import mmap
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .files import write_atomic
from .privileges import AgentUser, as_user

LIBRARY_NAME = "libaegis_hooks.so"
_MARKER = b"AEGIS_HOOKS_INFO "
INSTALL_HINT = "install it where they can read it (`sudo make install PREFIX=/usr/local`)"


class HooksUnusable(RuntimeError):
    """The agent's user cannot load the hooks library, not even a copy; says why."""


@dataclass(frozen=True)
class HooksInfo:
    """A hooks library on disk and its embedded stamp."""

    path: Path
    version: str
    built: str
    git: str
    features: frozenset[str] = frozenset()
    """What this build does that older ones did not (``first-bytes``: hooks/netmon.c
    logs a connection's first bytes each way at once)."""


def search_path() -> list[Path]:
    """Where the library is looked for, in order."""
    candidates: list[Path] = []
    override = os.environ.get("AEGIS_HOOKS_LIB")
    if override:
        candidates.append(Path(override))
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if script is not None:
        candidates.append(script.parent / LIBRARY_NAME)
    # The symlink in PREFIX/bin points into the install venv: look beside the
    # link too, and in PREFIX/lib where `make install` puts the library.
    if sys.argv and sys.argv[0]:
        link_dir = Path(os.path.abspath(sys.argv[0])).parent
        candidates.append(link_dir / LIBRARY_NAME)
        candidates.append(link_dir.parent / "lib" / LIBRARY_NAME)
    candidates.append(Path.home() / ".local" / "lib" / LIBRARY_NAME)
    source_tree = Path(__file__).resolve().parents[2]
    candidates.append(source_tree / "hooks" / LIBRARY_NAME)
    candidates.append(Path("/usr/local/lib") / LIBRARY_NAME)
    candidates.append(Path("/usr/lib") / LIBRARY_NAME)
    seen: set[Path] = set()
    unique = []
    for path in candidates:
        if path not in seen:
            seen.add(path)
            unique.append(path)
    return unique


def read_info(path: Path) -> HooksInfo | None:
    """The stamp embedded in ``path``, or None if it has none (not our library)."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            start = data.find(_MARKER)
            if start < 0:
                return None
            end = data.find(b"\0", start)
            raw = data[start + len(_MARKER) : end if end > 0 else start + 512]
    except (OSError, ValueError):
        return None
    fields = dict(
        part.split("=", 1) for part in raw.decode(errors="replace").split(";") if "=" in part
    )
    return HooksInfo(
        path=path,
        version=fields.get("version", "?"),
        built=fields.get("built", "?"),
        git=fields.get("git", "?"),
        features=frozenset(filter(None, fields.get("features", "").split(","))),
    )


def find_hooks() -> HooksInfo | None:
    """The first hooks library on the search path that carries a stamp."""
    for path in search_path():
        if path.is_file():
            info = read_info(path)
            if info is not None:
                return info
    return None


def preload_into(env: dict[str, str], hooks: HooksInfo) -> None:
    """Put the hooks library first in ``env``'s LD_PRELOAD (once)."""
    current = env.get("LD_PRELOAD", "")
    if str(hooks.path) not in current.split():
        env["LD_PRELOAD"] = " ".join(p for p in (str(hooks.path), current) if p)


def load_problem(user: AgentUser, path: Path) -> str | None:
    """Why ``user``'s processes could not preload ``path``, None when they can.

    What ``ld.so`` does, with the user's credentials: open the file (every
    directory on the way must let them through) and map it executable (a
    ``noexec`` mount refuses that).
    """

    def load() -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            length = min(os.fstat(fd).st_size, mmap.PAGESIZE)
            with mmap.mmap(fd, length, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_EXEC):
                pass
        finally:
            os.close(fd)

    try:
        as_user(user, load)
    except OSError as exc:
        if exc.errno == errno.EPERM:
            return "its file system is mounted noexec"
        return exc.strerror or str(exc)
    except ValueError:  # mmap of an empty file
        return "it is empty"
    return None


def hooks_for_user(hooks: HooksInfo, user: AgentUser, copy_to: Path) -> HooksInfo:
    """``hooks`` when ``user`` can load it, else a copy at ``copy_to`` they can load.

    The copy is owned by root, mode 0644, in a directory only root can write
    (the runtime directory of a root runner). Raises :class:`HooksUnusable` with
    the reason when neither can be loaded.
    """
    problem = load_problem(user, hooks.path)
    if problem is None:
        return hooks
    why = f"{user.name} cannot load the hooks library {hooks.path} ({problem})"
    try:
        write_atomic(copy_to, hooks.path.read_bytes(), mode=0o644)
    except OSError as exc:
        raise HooksUnusable(f"{why}, and it cannot be copied: {exc.strerror or exc}") from None
    copied = read_info(copy_to)
    again = load_problem(user, copy_to) if copied is not None else "not a hooks library"
    if copied is None or again is not None:
        copy_to.unlink(missing_ok=True)
        raise HooksUnusable(f"{why}, nor a copy in {copy_to.parent} ({again}); {INSTALL_HINT}")
    return copied


def find_hooks_for(user: AgentUser, copy_to: Path) -> tuple[HooksInfo | None, str | None]:
    """The hooks library ``user``'s agents will preload (a copy at ``copy_to`` if need
    be), or None with the reason when there is one they cannot load."""
    hooks = find_hooks()
    if hooks is None:
        return None, None
    try:
        return hooks_for_user(hooks, user, copy_to), None
    except HooksUnusable as exc:
        return None, str(exc)
