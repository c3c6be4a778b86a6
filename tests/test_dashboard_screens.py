"""The dashboard's main screen as pictures (pytest-textual-snapshot), at 80x24 and 160x48 and
without colour, from a fixed state: ``data/dashboard_state.json`` is the first message of a
real runner's ``subscribe`` (``aegis-mcp demo --netmon=ebpf --deny ...`` with a restart, four
pool agents, two locks, allowed and refused connections), its times moved to a fixed moment
and its pids renumbered, so that the pictures only change when the drawing does.

``pytest tests/test_dashboard_screens.py --snapshot-update`` redraws them after an intended
change; the README's pictures in ``docs/`` are copies that ``test_docs_show_the_current_screens``
keeps current.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from aegis_mcp.dashboard.app import DashboardApp
from aegis_mcp.dashboard.link import RunnerLink
from aegis_mcp.dashboard.messages import Attached
from helpers import REPO

STATE = Path(__file__).parent / "data" / "dashboard_state.json"
NOW = 1796000000.5
"""The fixed moment the pictures are drawn at (the state was written half a second before)."""
SNAPSHOTS = Path(__file__).parent / "__snapshots__" / "test_dashboard_screens"
DOCS = REPO / "docs"


class ReplayLink(RunnerLink):
    """Folds a recorded stream instead of a live one, then stays quiet."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        super().__init__(lambda _m: None)
        self._messages = messages

    async def run(self) -> None:
        for message in self._messages:
            self.model.fold(message)
        self._post(Attached(self._messages[0]["state"]["runner"]["pid"]))


def make_app() -> DashboardApp:
    return DashboardApp(clock=lambda: NOW, link=ReplayLink([json.loads(STATE.read_text())]))


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """Clock times drawn the same wherever the test runs."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def drawn(pilot) -> None:
    await pilot.pause()
    # The pool's first row is highlighted once the table is drawn: its detail follows.
    pilot.app.main.query_one("#pool-table").move_cursor(row=1)
    await pilot.pause()
    await pilot.pause()


def test_main_screen_80x24(snap_compare):
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=drawn)


def test_main_screen_160x48(snap_compare):
    assert snap_compare(make_app(), terminal_size=(160, 48), run_before=drawn)


def test_main_screen_without_colour(snap_compare, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=drawn)


def test_docs_show_the_current_screens():
    for name in ("test_main_screen_80x24", "test_main_screen_160x48"):
        snapshot = SNAPSHOTS / f"{name}.svg"
        copy = DOCS / f"dashboard-{name.rsplit('_', 1)[1]}.svg"
        assert copy.exists(), f"docs/ lacks {copy.name}: copy {snapshot}"
        assert copy.read_text() == snapshot.read_text(), f"{copy} is older than {snapshot}"


def _panel_of(app: DashboardApp) -> str | None:
    """The id of the panel that holds the focus."""
    widget = app.focused
    while widget is not None and "panel" not in widget.classes:
        widget = widget.parent  # type: ignore[assignment]
    return widget.id if widget is not None else None


def test_the_original_keys_help_tab_scroll_zoom_and_escape():
    from aegis_mcp.dashboard.help_screen import HelpScreen
    from aegis_mcp.dashboard.log_panel import LogPanel

    async def main() -> tuple[DashboardApp, dict[str, Any]]:
        app = make_app()
        seen: dict[str, Any] = {}
        async with app.run_test(size=(80, 24)) as pilot:
            await drawn(pilot)
            # h and ? open the help; Esc and q close it (q there does not quit).
            for key, close in (("h", "escape"), ("question_mark", "q")):
                await pilot.press(key)
                assert isinstance(app.screen, HelpScreen), key
                await pilot.press(close)
                assert app.screen is app.main, close
            # Tab visits every panel that takes the focus, Shift+Tab goes back the same way.
            forward = [_panel_of(app)]
            for _ in range(6):
                await pilot.press("tab")
                forward.append(_panel_of(app))
            backward = [forward[-1]]
            for _ in range(6):
                await pilot.press("shift+tab")
                backward.append(_panel_of(app))
            seen["forward"], seen["backward"] = forward, backward
            # j and k scroll the log, from wherever the focus is.
            log = app.main.query_one(LogPanel)
            assert log.max_scroll_y > 1, "the recorded log must overflow its panel"
            log.scroll_home(animate=False)
            await pilot.pause()
            for key in "jj":
                await pilot.press(key)
            await pilot.pause()
            seen["after j"] = log.scroll_y
            await pilot.press("k")
            await pilot.pause()
            seen["after k"] = log.scroll_y
            # z shows the focused panel alone; Esc first brings the others back, then quits.
            log.focus()
            await pilot.press("z")
            seen["zoomed"] = app.main.has_class("-zoomed") and log.has_class("-zoom")
            await pilot.press("escape")
            seen["unzoomed"] = not app.main.has_class("-zoomed")
            assert app.return_code is None, "the first Esc only closed the zoom"
            await pilot.press("escape")
        return app, seen

    app, seen = asyncio.run(main())
    panels = {"primary", "system", "pool", "network", "locks", "log"}
    assert set(seen["forward"]) == panels and seen["forward"][0] == seen["forward"][6]
    assert seen["backward"] == seen["forward"][::-1]
    assert (seen["after j"], seen["after k"]) == (2, 1)
    assert seen["zoomed"] and seen["unzoomed"]
    assert app.return_code == 0


class DetailLink(ReplayLink):
    """The replay, answering ``agent_status`` as a runner would for a worktree agent."""

    def __init__(self, messages: list[dict[str, Any]], detail: dict[str, Any]) -> None:
        super().__init__(messages)
        self.detail = detail
        self.asked: list[tuple[str, dict[str, Any]]] = []

    async def call(self, op: str, **args: Any) -> Any:
        self.asked.append((op, args))
        return {**self.detail, "agent_id": args.get("agent_id")}


def test_host_names_and_a_selected_agents_worktree_branch_and_result():
    state = json.loads(STATE.read_text())
    stats = state["state"]["netmon_stats"]
    stats["top_targets"][0]["host"] = "api.example.test"
    detail = {
        "worktree": "/w/159c83d8",
        "branch": "aegis/159c83d8",
        "result": "summary written to NOTES.md",
    }
    link = DetailLink([state], detail)

    async def main() -> str:
        app = DashboardApp(clock=lambda: NOW, link=link)
        async with app.run_test(size=(160, 48)) as pilot:
            await drawn(pilot)
            for _ in range(20):
                await pilot.pause()
                text = "\n".join(s.text for s in app.screen._compositor.render_strips())
                if "branch aegis/159c83d8" in text:
                    break
            await pilot.press("q")
        return text

    text = asyncio.run(main())
    port = stats["top_targets"][0]["port"]
    assert f"api.example.test:{port}" in text, "a known host name is shown, not its address"
    assert ("agent_status", {"agent_id": "159c83d8"}) in link.asked
    assert f"worktree {detail['worktree']}  branch {detail['branch']}" in text
    assert f"result {detail['result']}" in text
