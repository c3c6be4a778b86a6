"""Building an agent's command line for a first start, a restart or a headless task."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..hooks_lib import HooksInfo
from .profiles import AgentProfile
from .syntax import restart_args as syntax_restart_args


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
    settings_trusted: bool = False
    """``mcp_config`` passes the root-ownership check of ``settings`` agents (see
    ``agents/settings.py``): they are pointed at it by their variable."""
    settings_overlay: Path | None = None
    """Otherwise, the copy of the user's settings with the server added, which the
    hooks library shows ``settings`` agents instead of their settings file."""
    hooks: HooksInfo | None = None
    """The hooks library, for that redirect."""


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


def restart_args(
    profile: AgentProfile, args: list[str], prompt: str | None, session: str | None = None
) -> list[str]:
    """The agent's arguments for a restart of the session ``args`` started: its
    continue form (or, for a task started with its own ``session``, the profile's
    form that resumes that one), with ``prompt`` (if given) where the agent reads its
    prompt (see :func:`aegis_mcp.agents.syntax.restart_args`). A plain command's
    arguments are never rewritten. Raises PromptNotAccepted where no prompt can go."""
    if not profile.takes_prompt:
        return list(args)
    resume = None
    if session is not None and profile.resume_session_args:
        resume = tuple(a.replace("{session}", session) for a in profile.resume_session_args)
    return syntax_restart_args(profile.syntax, args, prompt, continue_args=resume)


def build_argv(profile: AgentProfile, launch: LaunchOptions, args: list[str]) -> list[str]:
    """The full argv that starts the agent with its arguments ``args``.

    Permission flags go right after the executable (unless already given); the MCP
    injection flags after the agent's arguments (before a ``--``), where a variadic
    option such as claude's ``--mcp-config`` cannot swallow a positional prompt.
    """
    head: list[str] = [launch.executable, *profile.command[1:]]
    args = list(args)
    if launch.skip_permissions:
        head.extend(a for a in profile.permission_args if a not in args)
    if launch.mcp_config is not None and profile.mcp_inject == "flag":
        extra = inject_args(profile, launch)
        at = args.index("--") if "--" in args else len(args)
        args = [*args[:at], *extra, *args[at:]]
    return [*head, *args]


def headless_task_args(
    profile: AgentProfile, task: str, max_iterations: int | None, session: str | None = None
) -> list[str]:
    """Agent arguments that run ``task`` headless (for pool agents), in the conversation
    ``session`` when the profile can name one."""
    args = [a.replace("{task}", task) for a in profile.headless_args]
    if max_iterations is not None:
        args.extend(a.replace("{n}", str(max_iterations)) for a in profile.max_iterations_args)
    if session is not None:
        args.extend(a.replace("{session}", session) for a in profile.session_args)
    return args
