"""Agent profiles: what each supported agent needs to be supervised.

A profile is data: which executable, how to continue a conversation, which
flags skip permission prompts, how to hand it an MCP server, how to run a task
headless, and what its screen looks like to the watchdog (``watch``). Built-ins
cover the agents named in the design; the config file adds or overrides
profiles (see ``aegis_mcp.config``).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Literal

McpInject = Literal["flag", "preload", "none"]

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
    continue_args: tuple[str, ...] = ()
    """Put first on a restart so the agent picks its conversation up again."""
    continue_in_headless: bool = True
    """Whether ``continue_args`` also apply to a headless session."""
    resume_options: tuple[str, ...] = ()
    """Options that already pick a conversation; replaced by ``continue_args`` on restart."""
    resume_value_options: tuple[str, ...] = ()
    """Those of ``resume_options`` that take a value (e.g. ``--resume ID``)."""
    permission_args: tuple[str, ...] = ()
    """Flags that stop the agent asking before every action."""
    permission_refused_as_root: bool = False
    """The agent exits when given ``permission_args`` as root (DESIGN.md fact 2)."""
    mcp_inject: McpInject = "none"
    """How the aegis-mcp MCP server reaches the agent: arguments (``flag``), the hooks
    library's ``.mcp.json`` redirect (``preload``), or not at all."""
    mcp_inject_args: tuple[str, ...] = ()
    """With ``flag``: arguments added after the user's, see INJECT_PLACEHOLDERS."""
    headless_args: tuple[str, ...] = ()
    """Arguments that run one task without a terminal; ``{task}`` is the task text."""
    max_iterations_args: tuple[str, ...] = ()
    """Arguments bounding a headless run; ``{n}`` is the limit."""
    headless_markers: tuple[str, ...] = ()
    """Options whose presence means the session is headless."""
    value_options: frozenset[str] = field(default_factory=frozenset)
    """Options that take a separate value, so that the positional prompt can be found."""
    variadic_options: frozenset[str] = field(default_factory=frozenset)
    """Options that take every following non-option argument (claude's ``--mcp-config``)."""
    prompt_option: str = ""
    """Where the agent takes its prompt through an option (aider ``--message``) instead of
    a positional argument."""
    takes_prompt: bool = True
    """False for arbitrary commands (``aegis-mcp run``): their arguments are never rewritten."""
    watch: WatchRules = WatchRules()
    """The watchdog's knowledge of the agent's screen (BUILTIN_WATCH_RULES below)."""

    def skips_permissions(self, as_root: bool) -> bool:
        """Whether to pass ``permission_args`` to an agent running as root or not."""
        return not (as_root and self.permission_refused_as_root)

    def is_headless(self, args: list[str]) -> bool:
        """Whether these agent arguments ask for a headless session."""
        return any(
            arg == marker or arg.startswith(marker + "=")
            for arg in args
            for marker in self.headless_markers
        )


_CLAUDE_VALUE_OPTIONS = frozenset(
    {
        "--model",
        "--fallback-model",
        "--output-format",
        "--input-format",
        "--max-turns",
        "--append-system-prompt",
        "--system-prompt",
        "--permission-mode",
        "--permission-prompt-tool",
        "--session-id",
        "--settings",
        "--setting-sources",
        "--agents",
        "--json-schema",
        "--max-budget-usd",
    }
)

_CLAUDE_LIKE = dict(
    continue_args=("--continue",),
    resume_options=("--continue", "-c", "--resume", "-r"),
    resume_value_options=("--resume", "-r"),
    permission_args=("--dangerously-skip-permissions",),
    permission_refused_as_root=True,
    mcp_inject="flag",
    mcp_inject_args=("--mcp-config", "{config}"),
    headless_args=("-p", "{task}", "--output-format", "stream-json", "--verbose"),
    max_iterations_args=("--max-turns", "{n}"),
    headless_markers=("-p", "--print", "--output-format"),
    value_options=_CLAUDE_VALUE_OPTIONS,
    # Claude's list options take every following non-option argument.
    variadic_options=frozenset(
        {
            "--mcp-config",
            "--add-dir",
            "--allowedTools",
            "--allowed-tools",
            "--disallowedTools",
            "--disallowed-tools",
            "--tools",
            "--betas",
            "--plugin-dir",
        }
    ),
)

BUILTIN_PROFILES: dict[str, AgentProfile] = {
    "claude": AgentProfile(name="claude", command=("claude",), **_CLAUDE_LIKE),  # type: ignore[arg-type]
    # The bundled stand-in agent speaks claude's command line.
    "demo": AgentProfile(
        name="demo",
        command=(sys.executable, "-m", "aegis_mcp.demo"),
        **{**_CLAUDE_LIKE, "value_options": _CLAUDE_VALUE_OPTIONS | {"--scenario"}},  # type: ignore[arg-type]
    ),
    "aider": AgentProfile(
        name="aider",
        command=("aider",),
        # Aider restores its chat history from .aider.chat.history.md by itself.
        continue_args=("--restore-chat-history",),
        permission_args=("--yes-always",),
        # Aider has no MCP client: nothing to inject.
        mcp_inject="none",
        headless_args=("--message", "{task}", "--yes-always", "--no-pretty"),
        headless_markers=("--message", "-m", "--message-file", "-f"),
        value_options=frozenset(
            {"--model", "--message", "-m", "--message-file", "-f", "--api-key", "--edit-format"}
        ),
        prompt_option="--message",
    ),
    "cursor": AgentProfile(
        name="cursor",
        command=("cursor-agent",),
        continue_args=("--resume",),
        resume_options=("--resume",),
        permission_args=("--force",),
        # cursor-agent reads .cursor/mcp.json, which the hooks do not redirect.
        mcp_inject="none",
        headless_args=("-p", "{task}", "--output-format", "stream-json"),
        headless_markers=("-p", "--print", "--output-format"),
        value_options=frozenset({"--model", "--output-format", "--api-key"}),
    ),
    "codex": AgentProfile(
        name="codex",
        command=("codex",),
        # `codex resume --last` picks the previous session of this directory;
        # `codex exec` has no such form.
        continue_args=("resume", "--last"),
        continue_in_headless=False,
        permission_args=("--dangerously-bypass-approvals-and-sandbox",),
        # Codex takes config overrides as TOML values; it gives MCP servers a
        # reduced environment, so the socket is passed explicitly.
        mcp_inject="flag",
        mcp_inject_args=(
            "-c",
            "mcp_servers.aegis-mcp.command={command}",
            "-c",
            "mcp_servers.aegis-mcp.args={args}",
            "-c",
            "mcp_servers.aegis-mcp.env={env}",
        ),
        headless_args=("exec", "{task}"),
        headless_markers=("exec",),
        value_options=frozenset({"--model", "-m", "--config", "-c", "--profile", "-p", "--cd"}),
    ),
    "gemini": AgentProfile(
        name="gemini",
        command=("gemini",),
        permission_args=("--yolo",),
        # Gemini CLI reads MCP servers from .gemini/settings.json only.
        mcp_inject="none",
        headless_args=("-p", "{task}"),
        headless_markers=("-p", "--prompt"),
        value_options=frozenset({"--model", "-m", "--prompt", "-p"}),
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
