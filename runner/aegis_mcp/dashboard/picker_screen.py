"""Several runners are up: pick the one to follow."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from . import format as fmt
from .messages import RunnerSummary


class PickerScreen(ModalScreen[int]):
    """A table of live runners; Enter follows the one under the cursor."""

    BINDINGS: ClassVar = [
        Binding("q", "app.quit", "Quit"),
        Binding("j", "cursor('down')", show=False),
        Binding("k", "cursor('up')", show=False),
    ]
    DEFAULT_CSS = """
    PickerScreen { align: center middle; }
    PickerScreen > Vertical {
        width: 90%; height: auto; max-height: 90%;
        border: round $accent; padding: 0 1; background: $surface;
    }
    PickerScreen DataTable { height: auto; max-height: 20; }
    """

    def __init__(self, runners: list[RunnerSummary]) -> None:
        super().__init__()
        self.runners = runners

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Several runners are up: pick one (↑/↓, Enter)")
            yield DataTable(cursor_type="row")

    def on_mount(self) -> None:
        self.query_one(Vertical).border_title = "Runners"
        table = self.query_one(DataTable)
        table.add_columns("pid", "agent", "cwd", "uptime", "sandbox")
        for runner in self.runners:
            table.add_row(
                str(runner.pid),
                runner.agent,
                fmt.shorten(runner.cwd, 50),
                fmt.duration(runner.uptime_secs),
                runner.sandbox,
                key=str(runner.pid),
            )
        table.focus()

    def action_cursor(self, direction: str) -> None:
        table = self.query_one(DataTable)
        (table.action_cursor_down if direction == "down" else table.action_cursor_up)()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.dismiss(int(event.row_key.value))
