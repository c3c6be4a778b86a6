"""``aegis-mcp dashboard [PID]``: a live view of a runner, in a second terminal.

A client of the control protocol like the MCP server (it imports nothing of the
runner): it follows the runner's ``subscribe`` stream. See :mod:`.app`.
"""

from __future__ import annotations

import sys

USAGE = """usage: aegis-mcp dashboard [PID]   (also: aegis-mcp --dashboard [PID])

Follow a running aegis-mcp runner: the primary agent, resources, the agent pool,
network activity, file locks and the event log, updated as they change.
PID picks a runner; without it the only runner is followed, a picker lists
several, and with none the dashboard waits for one (showing the pool's history).
Press h in the dashboard for its keys.
"""


def _fail(message: str) -> int:
    print(f"aegis-mcp: error: {message}", file=sys.stderr)
    return 2


def run_dashboard(args: list[str]) -> int:
    """Parse ``[PID]``, check it and the config, and run the app; returns the exit code."""
    if any(a in ("-h", "--help") for a in args):
        print(USAGE, end="")
        return 0
    if len(args) > 1:
        return _fail(f"dashboard takes at most one PID, got {' '.join(args)} (see --help)")
    pid = None
    if args:
        if not args[0].isdigit() or int(args[0]) <= 0:
            return _fail(f"dashboard takes a runner PID, got {args[0]!r} (see --help)")
        pid = int(args[0])
    from ..config import ConfigError, load_config
    from ..control.protocol import ControlError
    from ..paths import config_file

    try:
        settings = load_config(config_file()).dashboard
    except ConfigError as exc:
        return _fail(str(exc))
    if pid is not None:
        from .link import find_runners

        try:
            if pid not in {files.pid for files in find_runners()}:
                return _fail(f"no runner {pid} found (`aegis-mcp dashboard` lists the live ones)")
        except ControlError as exc:
            return _fail(exc.message)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return _fail("the dashboard needs a terminal (run it in one, not through a pipe)")
    from .app import DashboardApp

    DashboardApp(pid, settings).run()
    return 0
