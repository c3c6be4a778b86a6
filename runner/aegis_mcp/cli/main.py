"""Entry point of the ``aegis-mcp`` command.

Agent runs (``aegis-mcp claude ...``, ``aegis-mcp run -- CMD``) take a fast
path that imports neither typer nor the MCP SDK: the wrapper sits in front of
every agent start. Everything else is a typer application (``app.py``).
"""

from __future__ import annotations

import gc
import sys

# First arguments that belong to the typer application rather than naming an agent.
APP_COMMANDS = {
    "doctor",
    "cleanup",
    "restart",
    "status",
    "netns",
    "image",
    "version",
    "help",
    "--help",
    "-h",
    "--install-completion",
    "--show-completion",
}


def _fail(message: str) -> int:
    print(f"aegis-mcp: error: {message}", file=sys.stderr)
    return 2


def import_asyncio_without_tls() -> None:
    """Import asyncio without the ``ssl`` module it imports for TLS transports.

    ``ssl`` loads OpenSSL's libraries, a few milliseconds of every agent start, for transports
    the runner never opens. asyncio imports it as optional (``try: import ssl`` ... ``except
    ImportError``): a ``None`` in ``sys.modules`` makes that import fail for the moment, and
    removing it afterwards lets anything that needs ``ssl`` later import it as usual.
    """
    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]
    try:
        import asyncio  # noqa: F401
    finally:
        del sys.modules["ssl"]


class CollectionHeldOff:
    """No garbage collection while the runner's modules load: the collector would walk the
    growing heap of module objects again and again (the dataclasses' generated functions,
    the typing objects), about 8 % of an agent start's CPU, to find almost nothing. On exit
    what was loaded is frozen (kept out of every later collection: it lives as long as the
    runner) and collection resumes as it was."""

    def __enter__(self) -> None:
        self._was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *_exc: object) -> None:
        gc.freeze()
        if self._was_enabled:
            gc.enable()


def run_agent(argv: list[str]) -> int:
    """Parse an agent invocation, check it, and supervise the agent."""
    with CollectionHeldOff():
        import_asyncio_without_tls()
        import asyncio

        from ..config import ConfigError, load_config
        from ..paths import UnsafeDirectoryError, config_file
        from ..runner.plan import PlanError, make_plan
        from .args import UsageError, parse_agent_invocation, parse_run_command

        try:
            parsed = (
                parse_run_command(argv[1:]) if argv[0] == "run" else parse_agent_invocation(argv)
            )
            config = load_config(config_file())
            plan = make_plan(parsed.request(), config)
        except (UsageError, PlanError, ConfigError) as exc:
            return _fail(str(exc))
        from ..runner.supervisor import Supervisor

    try:
        return asyncio.run(Supervisor(plan).run())
    except (UnsafeDirectoryError, PermissionError) as exc:
        return _fail(str(exc))


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the fast agent path or the typer application."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = argv[0] if argv else "--help"
    if first in ("--version", "-V"):
        from .version import print_version

        return print_version()
    if first in ("--mcp-server", "mcp-server"):
        # The agent waits for this server at every (re)start: no typer import.
        from ..mcp_server.front import serve

        return serve()
    if first in ("--dashboard", "dashboard"):
        # Textual, not typer: the dashboard parses its one optional PID itself.
        from ..dashboard import run_dashboard

        return run_dashboard(argv[1:])
    if first in APP_COMMANDS:
        pass
    else:
        return run_agent(argv)
    return run_app(argv)


def run_app(argv: list[str]) -> int:
    """Run a typer command; a usage mistake is one ``aegis-mcp: error:`` line, exit 2,
    like every other mistake (not the CLI library's usage screen)."""
    from typer import Abort
    from typer.exceptions import TyperException

    from .app import app

    try:
        code = app(args=argv, prog_name="aegis-mcp", standalone_mode=False)
    except Abort:
        return _fail("aborted")
    except TyperException as exc:
        context = getattr(exc, "ctx", None)
        where = context.command_path if context is not None else "aegis-mcp"
        return _fail(f"{exc.format_message()} (see `{where} --help`)")
    return code if isinstance(code, int) else 0


def entry() -> None:
    """Console-script entry: exit with main()'s code."""
    sys.exit(main())
