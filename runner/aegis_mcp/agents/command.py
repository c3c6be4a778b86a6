"""Building an agent's command line for a first start, a restart or a headless task."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .profiles import AgentProfile


@dataclass(frozen=True)
class LaunchOptions:
    """What the runner decided about a launch, independent of the agent's own arguments."""

    executable: str
    """Absolute path of the profile's executable, as found on PATH."""
    mcp_config: Path | None = None
    """Overlay config to inject with the profile's flag (None: no flag injection)."""
    skip_permissions: bool = True
    mcp_server: dict[str, Any] | None = None
    """The injected server (``command``, ``args``, ``env``), for profiles that take it inline."""


def inject_args(profile: AgentProfile, launch: LaunchOptions) -> list[str]:
    """The profile's MCP injection arguments with the placeholders filled in."""
    server = launch.mcp_server or {}
    env = server.get("env", {})
    values = {
        "{config}": str(launch.mcp_config),
        "{command}": json.dumps(server.get("command", "")),
        "{args}": json.dumps(server.get("args", [])),
        # A TOML inline table; JSON strings are valid TOML basic strings.
        "{env}": "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in env.items()) + "}",
    }
    out = []
    for arg in profile.mcp_inject_args:
        for key, value in values.items():
            arg = arg.replace(key, value)
        out.append(arg)
    return out


def resolve_executable(name: str, path: str | None = None) -> str | None:
    """Absolute path of ``name`` (absolute names are checked as they are)."""
    if os.path.isabs(name):
        return name if os.access(name, os.X_OK) and os.path.isfile(name) else None
    found = shutil.which(name, path=path)
    return os.path.abspath(found) if found else None


def not_runnable(name: str, path: str | None = None) -> str:
    """Why ``name`` did not resolve to an executable, as the end of a sentence."""
    if os.sep in name:
        candidates = [name]
    else:
        search = path if path is not None else os.environ.get("PATH", os.defpath)
        candidates = [os.path.join(d, name) for d in search.split(os.pathsep) if d]
    found = next((c for c in candidates if os.path.lexists(c)), None)
    if found is None:
        return "does not exist" if os.sep in name else "was not found on PATH"
    where = "" if found == name else f"was found on PATH as {found}, which "
    if not os.path.exists(found):
        return f"{where}is a symbolic link to nothing"
    if os.path.isdir(found):
        return f"{where}is a directory, not a program"
    if not os.path.isfile(found):
        return f"{where}is not a regular file"
    return f"{where}is not executable (no execute permission)"


def _is_option(arg: str) -> bool:
    return arg.startswith("-") and arg != "-"


def _option_name(arg: str) -> str:
    return arg.split("=", 1)[0]


def positional_prompt_index(profile: AgentProfile, args: list[str]) -> int | None:
    """Index of the positional prompt in ``args``, skipping options and their values."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return i + 1 if i + 1 < len(args) else None
        if _is_option(arg):
            name = _option_name(arg)
            if name in profile.variadic_options:
                i += 1
                while i < len(args) and not _is_option(args[i]):
                    i += 1
                continue
            if name in profile.value_options and "=" not in arg:
                i += 2
                continue
            i += 1
            continue
        return i
    return None


def replace_prompt(profile: AgentProfile, args: list[str], prompt: str | None) -> list[str]:
    """``args`` with the prompt replaced by ``prompt`` (added where there was none).

    ``None`` removes the prompt instead.
    """
    args = list(args)
    if profile.prompt_option:
        for i, arg in enumerate(args):
            if arg == profile.prompt_option and i + 1 < len(args):
                return (
                    args[:i] + args[i + 2 :]
                    if prompt is None
                    else [*args[: i + 1], prompt, *args[i + 2 :]]
                )
            if arg.startswith(profile.prompt_option + "="):
                return (
                    args[:i] + args[i + 1 :]
                    if prompt is None
                    else [*args[:i], f"{profile.prompt_option}={prompt}", *args[i + 1 :]]
                )
        return args if prompt is None else [*args, profile.prompt_option, prompt]
    index = positional_prompt_index(profile, args)
    if index is not None:
        if prompt is None:
            del args[index]
            if args and args[-1] == "--":
                args.pop()
        else:
            args[index] = prompt
        return args
    if prompt is None:
        return args
    # Put it where no variadic option can swallow it: after an explicit `--`,
    # or after a `--` that we add.
    if "--" in args or not any(_is_option(a) for a in args):
        return [*args, prompt]
    return [*args, "--", prompt]


def strip_resume_options(profile: AgentProfile, args: list[str]) -> list[str]:
    """``args`` without options that pick a conversation (a restart continues instead)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.extend(args[i:])
            break
        name = _option_name(arg)
        if name in profile.resume_options:
            takes_value = name in profile.resume_value_options and "=" not in arg
            i += 1
            # `--resume` may be given without an id (pick interactively).
            if takes_value and i < len(args) and not _is_option(args[i]):
                i += 1
            continue
        out.append(arg)
        i += 1
    return out


def _insert_before_separator(args: list[str], extra: list[str]) -> list[str]:
    if "--" in args:
        at = args.index("--")
        return [*args[:at], *extra, *args[at:]]
    return [*args, *extra]


def build_argv(
    profile: AgentProfile,
    launch: LaunchOptions,
    user_args: list[str],
    *,
    restart: bool = False,
    prompt: str | None = None,
) -> list[str]:
    """The full argv for starting the agent.

    On a restart, conversation-picking options are replaced by the profile's
    continue arguments and ``prompt`` (if given) replaces the original prompt.
    Without a new prompt, an interactive session drops its first prompt (the
    conversation it started is continued, not asked again) while a headless
    one keeps it, since it cannot run without one. Everything else the user
    passed is kept, so a headless session stays headless. The MCP config
    flag goes after the user's options: claude's ``--mcp-config`` is variadic
    and would swallow a positional prompt that followed it.
    """
    args = list(user_args)
    head: list[str] = [launch.executable, *profile.command[1:]]
    if restart:
        headless = profile.is_headless(args)
        if profile.continue_args and (profile.continue_in_headless or not headless):
            args = strip_resume_options(profile, args)
            head.extend(profile.continue_args)
        if profile.takes_prompt and (prompt is not None or not headless):
            args = replace_prompt(profile, args, prompt)
    if launch.skip_permissions:
        head.extend(a for a in profile.permission_args if a not in args)
    if launch.mcp_config is not None and profile.mcp_inject == "flag":
        args = _insert_before_separator(args, inject_args(profile, launch))
    return [*head, *args]


def headless_task_args(profile: AgentProfile, task: str, max_iterations: int | None) -> list[str]:
    """Agent arguments that run ``task`` headless (for pool agents)."""
    args = [a.replace("{task}", task) for a in profile.headless_args]
    if max_iterations is not None:
        args.extend(a.replace("{n}", str(max_iterations)) for a in profile.max_iterations_args)
    return args
