"""Watchdog settings and their validation (shared by the CLI, config file and MCP tools)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

LOCKUP_ACTIONS = ("warn", "restart", "restart_with_backoff", "kill", "notify_and_wait")
MAX_TIMEOUT_SECS = 7 * 24 * 3600
MAX_MEMORY_MB = 1 << 22  # 4 TiB: anything above is a typo, not a limit


class WatchdogConfigError(ValueError):
    """A watchdog setting is out of range or of the wrong type."""


@dataclass(frozen=True)
class WatchdogConfig:
    """Tunable watchdog behaviour; see ``aegis_mcp.watchdog.monitor`` for the rules."""

    enabled: bool = True
    heartbeat_timeout_secs: float = 60.0
    check_interval_secs: float = 0.0
    """0 means derived from the timeout (a quarter of it, between 0.2 and 5 s)."""
    unresponsive_checks: int = 3
    lockup_action: str = "restart"
    max_memory_mb: int = 0
    """0 disables the memory limit."""
    busy_cpu_percent: float = 80.0
    """Whole-tree CPU use (percent of one core) that counts as spinning."""
    backoff_initial_secs: float = 1.0
    backoff_max_secs: float = 300.0
    backoff_reset_secs: float = 600.0
    """Healthy time after which the backoff schedule starts again."""
    backoff_max_restarts: int = 5
    """Restarts without a healthy period in between before the watchdog gives up."""
    io_floor_bytes_per_sec: float = 4096.0
    """File and pipe I/O of the tree (beyond its terminal output and network traffic)
    below this rate is background noise (timers, polling its own files), not progress."""
    net_floor_bytes_per_sec: float = 64.0
    """Bytes received on the tree's TCP connections below this rate, averaged over 5 s
    (keep-alives, pings), are not progress."""
    restart_limit_burst: int = 5
    """At most this many watchdog restarts within ``restart_limit_interval_secs``
    (systemd's StartLimitBurst); one more is refused and the watchdog stands down."""
    restart_limit_interval_secs: float = 60.0
    """The window of the restart limit (StartLimitIntervalSec); 0 turns the limit off."""

    @property
    def interval(self) -> float:
        """Seconds between two checks."""
        if self.check_interval_secs > 0:
            return self.check_interval_secs
        return min(5.0, max(0.2, self.heartbeat_timeout_secs / 4))

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, with the effective check interval."""
        data = asdict(self)
        data["check_interval_secs"] = self.interval
        return data

    def updated(self, **changes: Any) -> WatchdogConfig:
        """A copy with ``changes`` applied after validating each of them."""
        return replace(self, **validate_changes(changes))


def number_in_range(name: str, value: Any, low: float, high: float, integer: bool = False) -> float:
    """``value`` as a number within [low, high]; WatchdogConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WatchdogConfigError(f"{name} must be a number, got {value!r}")
    if integer and not float(value).is_integer():
        raise WatchdogConfigError(f"{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise WatchdogConfigError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return int(value) if integer else float(value)


def validate_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Check a partial set of settings; returns them normalised."""
    fields = set(WatchdogConfig.__dataclass_fields__)
    out: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in fields:
            raise WatchdogConfigError(f"unknown watchdog setting {name!r}")
        if name == "enabled":
            if not isinstance(value, bool):
                raise WatchdogConfigError(f"enabled must be true or false, got {value!r}")
            out[name] = value
        elif name == "lockup_action":
            if value not in LOCKUP_ACTIONS:
                raise WatchdogConfigError(
                    f"lockup_action must be one of {', '.join(LOCKUP_ACTIONS)}; got {value!r}"
                )
            out[name] = value
        elif name == "heartbeat_timeout_secs":
            out[name] = number_in_range(name, value, 0.1, MAX_TIMEOUT_SECS)
        elif name == "check_interval_secs":
            out[name] = number_in_range(name, value, 0, 3600)
        elif name == "max_memory_mb":
            out[name] = number_in_range(name, value, 0, MAX_MEMORY_MB, integer=True)
        elif name in ("unresponsive_checks", "backoff_max_restarts", "restart_limit_burst"):
            out[name] = number_in_range(name, value, 1, 1000, integer=True)
        elif name == "busy_cpu_percent":
            out[name] = number_in_range(name, value, 1, 100 * 1024)
        elif name.endswith("_floor_bytes_per_sec"):
            out[name] = number_in_range(name, value, 0, 1 << 40)
        else:
            out[name] = number_in_range(name, value, 0, MAX_TIMEOUT_SECS)
    return out
