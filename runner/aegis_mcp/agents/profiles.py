"""Agent profiles: what each supported agent needs to be supervised.

A profile is data: which executable, its command line (:class:`CommandSyntax`: options,
subcommands, where the prompt goes, how a restart continues), which flags skip
permission prompts, how to hand it an MCP server, how to run a task headless, and
what its screen looks like to the watchdog (``watch``). Built-ins cover the agents
named in the design, checked against the CLI versions in ``VERIFIED`` (the end-to-end
tests in ``tests/e2e/`` run them); the config file adds or overrides profiles (see
``aegis_mcp.config``).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Literal

from .syntax import CommandSyntax, Invocation, parse

McpInject = Literal["flag", "preload", "settings", "none"]

# Placeholders of ``mcp_inject_args``: the overlay file, and the server's
# command, arguments and environment as TOML/JSON values.
INJECT_PLACEHOLDERS = ("{config}", "{command}", "{args}", "{env}")


@dataclass(frozen=True)
class WatchRules:
    """What the watchdog knows of an agent's screen: regular expressions (Python syntax)
    matched against the rendered text of each terminal line.

    Kept as data so that it can be calibrated against a real CLI by looking at
    ``watchdog_status`` (its ``signals.screen`` reading) and changed in the config file.
    """

    prompt: tuple[str, ...] = ()
    """Any of these on the cursor's line (or ``prompt_context_lines`` above it): the agent
    shows its input prompt, waiting for the user."""
    prompt_context_lines: int = 0
    busy: tuple[str, ...] = ()
    """Any of these anywhere on the screen: the agent says it is working (its spinner
    line). Shown with no progress past the timeout, the agent is stalled."""
    noise: tuple[str, ...] = ()
    """Spans redrawn in place that are not progress (a spinner line, a token counter);
    masked before screens are compared, beside the built-in timers and clocks."""


@dataclass(frozen=True)
class AgentProfile:
    """How to run, restart and inject into one kind of agent."""

    name: str
    command: tuple[str, ...]
    """Executable (looked up on PATH unless absolute) and any fixed leading arguments."""
    syntax: CommandSyntax = field(default_factory=CommandSyntax)
    """The agent's command line; its fields may also be set at the top of a config
    table (``continue_args = [...]``)."""
    permission_args: tuple[str, ...] = ()
    """Flags that stop the agent asking before every action."""
    permission_refused_as_root: bool = False
    """The agent exits when given ``permission_args`` as root (DESIGN.md fact 2)."""
    mcp_inject: McpInject = "none"
    """How the aegis-mcp MCP server reaches the agent: arguments (``flag``), the hooks
    library's ``.mcp.json`` redirect (``preload``), a settings file (``settings``: see
    ``mcp_settings_env`` and ``mcp_settings_file``), or not at all."""
    mcp_inject_args: tuple[str, ...] = ()
    """With ``flag``: arguments added after the user's, see INJECT_PLACEHOLDERS."""
    mcp_settings_env: str = ""
    """With ``settings``, for a runner that is root: the variable naming an extra
    settings file the agent merges, which it reads only when root owns it (gemini's
    ``GEMINI_CLI_SYSTEM_DEFAULTS_PATH``)."""
    mcp_settings_file: str = ""
    """With ``settings``, otherwise: the user's settings file, whose reads the hooks
    library redirects to a copy with the aegis-mcp server added; ``{home}`` is the
    value of ``mcp_settings_home_env`` or the agent's HOME."""
    mcp_settings_home_env: str = ""
    headless_args: tuple[str, ...] = ()
    """Arguments that run one task without a terminal; ``{task}`` is the task text."""
    max_iterations_args: tuple[str, ...] = ()
    """Arguments bounding a headless run; ``{n}`` is the limit."""
    session_args: tuple[str, ...] = ()
    """Arguments that give a headless task a conversation of its own, ``{session}`` a new
    UUID, so that its restart resumes that conversation and not the latest one in its
    directory (which may be the user's session, or another agent's)."""
    resume_session_args: tuple[str, ...] = ()
    """What the restart of such a task continues with instead of the continue form."""
    takes_prompt: bool = True
    """False for arbitrary commands (``aegis-mcp run``): their arguments are never rewritten."""
    watch: WatchRules = WatchRules()
    """The watchdog's knowledge of the agent's screen (BUILTIN_WATCH_RULES below)."""

    def skips_permissions(self, as_root: bool) -> bool:
        """Whether to pass ``permission_args`` to an agent running as root or not."""
        return not (as_root and self.permission_refused_as_root)

    def parse(self, args: list[str]) -> Invocation:
        """The agent's arguments, parsed with its syntax."""
        return parse(self.syntax, args)

    def is_headless(self, args: list[str]) -> bool:
        """Whether these agent arguments ask for a headless session."""
        return self.takes_prompt and self.parse(args).headless


VERIFIED = {
    "claude": "@anthropic-ai/claude-code 2.1.332",
    "codex": "@openai/codex 0.171.0",
    "gemini": "@google/gemini-cli 0.61.0",
    "aider": "aider-chat 0.86.2",
}
"""The CLI versions these profiles were checked against, end to end (``tests/e2e/``)."""


def _opts(names: str) -> frozenset[str]:
    """A set of option names from one string, space-separated."""
    return frozenset(names.split())


# -- Claude Code -------------------------------------------------------------------

_CLAUDE = CommandSyntax(
    value_options=_opts(
        "--agent --agents --append-system-prompt --append-system-prompt-file "
        "--autocompact --debug-file --effort --environment --fallback-model "
        "--input-format --json-schema --max-budget-usd --max-turns --model -n --name "
        "--output-format --permission-mode --permission-prompts --permission-prompt-tool "
        "--plugin-url --remote-control-session-name-prefix --session-id --setting-sources "
        "--settings --system-prompt --system-prompt-file --system-prompt-snapshot"
    ),
    optional_value_options=_opts(
        "--cloud -d --debug --from-pr --prompt-suggestions --remote-control -r --resume "
        "--teleport -w --worktree"
    ),
    # Claude's list options take every following word that is not an option.
    variadic_options=_opts(
        "--add-dir --allowedTools --allowed-tools --betas --disallowedTools "
        "--disallowed-tools --file --mcp-config --plugin-dir --tools"
    ),
    headless_options=_opts("-p --print --output-format"),
    continue_args=("--continue",),
    resume_options=_opts("--continue -c --resume -r --session-id --from-pr"),
    subcommands={
        name: CommandSyntax(positional_prompt=False)
        for name in _opts(
            "agents attach auth auto-mode doctor gateway import install logs mcp plugin "
            "plugins purge respawn rm setup-token stop kill ultrareview update upgrade"
        )
    },
)

_CLAUDE_LIKE = dict(
    permission_args=("--dangerously-skip-permissions",),
    permission_refused_as_root=True,
    mcp_inject="flag",
    # After the user's arguments: --mcp-config is variadic (DESIGN.md fact 1).
    mcp_inject_args=("--mcp-config", "{config}"),
    headless_args=("-p", "{task}", "--output-format", "stream-json", "--verbose"),
    max_iterations_args=("--max-turns", "{n}"),
    session_args=("--session-id", "{session}"),
    resume_session_args=("--resume", "{session}"),
)

# -- Codex CLI ---------------------------------------------------------------------

_CODEX_COMMON = _opts(
    "-c --config --enable --disable --remote --remote-auth-token-env -m --model "
    "--local-provider -p --profile -s --sandbox -C --cd --add-dir -a "
    "--ask-for-approval --thread-source --cyber-access-program"
)
# `resume --last [PROMPT]`: --last stands for the session id, so the word after is the prompt.
_CODEX_RESUME = CommandSyntax(
    value_options=_CODEX_COMMON | _opts("-i --image --output-schema -o --output-last-message"),
    resumes=True,
    session_positional_unless=_opts("--last"),
    resume_options=_opts("--last --all"),
)
_CODEX_EXEC = CommandSyntax(
    value_options=_CODEX_COMMON | _opts("--output-schema --color -o --output-last-message"),
    variadic_options=_opts("-i --image"),
    headless=True,
    # `codex exec resume --last PROMPT` continues a headless session headless.
    continue_args=("resume", "--last"),
    subcommands={
        "resume": _CODEX_RESUME,
        "fork": CommandSyntax(positional_prompt=False),
        "review": CommandSyntax(positional_prompt=False),
        "help": CommandSyntax(positional_prompt=False),
    },
)
_CODEX = CommandSyntax(
    value_options=_CODEX_COMMON,
    variadic_options=_opts("-i --image"),
    continue_args=("resume", "--last"),
    subcommands={
        "exec": _CODEX_EXEC,
        "e": _CODEX_EXEC,
        "resume": dataclasses.replace(_CODEX_RESUME, value_options=_CODEX_COMMON),
        **{
            name: CommandSyntax(positional_prompt=False)
            for name in _opts(
                "agents review login logout mcp plugin app-server remote-control completion "
                "update doctor sandbox debug apply a queue archive delete migrate-rollouts "
                "migrate-nfs-db unarchive fork cloud exec-server features help"
            )
        },
    },
)

# -- Gemini CLI --------------------------------------------------------------------

_GEMINI = CommandSyntax(
    value_options=_opts(
        "-m --model --approval-mode -r --resume --session-file --session-id "
        "--delete-session -o --output-format"
    ),
    optional_value_options=_opts("-w --worktree"),
    variadic_options=_opts(
        "--policy --admin-policy --allowed-mcp-server-names --allowed-tools -e "
        "--extensions --include-directories"
    ),
    # -p PROMPT is headless; -i PROMPT (or a positional query) starts interactive.
    prompt_options=_opts("-p --prompt -i --prompt-interactive"),
    headless_options=_opts("-p --prompt"),
    continue_args=("--resume", "latest"),
    resume_options=_opts("-r --resume --session-file --session-id"),
    prompt_form=("-i", "{prompt}"),
    headless_prompt_form=("-p", "{prompt}"),
    subcommands={
        name: CommandSyntax(positional_prompt=False)
        for name in ("mcp", "extensions", "extension", "skills", "skill", "hooks", "hook", "gemma")
    },
)

# -- Aider -------------------------------------------------------------------------

_AIDER = CommandSyntax(
    value_options=_opts(
        "--model --api-key --edit-format --message-file -f --openai-api-key "
        "--openai-api-base --anthropic-api-key --weak-model --editor-model "
        "--chat-history-file --input-history-file --read --file --map-tokens --encoding "
        "-c --config --env-file --set-env"
    ),
    prompt_options=_opts("--message -m --msg"),
    # Aider's positional arguments are files to edit, never a prompt.
    positional_prompt=False,
    headless_options=_opts("--message -m --msg --message-file -f"),
    # Aider restores its chat history from .aider.chat.history.md.
    continue_args=("--restore-chat-history",),
    resume_options=_opts("--restore-chat-history --no-restore-chat-history"),
    # --message makes aider answer once and exit: no prompt for an interactive session.
    prompt_form=(),
    headless_prompt_form=("--message", "{prompt}"),
)

# -- Cursor's CLI (unverified: not on the package registries) ----------------------

_CURSOR = CommandSyntax(
    value_options=_opts("--model --output-format --api-key"),
    optional_value_options=_opts("--resume"),
    headless_options=_opts("-p --print --output-format"),
    continue_args=("--resume",),
    resume_options=_opts("--resume"),
    subcommands={
        name: CommandSyntax(positional_prompt=False)
        for name in ("login", "logout", "status", "mcp", "update", "ls", "create-chat")
    },
)

BUILTIN_PROFILES: dict[str, AgentProfile] = {
    "claude": AgentProfile(name="claude", command=("claude",), syntax=_CLAUDE, **_CLAUDE_LIKE),  # type: ignore[arg-type]
    # The bundled stand-in agent speaks claude's command line.
    "demo": AgentProfile(
        name="demo",
        command=(sys.executable, "-m", "aegis_mcp.demo"),
        syntax=dataclasses.replace(_CLAUDE, value_options=_CLAUDE.value_options | {"--scenario"}),
        **_CLAUDE_LIKE,  # type: ignore[arg-type]
    ),
    "aider": AgentProfile(
        name="aider",
        command=("aider",),
        syntax=_AIDER,
        permission_args=("--yes-always",),
        # Aider has no MCP client: nothing to inject.
        mcp_inject="none",
        headless_args=("--message", "{task}", "--yes-always", "--no-pretty"),
    ),
    "cursor": AgentProfile(
        name="cursor",
        command=("cursor-agent",),
        syntax=_CURSOR,
        permission_args=("--force",),
        # cursor-agent reads .cursor/mcp.json, which the hooks do not redirect.
        mcp_inject="none",
        headless_args=("-p", "{task}", "--output-format", "stream-json"),
    ),
    "codex": AgentProfile(
        name="codex",
        command=("codex",),
        syntax=_CODEX,
        permission_args=("--dangerously-bypass-approvals-and-sandbox",),
        # Config overrides are TOML values. Codex gives MCP servers a reduced
        # environment, so the socket is passed explicitly, and the agent's identity
        # by name (`env_vars`: its values stay in the environment, out of argv);
        # `required` makes `codex exec` wait for the server before its first turn
        # (else a server slower than about a second to start is missing from the
        # tool list).
        mcp_inject="flag",
        mcp_inject_args=(
            "-c",
            "mcp_servers.aegis-mcp.command={command}",
            "-c",
            "mcp_servers.aegis-mcp.args={args}",
            "-c",
            "mcp_servers.aegis-mcp.env={env}",
            "-c",
            'mcp_servers.aegis-mcp.env_vars=["AEGIS_MCP_AGENT_ID", "AEGIS_MCP_AGENT_TOKEN"]',
            "-c",
            "mcp_servers.aegis-mcp.required=true",
        ),
        # Pool agents may work in a directory that is not a git repository.
        headless_args=("exec", "--skip-git-repo-check", "{task}"),
    ),
    "gemini": AgentProfile(
        name="gemini",
        command=("gemini",),
        syntax=_GEMINI,
        permission_args=("--yolo",),
        mcp_inject="settings",
        mcp_settings_env="GEMINI_CLI_SYSTEM_DEFAULTS_PATH",
        mcp_settings_file="{home}/.gemini/settings.json",
        mcp_settings_home_env="GEMINI_CLI_HOME",
        headless_args=("-p", "{task}"),
    ),
}

# What the watchdog knows of each built-in agent's screen, kept apart from the argv
# tables above. Claude Code 2.1's spinner line reads "✻ Herding… (8m 39s · ↓ 834 tokens)"
# (older ones add "esc to interrupt"); its glyph cycles through · ✢ ✳ ✶ ✻ ✽ (* on some
# terminals, a blinking ● with reduced motion); "✻ Worked for 1m 52s" is the finished
# form. The stand-in agent draws the same. Codex, Gemini and Aider are first readings of
# their documented TUIs, to be calibrated against the real CLIs.
_SPINNER_LINE = r"^\s*[·✢✳✶✻✽*●]\s+\S.*…\s*\(\d+[hms]"
_CLAUDE_WATCH = WatchRules(
    prompt=(r"^\s*│?\s*>(\s|$)",),
    prompt_context_lines=6,
    busy=(_SPINNER_LINE, r"(?i)\besc to interrupt\b"),
    noise=(_SPINNER_LINE + r".*$", r"[↑↓]\s?[\d.,]+k?\s?tokens", r"Tip: .*$"),
)
BUILTIN_WATCH_RULES: dict[str, WatchRules] = {
    "claude": _CLAUDE_WATCH,
    "demo": dataclasses.replace(_CLAUDE_WATCH, prompt=(r"^> ",), prompt_context_lines=0),
    "codex": WatchRules(
        prompt=(r"^\s*[\u203a>](\s|$)",),
        prompt_context_lines=4,
        busy=(r"(?i)\besc to interrupt\b",),
        noise=(r"^\s*\S?\s*Working.*$",),
    ),
    "gemini": WatchRules(
        prompt=(r"^\s*│?\s*>(\s|$)",),
        prompt_context_lines=4,
        busy=(r"(?i)\besc to cancel\b",),
        noise=(r"^\s*[\u2800-\u28ff].*\(esc to cancel.*$",),
    ),
    "aider": WatchRules(prompt=(r"^(\w+ )?> ",)),
}
for _name, _rules in BUILTIN_WATCH_RULES.items():
    BUILTIN_PROFILES[_name] = dataclasses.replace(BUILTIN_PROFILES[_name], watch=_rules)
