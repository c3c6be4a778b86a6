"""Turning a request into a complete, checked plan for a run.

A front (the command line) says what the user asked for as a
:class:`RunRequest`; :func:`make_plan` finds everything that can be wrong
with it (unknown agent, agent not installed, bad config) before anything is
started, and raises :class:`PlanError` with one line for the user.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..agents.command import not_runnable, resolve_executable
from ..agents.profiles import AgentProfile
from ..config import Config
from ..netmon.schema import NetmonMode
from ..privileges import AgentUser, resolve_agent_user
from ..sandbox.kinds import SandboxKind
from ..terminal import is_terminal
from ..watchdog.config import WatchdogConfig


class PlanError(ValueError):
    """The request cannot be carried out as asked; the message is one line for the user."""


@dataclass(frozen=True)
class RunRequest:
    """What the user asked the runner for, before it is checked."""

    agent: str | None
    """A profile name; None for a plain ``command``."""
    agent_args: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    """Without a profile: the command to supervise and its arguments."""
    watchdog_timeout: float | None = None
    watchdog: bool = True
    netmon: NetmonMode | None = None
    sandbox: SandboxKind = "none"
    inject_mcp: bool = True
    keep_root: bool = False
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunPlan:
    """A checked request to supervise one agent."""

    profile: AgentProfile
    executable: str
    agent_args: list[str]
    user: AgentUser
    config: Config
    watchdog: WatchdogConfig
    inject_mcp: bool
    """Whether the run's agents get the aegis-mcp MCP server (each the way its profile
    takes it, if it does)."""
    netmon: NetmonMode | None
    sandbox: SandboxKind
    use_pty: bool
    cwd: str
    notices: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    @property
    def headless(self) -> bool:
        """Whether the agent was asked for a headless session."""
        return self.profile.is_headless(self.agent_args)

    @property
    def interactive(self) -> bool:
        """Whether a person is expected to type to the agent."""
        return self.use_pty and not self.headless

    @property
    def skip_permissions(self) -> bool:
        """Whether to pass the permission-skipping flags (a container's root may: it
        is not the host's, and the agent is told so with IS_SANDBOX=1)."""
        return self.profile.skips_permissions(self.user.is_root and self.sandbox != "container")


def make_plan(request: RunRequest, config: Config) -> RunPlan:
    """Check the request against the config and the machine; PlanError if impossible."""
    if request.agent is None:
        profile = AgentProfile(
            name=Path(request.command[0]).name, command=(request.command[0],), takes_prompt=False
        )
        agent_args = list(request.command[1:])
    else:
        found = config.profiles.get(request.agent)
        if found is None:
            known = ", ".join(sorted(config.profiles))
            raise PlanError(
                f"unknown agent {request.agent!r}; known agents: {known} "
                "(or `aegis-mcp run -- CMD`, or a profile in the config file)"
            )
        profile, agent_args = found, list(request.agent_args)
    executable = resolve_executable(profile.command[0])
    if executable is None:
        name = profile.command[0]
        raise PlanError(f"{name!r} ({profile.name}) {not_runnable(name)}")
    # --netmon=netns is the netns sandbox's view: it needs one (a rootful container has one).
    sandbox: SandboxKind = request.sandbox
    if request.netmon == "netns" and sandbox == "none":
        sandbox = "netns"
    if sandbox != "none":
        from ..sandbox import problem

        found = problem(sandbox, config.container)
        if found is not None:
            raise PlanError(f"--sandbox={sandbox}: {found}")
    allow, deny = request.allow, request.deny
    if sandbox == "container":
        _check_container(request, config)
    elif (allow or deny) and sandbox != "netns" and request.netmon != "ebpf":
        raise PlanError(
            "--allow/--deny are enforced by a network sandbox (--sandbox=netns or a rootful "
            "--sandbox=container) or by eBPF on the agent's cgroup (--netmon=ebpf): add one"
        )
    if sandbox != "none" or allow or deny:
        _check_policy(allow, deny, config, sandbox)
    try:
        user = resolve_agent_user(request.keep_root)
    except RuntimeError as exc:
        raise PlanError(str(exc)) from None
    watchdog = config.watchdog
    if request.watchdog_timeout is not None:
        watchdog = dataclasses.replace(watchdog, heartbeat_timeout_secs=request.watchdog_timeout)
    if not request.watchdog:
        watchdog = dataclasses.replace(watchdog, enabled=False)
    notices = []
    # The root notice is about permission flags: say it only where there are some.
    # In a container, root is the container's and the flags are passed (IS_SANDBOX=1).
    root_in_container = sandbox == "container" and user.is_root and not request.keep_root
    if user.notice and (profile.permission_args or not user.is_root) and not root_in_container:
        notices.append(user.notice)
    return RunPlan(
        profile=profile,
        executable=executable,
        agent_args=agent_args,
        user=user,
        config=config,
        watchdog=watchdog,
        # Also when the primary agent takes none (a plain command): its pool agents may.
        inject_mcp=request.inject_mcp,
        netmon=request.netmon,
        sandbox=sandbox,
        use_pty=is_terminal(sys.stdin.fileno()) and is_terminal(sys.stdout.fileno()),
        cwd=os.getcwd(),
        notices=tuple(notices),
        allow=allow,
        deny=deny,
    )


def _check_container(request: RunRequest, config: Config) -> None:
    """PlanError when a container cannot give what was asked: a kernel policy and
    monitors need root and a rootful engine; rootless, say so and offer preload."""
    wants = []
    if request.allow or request.deny:
        wants.append("--allow/--deny")
    if request.netmon in ("ebpf", "netns"):
        wants.append(f"--netmon={request.netmon}")
    if not wants:
        return
    from ..sandbox import network_problem

    found = network_problem("container", config.container)
    if found is not None:
        raise PlanError(
            f"{' and '.join(wants)} with --sandbox=container {found}: the kernel cannot "
            "enforce or watch a rootless container's traffic; --netmon=preload records "
            "its connections"
        )


def _check_policy(
    allow: tuple[str, ...], deny: tuple[str, ...], config: Config, sandbox: SandboxKind
) -> None:
    """PlanError unless the policy (config and command line) is valid."""
    from ..sandbox.errors import PolicyError
    from ..sandbox.policy import Policy

    where = f"--sandbox={sandbox}" if sandbox != "none" else "--allow/--deny"
    try:
        Policy.from_config(config.sandbox.policy, allow=allow, deny=deny)
    except PolicyError as exc:
        raise PlanError(f"{where}: {exc}") from None
