"""Finding and removing leftovers of every kind in :mod:`.registry`.

For each item: its owner alive, it is kept and nothing in it is touched; else,
when an item of its group must stay (an orphaned pool agent runs in it), the
whole group stays and only the processes that are nobody's are killed; else it is
removed (the processes still inside first). ``dry_run`` lists what would happen.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..leftovers import Leftover, kill_processes
from .registry import KINDS, Kind

ROOT_HINT = "needs root: sudo aegis-mcp cleanup"


@dataclass
class Report:
    """What a sweep found and did."""

    dry_run: bool
    removed: list[dict[str, Any]] = field(default_factory=list)
    """Removed (in a dry run: what would be)."""
    kept: list[dict[str, Any]] = field(default_factory=list)
    """Each with the ``reason`` it stays (and ``killed``: processes in it that were
    nobody's)."""
    errors: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    """Kinds not looked at, and why (not root)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as ``netmon_namespace_cleanup`` replies."""
        return {
            "dry_run": self.dry_run,
            "removed": self.removed,
            "kept": self.kept,
            "errors": self.errors,
            "skipped": self.skipped,
        }

    @property
    def killed(self) -> int:
        """Processes killed (or, in a dry run, that would be)."""
        return sum(len(e.get("processes", ())) for e in self.removed) + sum(
            len(e.get("killed", ())) for e in self.kept
        )


def sweep(
    dry_run: bool = False,
    *,
    quick: bool = False,
    runners: Collection[int] | None = None,
    kinds: Sequence[Kind] = KINDS,
) -> Report:
    """Remove (or with ``dry_run`` list) what dead runners left, kind by kind.

    ``quick``: skip a kind whose source says nothing of a dead runner can be there,
    without listing the live ones, and every kind not swept at start (a runner's start).
    ``runners``: only what these runner pids left.
    """
    report = Report(dry_run)
    root = os.geteuid() == 0
    for kind in kinds:
        if kind.needs_root and not root:
            report.skipped.append({"kind": kind.name, "what": kind.what, "reason": ROOT_HINT})
            continue
        try:
            if quick and not kind.at_start:
                continue
            source = kind.source()
            if quick and not source.possible():
                continue
            items = [i for i in source.find() if runners is None or i.owner_pid in runners]
        except Exception as exc:
            report.errors.append({"kind": kind.name, "error": f"cannot list {kind.what}: {exc}"})
            continue
        staying = _staying(items)
        for item in items:
            entry = item.to_dict()
            if item.group in staying:
                entry["reason"] = staying[item.group]
                if not item.owner_alive and item.processes:
                    entry.pop("processes")
                    entry["killed"] = list(item.processes)
                    if not dry_run:
                        kill_processes(item.processes)
                report.kept.append(entry)
                continue
            if not dry_run:
                try:
                    source.remove(item)
                except Exception as exc:
                    report.errors.append({**entry, "error": str(exc)})
                    continue
            report.removed.append(entry)
        if not dry_run:
            try:
                source.finish()
            except Exception as exc:
                report.errors.append({"kind": kind.name, "error": str(exc)})
    return report


def _staying(items: list[Leftover]) -> dict[str, str]:
    """The groups that stay, each with why."""
    staying: dict[str, str] = {}
    for item in items:
        if item.owner_alive:
            staying[item.group] = f"its runner (pid {item.owner_pid}) is alive"
        elif item.keep_reason:
            staying.setdefault(item.group, item.keep_reason)
    return staying
