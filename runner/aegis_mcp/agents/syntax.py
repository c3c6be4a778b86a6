"""An agent's command line as data: its options, subcommands and where the prompt goes.

A :class:`CommandSyntax` describes one level of a command line (the agent itself, or
one of its subcommands such as ``codex exec``): which options take a value, which
take every following word, which option or position holds the prompt, what makes a
session headless and how a restart continues the conversation there. With it an
argument list is parsed into an :class:`Invocation` and written back in the form a
restart needs, so that a new CLI version is a change to the tables in
``profiles.py`` (or the config file), not to code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CommandSyntax:
    """One level of an agent's command line."""

    value_options: frozenset[str] = frozenset()
    """Options that take the next word as their value (``--model X``)."""
    optional_value_options: frozenset[str] = frozenset()
    """Options that take the next word as their value unless it is an option
    (claude's ``--resume [ID]``, ``--debug [FILTER]``)."""
    variadic_options: frozenset[str] = frozenset()
    """Options that take every following word that is not an option (claude's
    ``--mcp-config A B``): a positional prompt must not follow one."""
    prompt_options: frozenset[str] = frozenset()
    """Options whose value is the prompt (gemini ``-p``, aider ``--message``)."""
    positional_prompt: bool = True
    """Whether the first positional argument is the prompt."""
    headless_options: frozenset[str] = frozenset()
    """Options whose presence makes the session headless (claude ``-p``)."""
    headless: bool = False
    """Being at this level makes the session headless (``codex exec``)."""
    continue_args: tuple[str, ...] = ()
    """What a restart at this level adds, after the options, to continue the
    conversation (``--continue``; ``resume --last``, a subcommand)."""
    continue_in_headless: bool = True
    """Whether ``continue_args`` also apply when the session is headless."""
    resume_options: frozenset[str] = frozenset()
    """Options that pick a conversation; a restart drops them (with their values) for
    ``continue_args``."""
    prompt_form: tuple[str, ...] = ("{prompt}",)
    """How a restart gives a prompt where the session had none, interactive: ``()``
    when this level cannot take one (the restart is refused with a clear error)."""
    headless_prompt_form: tuple[str, ...] = ("{prompt}",)
    """The same for a headless session."""
    resumes: bool = False
    """This subcommand itself picks a conversation (``codex exec resume``): a restart
    replaces it by the parent level's ``continue_args``."""
    session_positional_unless: frozenset[str] = frozenset()
    """With ``resumes``: the first positional names a session unless one of these
    flags (``--last``) is given; the prompt is the positional after it."""
    subcommands: Mapping[str, CommandSyntax] = field(default_factory=dict, hash=False, compare=True)
    """Subcommands by name, each with its own syntax."""

    def takes_value(self, option: str) -> bool:
        """Whether ``option`` (without ``=VALUE``) takes the next word as its value."""
        return option in self.value_options or option in self.prompt_options


class PromptNotAccepted(ValueError):
    """A restart asked for a prompt where the agent's command line has no place for one."""


@dataclass
class Level:
    """The arguments of one level of a parsed command line."""

    name: str
    """The subcommand's word (empty for the agent itself)."""
    syntax: CommandSyntax
    options: list[list[str]] = field(default_factory=list)
    """Each option with its values, as they were written."""


@dataclass
class Invocation:
    """An agent's arguments, parsed with its :class:`CommandSyntax`."""

    levels: list[Level]
    prompt: str | None = None
    prompt_option: str | None = None
    """The option that held the prompt (None: it was positional)."""
    prompt_group: list[str] | None = None
    session: str | None = None
    """A session named by a ``resumes`` subcommand's positional."""
    extra: list[str] = field(default_factory=list)
    """Positional arguments after the prompt."""

    @property
    def headless(self) -> bool:
        """Whether these arguments run the agent headless."""
        for level in self.levels:
            if level.syntax.headless:
                return True
            for group in level.options:
                name = _option_name(group[0])
                if name in level.syntax.headless_options:
                    return True
        return False


def _is_option(arg: str) -> bool:
    return arg.startswith("-") and arg != "-" and arg != "--"


def _option_name(arg: str) -> str:
    return arg.split("=", 1)[0]


def _values_after(syntax: CommandSyntax, name: str, rest: list[str]) -> int:
    """How many of the words ``rest`` after option ``name`` are its values."""
    free = 0
    while free < len(rest) and not _is_option(rest[free]) and rest[free] != "--":
        free += 1
    if name in syntax.variadic_options:
        return free
    if syntax.takes_value(name):
        return min(1, len(rest))
    if name in syntax.optional_value_options:
        return min(1, free)
    return 0


def parse(root: CommandSyntax, args: list[str]) -> Invocation:
    """``args`` (without the executable) parsed level by level."""
    inv = Invocation([Level("", root)])
    level = inv.levels[0]
    positionals: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            positionals.extend(args[i + 1 :])
            break
        if _is_option(arg):
            name = _option_name(arg)
            count = 0 if "=" in arg else _values_after(level.syntax, name, args[i + 1 :])
            group = args[i : i + 1 + count]
            i += 1 + count
            if name in level.syntax.prompt_options:
                inv.prompt_option, inv.prompt_group = name, group
                inv.prompt = group[1] if len(group) > 1 else arg.partition("=")[2]
            level.options.append(group)
            continue
        if not positionals and arg in level.syntax.subcommands:
            level = Level(arg, level.syntax.subcommands[arg])
            inv.levels.append(level)
        else:
            positionals.append(arg)
        i += 1
    syntax = level.syntax
    if syntax.resumes and positionals:
        named = any(_option_name(g[0]) in syntax.session_positional_unless for g in level.options)
        if not named:
            inv.session = positionals.pop(0)
    if positionals and syntax.positional_prompt and inv.prompt_option is None:
        inv.prompt = positionals.pop(0)
    inv.extra = positionals
    return inv


def restart_args(
    root: CommandSyntax,
    args: list[str],
    prompt: str | None,
    continue_args: tuple[str, ...] | None = None,
) -> list[str]:
    """The arguments that continue the session ``args`` started, with ``prompt``
    (``continue_args``, when given, stand for the last level's continue form).

    Options that picked a conversation give way to the level's continue form; the
    new prompt replaces the old one where the agent reads it. Without a new prompt an
    interactive session drops its first prompt (its conversation is continued, not
    asked again) and a headless one keeps it (it cannot run without one). Options are
    kept; each level's options come before its subcommand, so a continue subcommand
    (``resume --last``) can follow them.
    """
    inv = parse(root, args)
    headless = inv.headless
    levels = inv.levels
    if len(levels) > 1 and levels[-1].syntax.resumes:
        # `codex exec resume ...`: its own options stay, after the parent's form.
        resumed = levels.pop()
        carried = [g for g in resumed.options if not _picks_conversation(resumed.syntax, g)]
    else:
        carried = []
    last = levels[-1].syntax
    out: list[str] = []
    for level in levels:
        if level.name:
            out.append(level.name)
        kept = [
            g
            for g in level.options
            if not _picks_conversation(level.syntax, g) and g is not inv.prompt_group
        ]
        # List options first, so that what follows them (another option, a continue
        # subcommand) ends their list; the order within each kind is kept.
        kept.sort(key=lambda g: _option_name(g[0]) not in level.syntax.variadic_options)
        for group in kept:
            out.extend(group)
    continuing = last.continue_args if continue_args is None else continue_args
    if continuing and (last.continue_in_headless or not headless):
        out.extend(continuing)
    for group in carried:
        out.extend(group)
    wanted = prompt if prompt is not None else (inv.prompt if headless else None)
    if wanted is not None:
        if inv.prompt_option is not None:
            out.extend([inv.prompt_option, wanted])
        elif inv.prompt is not None:
            out.extend(_positional(last, out, wanted))
        else:
            form = last.headless_prompt_form if headless else last.prompt_form
            if not form:
                mode = "a headless" if headless else "an interactive"
                raise PromptNotAccepted(f"this agent takes no new prompt in {mode} session")
            if form == ("{prompt}",):
                out.extend(_positional(last, out, wanted))
            else:
                out.extend(a.replace("{prompt}", wanted) for a in form)
    out.extend(inv.extra)
    return out


def _picks_conversation(syntax: CommandSyntax, group: list[str]) -> bool:
    return _option_name(group[0]) in syntax.resume_options


def _positional(syntax: CommandSyntax, before: list[str], value: str) -> list[str]:
    """``value`` as a positional after ``before``, behind ``--`` if an option would
    otherwise take it as one of its values."""
    swallowing = False
    for arg in before:
        if _is_option(arg):
            swallowing = _option_name(arg) in syntax.variadic_options and "=" not in arg
        elif arg in syntax.subcommands:
            swallowing = False
    return ["--", value] if swallowing or (value.startswith("-") and value != "-") else [value]
