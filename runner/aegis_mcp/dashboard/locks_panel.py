"""File Locks: path, holder, age, time to live."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical

from . import format as fmt
from .panel import KeyedTable, Panel, View

COLUMNS = (("path", "path", None), ("holder", "holder", 9), ("age", "age", 7), ("ttl", "TTL", 6))


class LocksPanel(Panel, Vertical):
    """The pool's file locks."""

    SECTIONS = frozenset({"locks"})
    MIN_INTERVAL = 0.5
    TIMED = True

    def compose(self) -> ComposeResult:
        yield KeyedTable(COLUMNS, id="locks-table")

    def on_mount(self) -> None:
        self.border_title = "File Locks"

    def show(self, view: View) -> None:
        locks: list[dict[str, Any]] = view.state.get("locks") or []
        table = self.query_one(KeyedTable)
        rows = {}
        for lock in locks:
            if not view.matches(lock.get("path"), lock.get("holder")):
                continue
            rows[f"{lock.get('path')}\0{lock.get('holder')}"] = (
                fmt.tail(lock.get("path", "?"), table.flex_width - 1),
                lock.get("holder", "?"),
                fmt.duration(view.now - lock.get("since", view.now)),
                fmt.duration(lock.get("expires_at", view.now) - view.now),
            )
        table.sync(rows)
        self.subtitle(f"{len(locks)} held" if locks else "none held")
