"""Command-line parsing that mirrors Claude Code's (commander.js) rules.

argparse is not used: Claude's variadic options (``--mcp-config A B``) swallow every
following argument that does not start with ``-``, an option with an optional value
(``--resume [id]``) takes the next argument only when it is not an option, and unknown
options are warned about rather than fatal. Those rules are exactly what the supervisor
must get right when it builds an agent's command line, so the stand-in enforces them.
"""

from __future__ import annotations

OUTPUT_FORMATS = ("text", "json", "stream-json")

# Option kinds: "flag" takes nothing, "value" exactly one argument, "optional" the next
# argument unless it looks like an option, "variadic" every following non-option.
_OPTIONS: dict[str, tuple[str, str]] = {
    "--continue": ("continue_", "flag"),
    "--resume": ("resume", "optional"),
    "--print": ("headless", "flag"),
    "--dangerously-skip-permissions": ("skip_permissions", "flag"),
    "--model": ("model", "value"),
    "--max-turns": ("max_turns", "value"),
    "--output-format": ("output_format", "value"),
    "--input-format": ("input_format", "value"),
    "--mcp-config": ("mcp_config", "variadic"),
    "--strict-mcp-config": ("strict_mcp_config", "flag"),
    "--verbose": ("verbose", "flag"),
    "--scenario": ("scenario", "value"),
    "--help": ("help", "flag"),
    "--version": ("version", "flag"),
}

# Real Claude options the demo accepts and ignores, so that their values are not taken
# for the prompt (a supervisor may pass any of them through).
_IGNORED: dict[str, str] = {
    "--debug": "optional",
    "--ide": "flag",
    "--include-partial-messages": "flag",
    "--replay-user-messages": "flag",
    "--fork-session": "flag",
    "--allow-dangerously-skip-permissions": "flag",
    "--disable-slash-commands": "flag",
    "--permission-mode": "value",
    "--append-system-prompt": "value",
    "--system-prompt": "value",
    "--session-id": "value",
    "--settings": "value",
    "--setting-sources": "value",
    "--fallback-model": "value",
    "--agent": "value",
    "--agents": "value",
    "--permission-prompt-tool": "value",
    "--json-schema": "value",
    "--max-budget-usd": "value",
    "--allowedTools": "variadic",
    "--allowed-tools": "variadic",
    "--disallowedTools": "variadic",
    "--disallowed-tools": "variadic",
    "--tools": "variadic",
    "--add-dir": "variadic",
    "--betas": "variadic",
    "--plugin-dir": "variadic",
}

_SHORT = {
    "-c": "--continue",
    "-r": "--resume",
    "-p": "--print",
    "-h": "--help",
    "-v": "--version",
    "-d": "--debug",
}


class UsageError(Exception):
    """The command line cannot be honoured (Claude exits 1 on these)."""


class Options:
    """Everything the command line asked for."""

    def __init__(self) -> None:
        self.argv: list[str] = []
        self.continue_ = False
        self.resume: str | None = None
        self.headless = False
        self.skip_permissions = False
        self.model: str | None = None
        self.max_turns: int | None = None
        self.output_format = "text"
        self.input_format: str | None = None
        self.mcp_config: list[str] = []
        self.strict_mcp_config = False
        self.verbose = False
        self.scenario: str | None = None
        self.help = False
        self.version = False
        self.prompt: str | None = None
        # Arguments the demo did not use, reported as one-line warnings.
        self.warnings: list[str] = []
        # Known Claude options that were accepted and ignored.
        self.ignored: list[str] = []

    @property
    def json_output(self) -> bool:
        """Whether stdout carries JSON (``--print`` with a JSON output format)."""
        return self.headless and self.output_format != "text"

    @property
    def continuing(self) -> bool:
        """Whether the previous conversation in this directory is resumed."""
        return self.continue_ or self.resume is not None


def _looks_like_option(arg: str) -> bool:
    return arg.startswith("-") and arg != "-"


def _expand_short_cluster(arg: str) -> list[str] | None:
    """``-pc`` -> ``["-p", "-c"]`` when every letter is a known flag, like commander."""
    letters = arg[1:]
    if len(letters) < 2 or arg.startswith("--"):
        return None
    expanded = [f"-{ch}" for ch in letters]
    if all(_OPTIONS.get(_SHORT.get(s, ""), ("", ""))[1] == "flag" for s in expanded):
        return expanded
    return None


def parse_args(argv: list[str]) -> Options:
    """Parse a Claude-style command line.

    Raises:
        UsageError: an option is missing its value or the value is invalid.
    """
    opts = Options()
    opts.argv = list(argv)
    args = list(argv)
    positionals: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positionals.extend(args[i:])
            break
        if not _looks_like_option(arg):
            positionals.append(arg)
            continue
        cluster = _expand_short_cluster(arg)
        if cluster is not None:
            args[i:i] = cluster
            continue
        name, eq, inline = arg.partition("=")
        name = _SHORT.get(name, name)
        inline_value = inline if eq else None
        if name in _OPTIONS:
            dest, kind = _OPTIONS[name]
        elif name in _IGNORED:
            dest, kind = "", _IGNORED[name]
        else:
            opts.warnings.append(f"ignoring unknown option {arg}")
            continue
        values, i = _take_values(name, kind, inline_value, args, i)
        if not dest:
            opts.ignored.append(name)
            continue
        _store(opts, name, dest, kind, values)
    if positionals:
        opts.prompt = positionals[0]
        for extra in positionals[1:]:
            opts.warnings.append(f"ignoring extra argument {extra!r}")
    return opts


def _take_values(
    name: str, kind: str, inline: str | None, args: list[str], i: int
) -> tuple[list[str], int]:
    """Consume an option's values from ``args`` starting at ``i``; return them and the new i."""
    if kind == "flag":
        if inline is not None:
            raise UsageError(f"option '{name}' does not take a value")
        return [], i
    if inline is not None:
        return [inline], i
    if kind == "value":
        if i >= len(args):
            raise UsageError(f"option '{name}' argument missing")
        return [args[i]], i + 1
    if kind == "optional":
        if i < len(args) and not _looks_like_option(args[i]):
            return [args[i]], i + 1
        return [], i
    values: list[str] = []
    while i < len(args) and not _looks_like_option(args[i]):
        values.append(args[i])
        i += 1
    if not values:
        raise UsageError(f"option '{name}' argument missing")
    return values, i


def _store(opts: Options, name: str, dest: str, kind: str, values: list[str]) -> None:
    if kind == "flag":
        setattr(opts, dest, True)
    elif kind == "variadic":
        getattr(opts, dest).extend(values)
    elif dest == "resume":
        # A bare --resume opens a picker in Claude; the demo simply continues.
        opts.resume = values[0] if values else ""
    elif dest == "max_turns":
        try:
            opts.max_turns = int(values[0])
        except ValueError:
            raise UsageError(f"option '{name}' needs a number, got {values[0]!r}") from None
        if opts.max_turns < 0:
            raise UsageError(f"option '{name}' must not be negative")
    elif dest == "output_format":
        if values[0] not in OUTPUT_FORMATS:
            choices = ", ".join(OUTPUT_FORMATS)
            raise UsageError(f"option '{name}' argument {values[0]!r} is invalid ({choices})")
        opts.output_format = values[0]
    else:
        setattr(opts, dest, values[0])


USAGE = """\
Usage: python -m aegis_mcp.demo [options] [prompt]

aegis-mcp's stand-in agent: accepts Claude Code's flags, answers every prompt with
"demo: you said: ...", and runs scripted scenarios for tests and demonstrations.

Options:
  -c, --continue                 continue the previous conversation in this directory
  -r, --resume [id]              same as --continue
  -p, --print                    headless: answer the prompt and exit
  --output-format FORMAT         text, json or stream-json (with --print)
  --max-turns N                  at most N tool-calling steps per turn
  --mcp-config VALUE...          MCP server configs (file paths or inline JSON)
  --strict-mcp-config            ignore .mcp.json in the working directory
  --model NAME                   recorded and reported
  --dangerously-skip-permissions recorded and reported
  --scenario SPEC                run scenario steps (also env AEGIS_DEMO_SCENARIO)
  --verbose                      diagnostics on stderr
  -h, --help / -v, --version

Interactive commands: /tool NAME [JSON], /tools, /scenario SPEC, /help, /exit [CODE].
The scenario grammar is described in aegis_mcp.demo.scenario.
"""
