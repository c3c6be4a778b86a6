"""Argument checks for control operations (pool, locks, netmon, the runner's own).

Every failure is a ``ControlError(INVALID_ARGUMENT)`` whose message names the
argument and says what would be accepted: the caller is usually a model, and
it can only correct what the message tells it about.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .protocol import INVALID_ARGUMENT, ControlError


def invalid(message: str) -> ControlError:
    """An INVALID_ARGUMENT error (to raise)."""
    return ControlError(INVALID_ARGUMENT, message)


def reject_unknown(op: str, args: dict[str, Any], accepted: Iterable[str]) -> None:
    """Refuse arguments that ``op`` does not take (a typo would otherwise be ignored)."""
    allowed = set(accepted)
    unknown = sorted(set(args) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise invalid(f"{op}: unknown argument(s) {', '.join(unknown)}; accepted: {known}")


def string(name: str, value: Any, *, max_len: int | None = None, allow_empty: bool = False) -> str:
    """``value`` as a string argument."""
    if not isinstance(value, str):
        raise invalid(f"{name} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise invalid(f"{name} must not be empty or blank (leave it out instead)")
    if max_len is not None and len(value) > max_len:
        raise invalid(f"{name} is {len(value)} characters long; the limit is {max_len}")
    if "\0" in value:
        raise invalid(f"{name} must not contain NUL characters")
    return value


def optional_string(name: str, value: Any, *, max_len: int | None = None) -> str | None:
    """``value`` as a string argument that may be left out (None), but not blank."""
    if value is None:
        return None
    return string(name, value, max_len=max_len)


def integer(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an integer argument within ``low..high`` (JSON booleans are not integers)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{name} must be an integer between {low} and {high}, got {value!r}")
    if not low <= value <= high:
        raise invalid(f"{name} must be between {low} and {high}, got {value}")
    return value


def number(name: str, value: Any, low: float, high: float) -> float:
    """``value`` as a finite number argument within ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid(f"{name} must be a number between {low:g} and {high:g}, got {value!r}")
    if not low <= value <= high:
        raise invalid(f"{name} must be between {low:g} and {high:g}, got {value:g}")
    return float(value)
