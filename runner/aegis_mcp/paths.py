"""Where aegis-mcp keeps its files.

Runtime files (control socket, state snapshot, overlay, netmon log) live in a
directory nobody else can write to: ``$XDG_RUNTIME_DIR/aegis-mcp`` for users,
``/run/aegis-mcp`` for root, else a ``0700`` directory under the user's cache.
Durable state (pool, locks, history) lives under ``$XDG_STATE_HOME/aegis-mcp``.
Caches that can be rebuilt at any time (the MCP handshake's recorded replies,
compiled BPF programs) live under ``$XDG_CACHE_HOME/aegis-mcp`` (root:
``/var/cache/aegis-mcp``).
``AEGIS_MCP_RUNTIME_DIR``, ``AEGIS_MCP_STATE_DIR``, ``AEGIS_MCP_CACHE_DIR`` and
``AEGIS_MCP_CONFIG`` override the defaults (tests and unusual set-ups use them).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from .safe_paths import UnsafeDirectoryError, private_dir

APP = "aegis-mcp"
ROOT_RUNTIME_DIR = Path("/run") / APP


def _private(path: Path, what: str, variable: str, mode: int = 0o700) -> Path:
    try:
        return private_dir(path, mode)
    except UnsafeDirectoryError as exc:
        raise UnsafeDirectoryError(
            f"refusing the {what} {path}: {exc}. It is not repaired in place: use a "
            f"directory that only you (or root) can change, through {variable} if need be"
        ) from None


def runtime_dir() -> Path:
    """The private runtime directory for this user, created on demand.

    Refused (UnsafeDirectoryError) unless it and every directory above it pass
    :func:`safe_paths.open_private_dir`'s checks.
    """
    # Root's directory is world-searchable so that an agent whose privileges
    # were dropped can reach the files the runner chowns to it; only root can
    # create names in it.
    mode = 0o755 if os.geteuid() == 0 else 0o700
    variable = "AEGIS_MCP_RUNTIME_DIR"
    override = os.environ.get(variable)
    if override:
        return _private(Path(override), "runtime directory", variable, mode)
    if os.geteuid() == 0:
        return _private(ROOT_RUNTIME_DIR, "runtime directory", variable, mode)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and Path(xdg).is_dir() and os.stat(xdg).st_uid == os.geteuid():
        return _private(Path(xdg) / APP, "runtime directory", variable)
    from platformdirs import user_cache_dir

    return _private(Path(user_cache_dir(APP)) / "run", "runtime directory", variable)


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
    variable = "AEGIS_MCP_STATE_DIR"
    override = os.environ.get(variable)
    if override:
        return _private(Path(override), "state directory", variable)
    from platformdirs import user_state_dir

    return _private(Path(user_state_dir(APP)), "state directory", variable)


def cache_dir(name: str) -> Path:
    """The private cache directory ``name`` (created on demand), for files that are
    rebuilt when missing: nothing in it is ever the only copy of anything."""
    variable = "AEGIS_MCP_CACHE_DIR"
    override = os.environ.get(variable)
    if override:
        base = Path(override)
    elif os.geteuid() == 0:
        # Root's, wherever sudo left HOME: BPF objects from here are loaded into the kernel.
        base = Path("/var/cache") / APP
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
        # platformdirs' rule on Linux, without its import on the MCP server's fast path
        base = (Path(xdg) if xdg else Path.home() / ".cache") / APP
    # Root's is shared with what the agents' users must reach (the agent CLIs the set-up
    # installs there): searchable by all, writable by root alone; each cache in it is private.
    _private(base, "cache directory", variable, 0o755 if os.geteuid() == 0 else 0o700)
    return _private(base / name, "cache directory", variable)


def config_file() -> Path:
    """The user's config file (it need not exist)."""
    override = os.environ.get("AEGIS_MCP_CONFIG")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / APP / "config.toml"


def pending(path: Path) -> Path:
    """The private name ``path`` is made under before it is renamed into place, so
    that nobody who looks for ``path`` sees it half made."""
    return path.with_name(f".{path.name}.new")


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
    def settings_overlay(self) -> Path:
        return self.directory / f"settings-{self.pid}.json"

    @property
    def netmon_log(self) -> Path:
        return self.directory / f"netmon-{self.pid}.jsonl"

    @property
    def container_passwd(self) -> Path:
        """The ``/etc/passwd`` its containers get (their user's entry)."""
        return self.directory / f"passwd-{self.pid}"

    @property
    def container_group(self) -> Path:
        return self.directory / f"group-{self.pid}"

    @property
    def engine_socket(self) -> Path:
        """A private podman service's socket, when the run started one."""
        return self.directory / f"podman-{self.pid}.sock"

    @property
    def engine_log(self) -> Path:
        return self.directory / f"podman-{self.pid}.log"

    @property
    def hooks_copy(self) -> Path:
        """The hooks library, copied here when the agent's user cannot read the original."""
        return self.directory / f"hooks-{self.pid}.so"

    def all(self) -> list[Path]:
        """Every file this runner may create."""
        return [
            self.socket,
            self.lock,
            pending(self.socket),
            pending(self.lock),
            self.snapshot,
            self.events,
            self.overlay,
            self.settings_overlay,
            self.netmon_log,
            self.container_passwd,
            self.container_group,
            self.engine_socket,
            self.engine_log,
            self.hooks_copy,
        ]
