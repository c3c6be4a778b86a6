"""Numbers, times and bars as the panels print them (plain text: readable without colour)."""

from __future__ import annotations

import time

BAR_FULL = "█"
BAR_EMPTY = "░"


def duration(secs: float | None) -> str:
    """``45s``, ``3m05s``, ``2h07m``, ``3d04h``; ``-`` when unknown."""
    if secs is None:
        return "-"
    secs = max(0, int(secs))
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60:02d}s"
    if secs < 86400:
        return f"{secs // 3600}h{secs % 3600 // 60:02d}m"
    return f"{secs // 86400}d{secs % 86400 // 3600:02d}h"


def size(nbytes: float | None) -> str:
    """``512 B``, ``1.5 KB``, ``20.0 MB`` (powers of 1024)."""
    if nbytes is None:
        return "-"
    value = float(nbytes)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def megabytes(mb: float) -> str:
    """A size given in MB, as :func:`size` prints it."""
    return size(mb * 1024 * 1024)


def clock(ts: float | None) -> str:
    """Local ``HH:MM:SS`` of a Unix time."""
    if ts is None:
        return "--:--:--"
    return time.strftime("%H:%M:%S", time.localtime(ts))


def bar(fraction: float, width: int) -> str:
    """A bar of ``width`` cells filled to ``fraction`` (clamped to 0..1)."""
    width = max(0, width)
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return BAR_FULL * filled + BAR_EMPTY * (width - filled)


def shorten(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` with an ellipsis."""
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "…"


def tail(text: str, width: int) -> str:
    """The end of ``text`` (a path: its file name matters most), cut to ``width``."""
    return text if len(text) <= width else "…" + text[len(text) - width + 1 :]


def endpoint(event: dict) -> str:
    """``host:port`` of a netmon event or target (the address when no name is known)."""
    host = event.get("host") or event.get("remote_addr") or event.get("addr") or "?"
    port = event.get("remote_port", event.get("port"))
    if ":" in str(host) and not str(host).startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}" if port not in (None, "") else str(host)
