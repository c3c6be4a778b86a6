"""System: CPU and memory bars of the primary agent's process tree and of the machine."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from . import format as fmt
from .panel import Panel, View, put

LABEL = 12
"""Width of ``agent CPU  `` and the like."""
FIGURES = 18
"""Width kept for the numbers after a bar."""


class SystemPanel(Panel, Static, can_focus=True):
    """Resource use, as the runner samples it (once a second)."""

    SECTIONS = frozenset({"system"})

    def on_mount(self) -> None:
        self.border_title = "System"

    def show(self, view: View) -> None:
        system: dict[str, Any] | None = view.state.get("system")
        machine: dict[str, Any] = (system or {}).get("machine") or {}
        tree: dict[str, Any] | None = (system or {}).get("agent_tree")
        cpus = max(1, int(machine.get("cpus") or 1))
        total_mb = float(machine.get("memory_total_mb") or 0.0)
        text = Text(no_wrap=True, overflow="ellipsis")
        if system is None:
            text.append("agent      not sampled yet\n\n", style="dim")
        elif tree is None:
            text.append("agent      no agent process\n\n", style="dim")
        else:
            cpu = float(tree.get("cpu_percent", 0.0))
            rss = float(tree.get("rss_mb", 0.0))
            procs = tree.get("processes", 0)
            self._line(text, "agent CPU", cpu / (100 * cpus), f"{cpu:.0f}% · {procs} proc")
            share = rss / total_mb if total_mb else 0.0
            self._line(text, "agent mem", share, fmt.megabytes(rss))
        if not machine:
            text.append("machine    not sampled yet", style="dim")
        else:
            cpu = float(machine.get("cpu_percent", 0.0))
            used = float(machine.get("memory_used_mb", 0.0))
            self._line(text, "host CPU", cpu / 100, f"{cpu:.0f}% of {cpus}")
            share = used / total_mb if total_mb else 0.0
            figures = f"{fmt.megabytes(used)}/{fmt.megabytes(total_mb)}"
            self._line(text, "host mem", share, figures, last=True)
        put(self, text)

    def _line(
        self, text: Text, label: str, fraction: float, figures: str, last: bool = False
    ) -> None:
        width = max(4, self.content_region.width - LABEL - FIGURES)
        text.append(f"{label:<{LABEL}}")
        text.append(fmt.bar(fraction, width), style="bold" if fraction >= 0.8 else "")
        text.append(f" {figures}" + ("" if last else "\n"))
