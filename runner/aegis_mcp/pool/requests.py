"""Checking an ``agent_spawn`` request before anything is made for it."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..agents.profiles import AgentProfile
from ..control import validate
from ..privileges import AgentUser, can_enter
from ..safe_paths import PSEUDO_FILESYSTEMS, filesystem_type
from .sandbox import SandboxFor, check_sandbox
from .worktree import check_isolation

MAX_DESCRIPTION_CHARS = 100_000
MAX_ITERATIONS = 10_000
MAX_TIMEOUT_SECS = 86_400


@dataclass(frozen=True)
class SpawnRequest:
    """A checked spawn request."""

    description: str
    profile: AgentProfile
    working_directory: str
    max_iterations: int | None
    timeout_secs: float | None
    sandbox: str
    isolation: str


def profile_for(profiles: dict[str, AgentProfile], agent_type: object) -> AgentProfile:
    """The profile named ``agent_type``, which must be able to run a task headless."""
    headless = sorted(name for name, p in profiles.items() if p.headless_args)
    if not isinstance(agent_type, str) or agent_type not in headless:
        known = ", ".join(headless) or "none"
        raise validate.invalid(
            f"agent_type must be one of the agents that can run a task headless "
            f"({known}), got {agent_type!r}"
        )
    return profiles[agent_type]


def working_directory(path: object, default_cwd: str, user: AgentUser | None = None) -> str:
    """``path`` (relative to ``default_cwd``, which it defaults to) as a directory the
    agent's ``user`` can enter, on a real filesystem (not /proc, /sys, ...)."""
    if path is None:
        path = default_cwd
    path = validate.string("working_directory", path, max_len=4096)
    full = os.path.abspath(os.path.join(default_cwd, os.path.expanduser(path)))
    if not os.path.isdir(full):
        what = "does not exist" if not os.path.exists(full) else "is not a directory"
        raise validate.invalid(f"working_directory {full} {what}")
    kind = filesystem_type(full)
    if kind in PSEUDO_FILESYSTEMS:
        raise validate.invalid(
            f"working_directory {full} is on {kind}, a kernel pseudo-filesystem, not a "
            "project directory: give the directory of the project the agent works on"
        )
    if user is not None and not can_enter(full, user):
        raise validate.invalid(
            f"working_directory {full} is not a directory the agent's user {user.name} "
            f"(uid {user.uid}) can enter: it or a directory above it denies that user "
            "search permission. Choose a directory that user can use"
        )
    return full


def check_spawn(
    profiles: dict[str, AgentProfile],
    default_cwd: str,
    sandbox_for: SandboxFor | None,
    *,
    user: AgentUser | None = None,
    description: object,
    agent_type: object,
    working_dir: object,
    max_iterations: object,
    timeout_secs: object,
    sandbox: object,
    isolation: object,
) -> SpawnRequest:
    """Every argument of a spawn, checked; INVALID_ARGUMENT names the first bad one."""
    text = validate.string("description", description, max_len=MAX_DESCRIPTION_CHARS)
    profile = profile_for(profiles, agent_type)
    cwd = working_directory(working_dir, default_cwd, user)
    iterations: int | None = None
    if max_iterations is not None:
        iterations = validate.integer("max_iterations", max_iterations, 1, MAX_ITERATIONS)
        if not profile.max_iterations_args:
            raise validate.invalid(
                f"agent_type {profile.name!r} has no way to bound its iterations: "
                "omit max_iterations (or use timeout_secs)"
            )
    timeout: float | None = None
    if timeout_secs is not None:
        timeout = validate.number("timeout_secs", timeout_secs, 1, MAX_TIMEOUT_SECS)
    return SpawnRequest(
        description=text,
        profile=profile,
        working_directory=cwd,
        max_iterations=iterations,
        timeout_secs=timeout,
        sandbox=check_sandbox(sandbox, sandbox_for),
        isolation=check_isolation(isolation),
    )
