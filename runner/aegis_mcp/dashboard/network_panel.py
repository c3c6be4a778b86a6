"""Network Activity: connections, bytes, top targets by host name, blocked attempts, traffic."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from . import format as fmt
from .panel import Panel, View, put

TOP = 5
RECENT = 8
SHOWN_EVENTS = frozenset({"connect", "accept", "blocked", "dns"})
"""Recent events worth a line (send/recv/close are in the byte counts)."""
BLOCKED_STYLE = "bold red"
UNSEEN_STYLE = "yellow"
"""A process the monitoring source cannot fully see (netmon.coverage)."""


def _traffic(stats: dict[str, Any]) -> tuple[list[float], str]:
    """The sparkline's values and what they count."""
    traffic = stats.get("traffic") or {}
    per = traffic.get("bucket_secs", 10)
    values = [float(v) for v in traffic.get("bytes") or []]
    if any(values):
        return values, f"bytes per {per}s"
    # Sources that see connections but not bytes (a static binary under preload).
    return [float(v) for v in traffic.get("events") or []], f"events per {per}s"


class NetworkPanel(Panel, Vertical, can_focus=True):
    """What the netmon sources saw."""

    SECTIONS = frozenset({"netmon", "netmon_stats", "netmon_events"})
    MIN_INTERVAL = 0.5

    def compose(self) -> ComposeResult:
        yield Static(id="net-summary")
        yield Sparkline([], id="net-traffic")
        yield Static(id="net-body")

    def on_mount(self) -> None:
        self.border_title = "Network Activity"

    def show(self, view: View) -> None:
        netmon = view.state.get("netmon") or {}
        stats: dict[str, Any] | None = view.state.get("netmon_stats")
        summary = self.query_one("#net-summary", Static)
        sparkline = self.query_one(Sparkline)
        body = self.query_one("#net-body", Static)
        if not stats:
            put(summary, "monitoring off: start the agent with --netmon")
            sparkline.data = []
            put(body, "")
            return
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"conns {stats.get('total_connections', 0)}", style="bold")
        failed = stats.get("failed_connections", 0)
        if failed:
            text.append(f" ({failed} failed)")
        blocked = stats.get("blocked_connections", 0)
        text.append("  ")
        text.append(f"blocked {blocked}", style=BLOCKED_STYLE if blocked else "")
        sent, received = fmt.size(stats.get("bytes_sent")), fmt.size(stats.get("bytes_received"))
        text.append(f"  ↑{sent} ↓{received}")
        put(summary, text)
        skipped = view.model.netmon_skipped
        mode = netmon.get("mode", "")
        self.subtitle(f"{mode} · {skipped} events not listed" if skipped else mode)
        values, unit = _traffic(stats)
        sparkline.data = values
        tooltip = f"traffic, {unit}, last {len(values) * 10 // 60} min"
        if sparkline.tooltip != tooltip:
            sparkline.tooltip = tooltip
        put(body, self._body(view, stats, netmon.get("coverage") or {}))

    def _body(self, view: View, stats: dict[str, Any], coverage: dict[str, Any]) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        # What the source says it cannot see, first: the counts below lack it.
        for process in coverage.get("processes") or []:
            if process.get("verdict") in ("partial", "blind"):
                text.append(f"! {process.get('line', '')}\n", style=UNSEEN_STYLE)
        targets = [
            t
            for t in stats.get("top_targets") or []
            if view.matches(t.get("host"), t.get("target"))
        ]
        name_width = max(8, self.content_region.width - 18)
        for target in targets[:TOP]:
            counts = (target.get("bytes_sent", 0), target.get("bytes_received", 0))
            # None: bytes the source could not see ("-"), not 0.
            moved = None if None in counts else sum(counts)
            name = fmt.shorten(fmt.endpoint(target), name_width)
            text.append(
                f"{name:<{name_width}} {fmt.size(moved):>9} {target.get('connections', 0):>3}c"
            )
            if target.get("blocked"):
                text.append(f" {target['blocked']}✗", style=BLOCKED_STYLE)
            text.append("\n")
        events = [
            e
            for e in view.model.netmon_events
            if e.get("event") in SHOWN_EVENTS
            and view.matches(e.get("host"), e.get("remote_addr"), e.get("comm"), e.get("event"))
        ]
        for event in events[-RECENT:]:
            kind = event.get("event")
            blocked = kind == "blocked"
            style = BLOCKED_STYLE if blocked else ""
            label = "BLOCKED" if blocked else kind
            line = f"{fmt.clock(event.get('ts'))} {label:<7} {fmt.endpoint(event)}"
            text.append(line, style=style)
            text.append(f" {event.get('comm', '')}\n", style=style or "dim")
        if not targets and not events:
            text.append("no connections yet", style="dim")
        return text
