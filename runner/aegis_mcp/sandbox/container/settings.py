"""The ``[container]`` config table: engine, image, extra mounts, resource limits.

::

    [container]
    engine = "unix:///run/user/1000/podman/podman.sock"   # default: discovered
    image = "aegis-mcp-base"          # what `aegis-mcp image build` makes
    mounts = ["~/.gitconfig:ro", "/data/corpus:/corpus:ro"]
    memory = "4g"                     # bytes, or a number with k, m, g
    cpus = 2.0
    pids = 4096
    nofile = 20000                    # ulimits, within the host's hard limits
    nproc = 32768
    network = "auto"                  # or "none": no network at all

Every value is checked here, when the file is read: a bad one is a ConfigError
with the key and what is wrong, before anything starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_IMAGE = "aegis-mcp-base"
NETWORK_MODES = ("auto", "none")
_SIZE = re.compile(r"(?P<n>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[kmgt]?)i?b?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class SettingsError(ValueError):
    """A ``[container]`` value is invalid; the message names the key."""


@dataclass(frozen=True)
class Mount:
    """One ``[container] mounts`` entry: a host path shown inside the container."""

    source: str
    target: str
    read_only: bool

    @classmethod
    def parse(cls, text: str, home: str) -> Mount:
        """``HOST[:CONTAINER][:ro|rw]``; ``~`` is the agent's home; read-write unless ``:ro``."""
        parts = text.split(":")
        mode = "rw"
        if len(parts) > 1 and parts[-1] in ("ro", "rw"):
            mode = parts.pop()
        if not 1 <= len(parts) <= 2 or not all(parts):
            raise SettingsError(f"mount {text!r} is not HOST[:CONTAINER][:ro|rw]")
        source = _expand(parts[0], home)
        target = _expand(parts[1], home) if len(parts) == 2 else source
        for path in (source, target):
            if not os.path.isabs(path):
                raise SettingsError(f"mount {text!r}: {path!r} is not an absolute path")
        return cls(os.path.normpath(source), os.path.normpath(target), mode == "ro")


def _expand(path: str, home: str) -> str:
    return home + path[1:] if path == "~" or path.startswith("~/") else path


@dataclass(frozen=True)
class ContainerSettings:
    """The ``[container]`` table with defaults filled in."""

    engine: str | None = None
    """A docker SDK base URL (``unix:///...``, ``tcp://...``); None: discovered."""
    image: str = DEFAULT_IMAGE
    mounts: tuple[str, ...] = ()
    """Raw ``HOST[:CONTAINER][:ro|rw]`` entries (``~`` is expanded per agent user)."""
    memory: int | None = None
    """Bytes."""
    cpus: float | None = None
    pids: int | None = None
    nofile: int | None = None
    """None: the host's hard limit (at most 20000, which every engine here accepts)."""
    nproc: int | None = None
    network: str = "auto"

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> ContainerSettings:
        """Check a parsed ``[container]`` table; SettingsError names the bad key."""
        values: dict[str, Any] = {}
        for key, value in table.items():
            parse = _PARSERS.get(key)
            if parse is None:
                raise SettingsError(f"{key}: unknown setting")
            try:
                values[key] = parse(value)
            except SettingsError as exc:
                raise SettingsError(f"{key}: {exc}") from None
        return cls(**values)

    def parsed_mounts(self, home: str) -> list[Mount]:
        """The configured mounts for an agent whose home is ``home``."""
        return [Mount.parse(text, home) for text in self.mounts]


def _engine(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"(unix|tcp|ssh|http|https)://.+", value):
        raise SettingsError('must be a URL such as "unix:///run/podman/podman.sock"')
    return value


def _image(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9][a-z0-9._/:@-]*", value):
        raise SettingsError('must be an image name such as "aegis-mcp-base"')
    return value


def _mounts(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SettingsError('must be a list of "HOST[:CONTAINER][:ro|rw]" strings')
    for text in value:
        Mount.parse(text, "/home/check")
    return tuple(value)


def parse_size(value: Any) -> int:
    """Bytes from a whole number or a string such as ``"512m"`` or ``"4g"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        size = int(float(match["n"]) * _UNITS[match["unit"].lower()])
    else:
        raise SettingsError('must be a number of bytes or a size such as "4g"')
    if size < 6 << 20:
        raise SettingsError("must be at least 6 MiB (engines refuse less)")
    return size


def _cpus(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.01 <= value <= 1024:
        raise SettingsError("must be a number of CPUs from 0.01 to 1024")
    return float(value)


def _whole(low: int, high: int) -> Any:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise SettingsError(f"must be a whole number from {low} to {high}")
        return value

    return parse


def _network(value: Any) -> str:
    if value not in NETWORK_MODES:
        raise SettingsError(f"must be one of {', '.join(NETWORK_MODES)}")
    return value


_PARSERS = {
    "engine": _engine,
    "image": _image,
    "mounts": _mounts,
    "memory": parse_size,
    "cpus": _cpus,
    "pids": _whole(16, 4_194_304),
    "nofile": _whole(64, 1 << 20),
    "nproc": _whole(16, 4_194_304),
    "network": _network,
}
