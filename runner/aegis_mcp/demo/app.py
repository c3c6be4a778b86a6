"""Start-up and shutdown of the demo agent: parse, report, connect, run a mode, clean up."""

from __future__ import annotations

import contextlib
import io
import os
import sys

from aegis_mcp import __version__
from aegis_mcp.demo import report, scenario, signals
from aegis_mcp.demo.cli import USAGE, Options, UsageError, parse_args
from aegis_mcp.demo.conversation import Conversation
from aegis_mcp.demo.mcpconfig import ConfigError, ServerSpec, load_servers
from aegis_mcp.demo.output import Console, TextSink

# typing is not imported at run time (start-up cost); only type checkers look here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from aegis_mcp.demo.tools import ToolHub

SHUTDOWN_TIMEOUT = 3.0


def new_session_id() -> str:
    """A random UUID4 string (without importing uuid, which pulls in more modules)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _write_report(opts: Options, servers: list[ServerSpec], error: str | None) -> None:
    path = os.environ.get("AEGIS_DEMO_REPORT")
    if path:
        report.write(path, report.collect(opts, [s.name for s in servers], error))


def main(argv: list[str] | None = None) -> int:
    """Run the demo agent with Claude-style arguments; returns the exit code."""
    console = Console()
    args = sys.argv[1:] if argv is None else argv
    try:
        opts = parse_args(args)
    except UsageError as exc:
        # Still reported: a supervisor test wants to see the command line it got wrong.
        bare = Options()
        bare.argv = list(args)
        _write_report(bare, [], f"usage: {exc}")
        console.err(f"error: {exc}")
        return 1
    if opts.help:
        console.out(USAGE, end="")
        return 0
    if opts.version:
        console.out(f"{__version__} (aegis demo agent)")
        return 0
    console.json_stdout = opts.json_output
    sig = signals.install(console, opts.headless)
    if isinstance(sys.stdin, io.TextIOWrapper):
        # A stray byte from a terminal must not look like EOF to the prompt loop.
        sys.stdin.reconfigure(errors="replace")
    hub: ToolHub | None = None
    try:
        code, hub = _start(opts, console, sig)
    except SystemExit as exc:
        code = _exit_code(exc)
    sig.exiting = True
    if hub is not None and not hub.close(SHUTDOWN_TIMEOUT):
        # A server that ignores EOF and SIGTERM must not keep the agent alive; the MCP
        # thread is a daemon but may still be writing, so leave without finalisation.
        _flush()
        os._exit(code)
    return code


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def _start(opts: Options, console: Console, sig: signals.SignalState) -> tuple[int, ToolHub | None]:
    """Everything after argument parsing; returns the exit code and the hub to close."""
    for warning in opts.warnings:
        console.err(f"demo: {warning}")
    if opts.verbose and opts.ignored:
        console.err(f"demo: accepted and ignored: {' '.join(opts.ignored)}")
    cwd = os.getcwd()
    try:
        servers, config_warnings = load_servers(opts.mcp_config, cwd, opts.strict_mcp_config)
    except ConfigError as exc:
        _write_report(opts, [], f"invalid MCP configuration: {exc}")
        console.err(f"Error: Invalid MCP configuration: {exc}")
        return 1, None
    _write_report(opts, servers, None)
    for warning in config_warnings:
        console.err(f"demo: {warning}")
    spec = opts.scenario if opts.scenario is not None else os.environ.get("AEGIS_DEMO_SCENARIO")
    try:
        steps = scenario.parse(spec) if spec else []
    except scenario.ScenarioError as exc:
        console.err(f"demo: invalid scenario: {exc}")
        return 2, None
    conversation, log_problem = Conversation.open(cwd, opts.continuing)
    if log_problem:
        console.err(f"demo: {log_problem}")
    conversation.session_id = opts.resume or _last_session(conversation) or new_session_id()
    hub = _start_hub(servers, console, sig)
    # From here on the hub exists, so every exit path must hand it back for closing.
    try:
        return _run_mode(opts, console, sig, conversation, hub, steps), hub
    except SystemExit as exc:
        return _exit_code(exc), hub


def _last_session(conversation: Conversation) -> str | None:
    for turn in reversed(conversation.turns):
        session = turn.get("session_id")
        if isinstance(session, str) and session:
            return session
    return None


def _start_hub(
    servers: list[ServerSpec], console: Console, sig: signals.SignalState
) -> ToolHub | None:
    if not servers:
        return None
    # Imported only now: asyncio and the mcp SDK cost start-up time nobody else should pay.
    from aegis_mcp.demo.interactive import PROMPT
    from aegis_mcp.demo.tools import ToolHub

    def status(line: str) -> None:
        with console.lock:
            console.info(line)
            # A line printed over the prompt takes it away: show it again, as a TUI would.
            if sig.at_prompt and not console.json_stdout:
                console.out(PROMPT, end="")

    hub = ToolHub(servers, status)
    hub.start()
    return hub


def _run_mode(
    opts: Options,
    console: Console,
    sig: signals.SignalState,
    conversation: Conversation,
    hub: ToolHub | None,
    steps: list[scenario.Step],
) -> int:
    from aegis_mcp.demo.agent import Agent

    sink: TextSink
    if opts.json_output:
        from aegis_mcp.demo.headless import JsonSink

        model = opts.model or "aegis-demo"
        stream = opts.output_format == "stream-json"
        sink = JsonSink(console, stream, conversation.session_id, model)
    else:
        sink = TextSink(console)
    agent = Agent(opts, console, sink, conversation, sig, hub)
    if opts.headless:
        from aegis_mcp.demo import headless

        return headless.run(agent, steps)
    from aegis_mcp.demo import interactive

    return interactive.run(agent, steps)
