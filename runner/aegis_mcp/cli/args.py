"""Splitting a command line into wrapper options and the agent's own arguments.

Wrapper options are recognised anywhere before ``--``; every other argument
goes to the agent unchanged and in order. This is hand-written rather than
left to typer/click: those would treat the agent's options as errors or take
an agent's prompt as the value of ``--netmon``, and their import would cost
~50 ms on every agent start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from ..netmon.schema import NETMON_MODES, NetmonMode
from ..runner.plan import RunRequest
from ..sandbox.kinds import SANDBOX_KINDS, SandboxKind


class UsageError(ValueError):
    """A wrapper option is wrong; the message is one line for the user."""


@dataclass
class WrapperOptions:
    """Options the runner itself takes."""

    watchdog_timeout: float | None = None
    no_watchdog: bool = False
    netmon: NetmonMode | None = None
    sandbox: SandboxKind = "none"
    inject_mcp: bool = True
    keep_root: bool = False
    allow: list[str] = field(default_factory=list)
    deny: list[str] = field(default_factory=list)


@dataclass
class ParsedRun:
    """An agent invocation: which agent, wrapper options and the agent's arguments."""

    agent: str
    options: WrapperOptions = field(default_factory=WrapperOptions)
    agent_args: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    """For ``run``: the command to supervise."""

    def request(self) -> RunRequest:
        """What to ask the runner for."""
        opts = self.options
        return RunRequest(
            agent=None if self.agent == "run" else self.agent,
            agent_args=tuple(self.agent_args),
            command=tuple(self.command),
            watchdog_timeout=opts.watchdog_timeout,
            watchdog=not opts.no_watchdog,
            netmon=opts.netmon,
            sandbox=opts.sandbox,
            inject_mcp=opts.inject_mcp,
            keep_root=opts.keep_root,
            allow=tuple(opts.allow),
            deny=tuple(opts.deny),
        )


def _value(name: str, arg: str, rest: list[str]) -> str:
    """The value of ``--name=VALUE`` or ``--name VALUE`` (popping it from ``rest``)."""
    if "=" in arg:
        return arg.split("=", 1)[1]
    if not rest or rest[0].startswith("--"):
        raise UsageError(f"{name} needs a value")
    return rest.pop(0)


def _apply(arg: str, rest: list[str], opts: WrapperOptions) -> bool:
    """Consume one wrapper option; False when ``arg`` is not one."""
    name = arg.split("=", 1)[0]
    if name == "--watchdog-timeout":
        raw = _value(name, arg, rest)
        try:
            secs = float(raw)
        except ValueError:
            raise UsageError(f"--watchdog-timeout takes seconds, got {raw!r}") from None
        if not 0.1 <= secs <= 7 * 24 * 3600:
            raise UsageError(
                f"--watchdog-timeout must be between 0.1 and 604800 seconds, got {raw}"
            )
        opts.watchdog_timeout = secs
    elif arg == "--no-watchdog":
        opts.no_watchdog = True
    elif name == "--netmon":
        # Optional value: only the `=` form, so `--netmon PROMPT` leaves PROMPT to the agent.
        mode = arg.split("=", 1)[1] if "=" in arg else "auto"
        if mode not in NETMON_MODES:
            raise UsageError(f"--netmon must be one of {', '.join(NETMON_MODES)}, got {mode!r}")
        opts.netmon = cast(NetmonMode, mode)
    elif name == "--sandbox":
        kind = _value(name, arg, rest)
        if kind not in SANDBOX_KINDS:
            raise UsageError(f"--sandbox must be one of {', '.join(SANDBOX_KINDS)}, got {kind!r}")
        opts.sandbox = cast(SandboxKind, kind)
    elif name in ("--allow", "--deny"):
        spec = _value(name, arg, rest)
        (opts.allow if name == "--allow" else opts.deny).append(spec)
    elif arg == "--no-inject-mcp":
        opts.inject_mcp = False
    elif arg == "--keep-root":
        opts.keep_root = True
    else:
        return False
    return True


def parse_agent_invocation(argv: list[str]) -> ParsedRun:
    """Parse ``[wrapper options] AGENT [wrapper options and agent args] [-- agent args]``."""
    opts = WrapperOptions()
    rest = list(argv)
    agent: str | None = None
    agent_args: list[str] = []
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            if agent is None:
                raise UsageError("name an agent before '--'")
            agent_args.extend(rest)
            break
        if _apply(arg, rest, opts):
            continue
        if agent is None:
            if arg.startswith("-"):
                raise UsageError(f"unknown option {arg!r} (see aegis-mcp --help)")
            agent = arg
        else:
            agent_args.append(arg)
    if agent is None:
        raise UsageError("no agent named (see aegis-mcp --help)")
    return ParsedRun(agent=agent, options=opts, agent_args=agent_args)


def parse_run_command(argv: list[str]) -> ParsedRun:
    """Parse ``run [wrapper options] -- CMD [ARGS...]`` (the ``--`` may be left out)."""
    opts = WrapperOptions()
    rest = list(argv)
    while rest:
        arg = rest[0]
        if arg == "--":
            rest.pop(0)
            break
        if not arg.startswith("-"):
            break
        rest.pop(0)
        if not _apply(arg, rest, opts):
            raise UsageError(f"unknown wrapper option {arg!r}; put the command after '--'")
    if not rest:
        raise UsageError("run needs a command: aegis-mcp run [options] -- CMD [ARGS...]")
    return ParsedRun(agent="run", options=opts, command=rest)
