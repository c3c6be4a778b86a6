"""Where aegis-mcp keeps its files.

Runtime files (control socket, state snapshot, overlay, netmon log) live in a
directory nobody else can write to: ``$XDG_RUNTIME_DIR/aegis-mcp`` for users,
``/run/aegis-mcp`` for root, else a ``0700`` directory under the user's cache.
Durable state (pool, locks, history) lives under ``$XDG_STATE_HOME/aegis-mcp``.
``AEGIS_MCP_RUNTIME_DIR``, ``AEGIS_MCP_STATE_DIR`` and ``AEGIS_MCP_CONFIG``
override the defaults (tests and unusual set-ups use them).
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

APP = "aegis-mcp"
ROOT_RUNTIME_DIR = Path("/run") / APP


class UnsafeDirectoryError(RuntimeError):
    """A directory we would keep private files in is not private."""


def _ensure_private_dir(path: Path, mode: int = 0o700, owner: int | None = None) -> Path:
    """Create ``path`` (and parents) and check it is ours and not writable by others.

    A symlink, a foreign owner or group/world write permission is refused:
    those are the ways a predictable path in a shared place gets hijacked.
    """
    owner = os.geteuid() if owner is None else owner
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirectoryError(f"{path} is not a plain directory")
    if st.st_uid != owner:
        raise UnsafeDirectoryError(f"{path} is owned by uid {st.st_uid}, expected {owner}")
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)
    return path


def runtime_dir() -> Path:
    """The private runtime directory for this user, created on demand."""
    # Root's directory is world-searchable so that an agent whose privileges
    # were dropped can reach the files the runner chowns to it; only root can
    # create names in it.
    root_mode = 0o755 if os.geteuid() == 0 else 0o700
    override = os.environ.get("AEGIS_MCP_RUNTIME_DIR")
    if override:
        return _ensure_private_dir(Path(override), mode=root_mode)
    if os.geteuid() == 0:
        return _ensure_private_dir(ROOT_RUNTIME_DIR, mode=root_mode)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and Path(xdg).is_dir() and os.stat(xdg).st_uid == os.geteuid():
        return _ensure_private_dir(Path(xdg) / APP)
    from platformdirs import user_cache_dir

    return _ensure_private_dir(Path(user_cache_dir(APP)) / "run")


def candidate_runtime_dirs() -> list[Path]:
    """Every runtime directory a reader may find runners in (own first, then root's)."""
    dirs = []
    with contextlib.suppress(OSError, UnsafeDirectoryError):
        dirs.append(runtime_dir())
    if ROOT_RUNTIME_DIR not in dirs and ROOT_RUNTIME_DIR.is_dir():
        dirs.append(ROOT_RUNTIME_DIR)
    return dirs


def state_dir() -> Path:
    """The durable state directory (SQLite databases, history)."""
    override = os.environ.get("AEGIS_MCP_STATE_DIR")
    if override:
        return _ensure_private_dir(Path(override))
    from platformdirs import user_state_dir

    return _ensure_private_dir(Path(user_state_dir(APP)))


def config_file() -> Path:
    """The user's config file (it need not exist)."""
    override = os.environ.get("AEGIS_MCP_CONFIG")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / APP / "config.toml"


@dataclass(frozen=True)
class RunnerFiles:
    """The runtime files of one runner, named by its pid inside a private directory."""

    directory: Path
    pid: int

    @property
    def socket(self) -> Path:
        return self.directory / f"runner-{self.pid}.sock"

    @property
    def lock(self) -> Path:
        return self.directory / f"runner-{self.pid}.lock"

    @property
    def snapshot(self) -> Path:
        return self.directory / f"state-{self.pid}.json"

    @property
    def events(self) -> Path:
        return self.directory / f"events-{self.pid}.jsonl"

    @property
    def overlay(self) -> Path:
        return self.directory / f"overlay-{self.pid}.json"

    @property
    def netmon_log(self) -> Path:
        return self.directory / f"netmon-{self.pid}.jsonl"

    def all(self) -> list[Path]:
        """Every file this runner may create."""
        return [self.socket, self.lock, self.snapshot, self.events, self.overlay, self.netmon_log]
