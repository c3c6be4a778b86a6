"""Finding ``libaegis_hooks.so`` and reading its build stamp without loading it.

The library embeds ``AEGIS_HOOKS_INFO version=..;built=..;git=..``; reading the
file's bytes avoids running its constructors inside the runner.
"""

from __future__ import annotations

import mmap
import os
import sys
from dataclasses import dataclass
from pathlib import Path

LIBRARY_NAME = "libaegis_hooks.so"
_MARKER = b"AEGIS_HOOKS_INFO "


@dataclass(frozen=True)
class HooksInfo:
    """A hooks library on disk and its embedded stamp."""

    path: Path
    version: str
    built: str
    git: str


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
