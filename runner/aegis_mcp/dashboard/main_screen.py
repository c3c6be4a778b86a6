"""The main screen: the status line and the six panels, laid out to fit 80x24 and grow."""

from __future__ import annotations

import time

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Input

from .locks_panel import LocksPanel
from .log_panel import LogPanel
from .network_panel import NetworkPanel
from .panel import Panel, View
from .pool_panel import PoolPanel
from .primary_panel import PrimaryPanel
from .status_bar import StatusBar
from .system_panel import SystemPanel

TALL = 40
"""Rows from which the pool shows its selected agent's detail below the table."""


class MainScreen(Screen):
    """Everything about the followed runner."""

    DEFAULT_CSS = """
    MainScreen { layout: vertical; }
    MainScreen .row { height: 1fr; }
    MainScreen #top { height: 7; }
    MainScreen #bottom { height: 8; }
    MainScreen.-tall #top { height: 8; }
    MainScreen.-tall #bottom { height: 14; }
    MainScreen { scrollbar-size-vertical: 1; }
    MainScreen .panel Static, MainScreen PrimaryPanel, MainScreen SystemPanel {
        text-wrap: nowrap; text-overflow: ellipsis;
    }
    MainScreen KeyedTable { overflow-x: hidden; scrollbar-size-vertical: 1; }
    MainScreen .panel {
        width: 1fr; height: 1fr; padding: 0 1;
        border: round $primary-darken-1; border-title-style: bold;
    }
    MainScreen .panel:focus, MainScreen .panel:focus-within { border: round $accent; }
    MainScreen.-disconnected .panel { border: dashed $error; }
    MainScreen PrimaryPanel.-idle { border: heavy $warning; }
    MainScreen PrimaryPanel.-unresponsive { border: heavy $error; }
    MainScreen PrimaryPanel.-highresource { border: heavy $error; }
    MainScreen #pool { width: 3fr; }
    MainScreen #network { width: 2fr; }
    MainScreen #locks { width: 1fr; }
    MainScreen #log { width: 1fr; background: $surface; overflow-x: hidden; }
    MainScreen KeyedTable { height: 1fr; }
    MainScreen #log { scrollbar-size-vertical: 1; }
    MainScreen #pool-detail { display: none; height: auto; max-height: 14; }
    MainScreen.-tall #pool-detail { display: block; border-top: solid $primary-darken-2; }
    MainScreen #net-summary { height: 1; }
    MainScreen #net-traffic { height: 1; margin: 0 0 1 0; }
    MainScreen.-tall #net-traffic { height: 3; }
    MainScreen #net-body { height: 1fr; }
    MainScreen #filter { dock: bottom; display: none; height: 3; }
    MainScreen.-filtering #filter { display: block; }
    MainScreen.-zoomed .row { display: none; }
    MainScreen.-zoomed .row.-zoom { display: block; height: 1fr; }
    MainScreen.-zoomed .panel { display: none; }
    MainScreen.-zoomed .panel.-zoom { display: block; }
    """

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Horizontal(id="top", classes="row"):
            yield PrimaryPanel(id="primary", classes="panel")
            yield SystemPanel(id="system", classes="panel")
        with Horizontal(id="middle", classes="row"):
            yield PoolPanel(id="pool", classes="panel")
            yield NetworkPanel(id="network", classes="panel")
        with Horizontal(id="bottom", classes="row"):
            yield LocksPanel(id="locks", classes="panel")
            yield LogPanel(id="log", classes="panel")
        yield Input(
            placeholder="filter the log and tables (Enter keeps it, Esc clears)", id="filter"
        )
        yield Footer()

    @property
    def panels(self) -> list[Panel]:
        """The six panels."""
        return [w for w in self.query(".panel") if isinstance(w, Panel)]

    def on_resize(self) -> None:
        self.set_class(self.size.height >= TALL, "-tall")

    def draw(
        self, view: View, dirty: set[str], timed: bool, connection: str, paused: bool, force: bool
    ) -> float | None:
        """Redraw the status line, and the panels whose sections are in ``dirty`` (all of
        those that show ages too, when ``timed``) unless drawn less than their
        ``MIN_INTERVAL`` ago (``force``: regardless). Returns the seconds until a panel
        left out is due, None when none was."""
        self.query_one(StatusBar).show(view, connection, paused)
        self.set_class(connection != "live", "-disconnected")
        now = time.monotonic()
        later: float | None = None
        for panel in self.panels:
            if not (panel.pending or panel.SECTIONS & dirty or (timed and panel.TIMED)):
                continue
            wait = panel.drawn_at + panel.MIN_INTERVAL - now
            if wait > 0 and not force:
                panel.pending = True
                later = wait if later is None else min(later, wait)
                continue
            panel.show(view)
            panel.drawn_at, panel.pending = now, False
        return later

    def toggle_zoom(self) -> None:
        """Show the focused panel alone (or all of them again)."""
        if self.has_class("-zoomed"):
            self.remove_class("-zoomed")
            self.query(".-zoom").remove_class("-zoom")
            return
        focused: Widget | None = self.focused
        while focused is not None and not isinstance(focused, Panel):
            focused = focused.parent if isinstance(focused.parent, Widget) else None
        if focused is None:
            return
        focused.add_class("-zoom")
        if isinstance(focused.parent, Widget):
            focused.parent.add_class("-zoom")
        self.add_class("-zoomed")
