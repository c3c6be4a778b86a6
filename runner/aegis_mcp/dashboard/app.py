"""The dashboard app: composes the screens and starts the one runner link.

Toolong's shape: the app is thin. :class:`~.link.RunnerLink` finds the runner
and folds its stream into the model; the screens draw the model; the app turns
the link's messages into screen changes and the user's keys into control
operations (each asked for and confirmed where it changes the run).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.widgets import Input

from ..config import DashboardSettings
from ..control.protocol import ControlError
from .confirm_screen import ConfirmScreen
from .help_screen import HelpScreen
from .link import RunnerLink
from .log_panel import LogPanel
from .main_screen import MainScreen
from .messages import Attached, ChooseRunner, Disconnected, HealthAlert, NoRunner, Refresh
from .model import DashboardModel
from .notify import Notifier
from .panel import View
from .picker_screen import PickerScreen
from .pool_panel import PoolPanel
from .waiting_screen import WaitingScreen

TICK_SECS = 1.0
BY = "aegis-mcp dashboard"


class DashboardApp(App[None]):
    """``aegis-mcp dashboard``: one runner's state, live."""

    TITLE = "aegis-mcp dashboard"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar = [
        Binding("q", "quit", "Quit"),
        Binding("escape", "back", "Quit", show=False),
        Binding("h,question_mark", "help", "Help"),
        Binding("r", "restart", "Restart"),
        Binding("s", "stop_agent", "Stop agent"),
        Binding("w", "toggle_watchdog", "Watchdog"),
        Binding("p", "pause", "Pause"),
        Binding("slash", "filter", "Filter"),
        Binding("z", "zoom", "Zoom", show=False),
        Binding("j", "scroll_log(1)", show=False),
        Binding("k", "scroll_log(-1)", show=False),
    ]

    def __init__(
        self,
        pid: int | None = None,
        settings: DashboardSettings | None = None,
        clock: Callable[[], float] = time.time,
        link: RunnerLink | None = None,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.model = DashboardModel()
        self.link = link or RunnerLink(self.post_message, pid)
        self.link.bind(self.post_message, self.model)
        self.notifier = Notifier(settings or DashboardSettings(), self.bell, self.say)
        self.main = MainScreen()
        self.connection = "looking for a runner"
        self.paused = False
        self.filter = ""
        self._catch_up: Any = None

    # -- set-up ---------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.push_screen(self.main)
        self.run_worker(self.link.run(), name="runner-link", exclusive=True)
        self.set_interval(TICK_SECS, self._tick)

    def view(self) -> View:
        """What the panels draw now."""
        return View(self.model, self.clock(), self.filter)

    def redraw(self, everything: bool = False, timed: bool = False) -> None:
        """Draw what changed (all of it with ``everything``) unless paused."""
        if self.paused and not everything:
            return
        dirty = self.model.take_dirty()
        if everything:
            dirty |= {*self.model.state, "events", "netmon_events"}
        if not self.model.attached:
            return
        view = self.view()
        later = self.main.draw(
            view, dirty, timed or everything, self.connection, self.paused, force=everything
        )
        if later is not None and self._catch_up is None:
            self._catch_up = self.set_timer(later, self._caught_up)

    def _caught_up(self) -> None:
        self._catch_up = None
        self.redraw()

    def _tick(self) -> None:
        self.redraw(timed=True)

    def on_resize(self) -> None:
        self.call_after_refresh(self.redraw, True)

    def say(self, message: str, level: str = "warning") -> None:
        """A line of the dashboard's own in the log (a failed action, a notify error)."""
        self.model.add_log(
            {"ts": self.clock(), "kind": "dashboard", "level": level, "message": message}
        )
        self.redraw()

    # -- the link's messages --------------------------------------------------------------

    def on_no_runner(self, message: NoRunner) -> None:
        if self.model.attached:
            # A runner was followed: its last state stays up under "disconnected — waiting".
            return
        self.connection = "no runner"
        waiting = self.screen if isinstance(self.screen, WaitingScreen) else None
        if waiting is None:
            waiting = WaitingScreen()
            self.push_screen(waiting, lambda _result: None)
        self.call_after_refresh(waiting.show, message.history, message.history_error)

    def on_choose_runner(self, message: ChooseRunner) -> None:
        self._leave_side_screens()
        self.push_screen(PickerScreen(message.runners), self._picked)

    def _picked(self, pid: int | None) -> None:
        if pid is not None:
            self.link.choose(pid)

    def on_attached(self, message: Attached) -> None:
        self.connection = "live"
        self._leave_side_screens()
        self.redraw(everything=True)

    def on_refresh(self, message: Refresh) -> None:
        self.redraw()

    def on_disconnected(self, message: Disconnected) -> None:
        if not self.model.attached:
            return
        self.connection = f"disconnected — waiting (runner {message.pid}: {message.reason})"
        self.redraw(everything=True)

    def on_health_alert(self, message: HealthAlert) -> None:
        pid = (self.model.state.get("agent") or {}).get("pid")
        self.notifier.alert(message.alert, pid)
        self.notify(f"{message.alert.state}: {message.alert.reason}", title="primary agent")

    def _leave_side_screens(self) -> None:
        while isinstance(self.screen, WaitingScreen | PickerScreen):
            self.pop_screen()

    # -- keys -----------------------------------------------------------------------------

    def action_back(self) -> None:
        """Esc: close the filter or the zoom first, then quit."""
        if self.main.has_class("-filtering"):
            self._close_filter(clear=True)
        elif self.main.has_class("-zoomed"):
            self.main.toggle_zoom()
        else:
            self.exit()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.redraw(everything=True)

    def action_zoom(self) -> None:
        self.main.toggle_zoom()

    def action_scroll_log(self, lines: int) -> None:
        log = self.main.query_one(LogPanel)
        log.scroll_relative(y=lines, animate=False)

    def action_filter(self) -> None:
        self.main.add_class("-filtering")
        self.main.query_one("#filter", Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter = event.value.strip()
        self.redraw(everything=True)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._close_filter(clear=False)

    def _close_filter(self, clear: bool) -> None:
        field = self.main.query_one("#filter", Input)
        if clear:
            field.value = ""
            self.filter = ""
        self.main.remove_class("-filtering")
        self.main.query_one(PoolPanel).table.focus()
        self.redraw(everything=True)

    def action_restart(self) -> None:
        agent = self.model.state.get("agent") or {}
        if not self.link.connected:
            self.say("restart: not connected to a runner")
            return
        question = (
            f"Restart the primary agent ({agent.get('profile', '?')}, pid {agent.get('pid')})?\n"
            "It comes back with its conversation."
        )
        self.push_screen(ConfirmScreen(question), self._restart_confirmed)

    def _restart_confirmed(self, yes: bool | None) -> None:
        if yes:
            self._call("restart", "restart requested", reason="restart from the dashboard", by=BY)

    def action_stop_agent(self) -> None:
        agent_id = self.main.query_one(PoolPanel).selected
        agent = (self.model.state.get("pool_agents") or {}).get(agent_id or "")
        if agent is None:
            self.say("stop: select a pool agent first (Tab to the Agent Pool, ↑/↓)", "info")
            return
        question = (
            f"Stop pool agent {agent_id} ({agent.get('status')})?\n{agent.get('description', '')}"
        )
        self.push_screen(
            ConfirmScreen(question), lambda yes: yes and self._stop_confirmed(agent_id or "")
        )

    def _stop_confirmed(self, agent_id: str) -> None:
        self._call("agent_stop", f"stop of {agent_id} requested", agent_id=agent_id)

    def action_toggle_watchdog(self) -> None:
        watchdog = self.model.state.get("watchdog") or {}
        enabled = bool(watchdog.get("configured_enabled", watchdog.get("enabled", True)))
        word = "off" if enabled else "on"
        self._call("watchdog_configure", f"watchdog turned {word}", enabled=not enabled)

    @work(group="ops")
    async def _call(self, op: str, done: str, **args: Any) -> None:
        try:
            await self.link.call(op, **args)
        except ControlError as exc:
            self.say(f"{op} failed: {exc.message}", "error")
            return
        self.notify(done)

    def on_pool_panel_selected(self, message: PoolPanel.Selected) -> None:
        self._fetch_detail(message.agent_id)

    @work(group="detail", exclusive=True)
    async def _fetch_detail(self, agent_id: str) -> None:
        try:
            detail = await self.link.call("agent_status", agent_id=agent_id)
        except ControlError:
            return
        pool = self.main.query_one(PoolPanel)
        pool.details[agent_id] = detail
        pool.show_detail()
