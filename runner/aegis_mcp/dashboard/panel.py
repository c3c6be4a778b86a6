"""What every panel shares: the view it draws from, and a table that updates in place."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable, Static

from .model import DashboardModel


@dataclass
class View:
    """What a panel draws: the model, the time now, the filter typed after ``/``."""

    model: DashboardModel
    now: float
    filter: str = ""

    @property
    def state(self) -> dict[str, Any]:
        """The runner's state (see :mod:`aegis_mcp.control.snapshot`)."""
        return self.model.state

    def matches(self, *texts: Any) -> bool:
        """Whether the filter is empty or found (case-insensitively) in one of ``texts``."""
        if not self.filter:
            return True
        needle = self.filter.lower()
        return any(needle in str(text).lower() for text in texts if text is not None)


def put(widget: Static, content: Text | str, layout: bool = False) -> None:
    """Show ``content`` in ``widget`` unless it already shows exactly that. A panel's
    widgets keep their size (``layout`` only where the height follows the content), so
    an unchanged redraw costs no render and a changed one no layout pass."""
    text = content if isinstance(content, Text) else Text(content)
    key = (text.plain, tuple(text.spans), str(text.style))
    if getattr(widget, "_aegis_shown", None) == key:
        return
    widget._aegis_shown = key  # type: ignore[attr-defined]
    widget.update(text, layout=layout)


class Panel:
    """Mixin of the six panels: the state sections they draw, and their redraw."""

    SECTIONS: ClassVar[frozenset[str]] = frozenset()
    """Sections (or ``events``, ``netmon_events``) whose change calls for a redraw."""
    TIMED: ClassVar[bool] = False
    """Whether it shows ages or uptimes, so it is redrawn every second as well."""
    MIN_INTERVAL: ClassVar[float] = 0.0
    """Seconds between two redraws at most (the busy panels: nobody reads them faster, and
    each redraw of a full table costs milliseconds)."""
    drawn_at: float = 0.0
    pending: bool = False

    def show(self, view: View) -> None:
        """Draw ``view``."""
        raise NotImplementedError

    def subtitle(self, text: str) -> None:
        """Set the border's subtitle (setting it redraws the border, even to the same text)."""
        if self.border_subtitle != text:  # type: ignore[attr-defined]
            self.border_subtitle = text


Columns = Iterable[tuple[str, str, int | None]]
"""``(key, label, width)`` of each column; one width may be None: it takes what is left."""


class KeyedTable(DataTable):
    """A DataTable kept equal to a mapping of rows: cells change in place, so the cursor
    and the scroll position stay where the user left them. Column widths are fixed, and
    the one without a width fills the table (no sideways scrolling)."""

    BINDINGS: ClassVar = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]

    def __init__(self, columns: Columns, **kwargs: Any) -> None:
        # No padding: each fixed width includes the column's one space of separation.
        super().__init__(cursor_type="row", zebra_stripes=False, cell_padding=0, **kwargs)
        self._columns = list(columns)
        self._rows: dict[str, tuple[Any, ...]] = {}
        self.flex_width = 4
        """The width of the column that fills the table (cells longer than it are cut)."""

    def on_mount(self) -> None:
        self._add_columns()

    def on_resize(self) -> None:
        keep = self.selected_key
        self.clear(columns=True)
        self._add_columns()
        for key, cells in self._rows.items():
            self.add_row(*cells, key=key)
        if keep in self._rows:
            self.move_cursor(row=list(self._rows).index(keep))

    def _add_columns(self) -> None:
        fixed = sum(w or 0 for _k, _l, w in self._columns)
        # One cell for the scroll bar, which comes and goes with the rows.
        rest = self.flex_width = max(4, self.size.width - fixed - 1)
        for key, label, width in self._columns:
            self.add_column(label, key=key, width=width or rest)

    def sync(self, rows: Mapping[str, tuple[Any, ...]]) -> None:
        """Make the table show ``rows`` (key -> cells), in their order."""
        if list(rows) != [k for k in self._rows if k in rows] + [
            k for k in rows if k not in self._rows
        ]:
            # Rows would move (a filter, a new order): rebuild, keeping the cursor's row.
            self._rebuild(rows)
            return
        for key in [k for k in self._rows if k not in rows]:
            self.remove_row(key)
            del self._rows[key]
        for key, cells in rows.items():
            old = self._rows.get(key)
            if old is None:
                self.add_row(*cells, key=key)
            elif old != cells:
                pairs = zip(self._columns, old, cells, strict=True)
                for (column, _label, _width), before, after in pairs:
                    if before != after:
                        self.update_cell(key, column, after)
            self._rows[key] = cells

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor."""
        if not self._rows or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def _rebuild(self, rows: Mapping[str, tuple[Any, ...]]) -> None:
        keep = self.selected_key
        self.clear()
        self._rows = {}
        for key, cells in rows.items():
            self.add_row(*cells, key=key)
            self._rows[key] = cells
        if keep in self._rows:
            self.move_cursor(row=list(self._rows).index(keep))
