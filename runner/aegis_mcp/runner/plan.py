"""Turning a parsed command line into a complete, checked plan for a run.

Everything that can be wrong with the user's request (unknown agent, agent
not installed, bad config) is found here, before anything is started.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..agents.command import not_runnable, resolve_executable
from ..agents.profiles import AgentProfile
from ..cli.args import ParsedRun, UsageError
from ..config import Config
from ..privileges import AgentUser, resolve_agent_user
from ..terminal import is_terminal
from ..watchdog.config import WatchdogConfig


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
    netmon: str | None
    sandbox: str
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
        """Whether to pass the permission-skipping flags."""
        return self.profile.skips_permissions(self.user.is_root)


def make_plan(parsed: ParsedRun, config: Config) -> RunPlan:
    """Check the request against the config and the machine; UsageError if impossible."""
    opts = parsed.options
    if parsed.agent == "run":
        profile = AgentProfile(
            name=Path(parsed.command[0]).name, command=(parsed.command[0],), takes_prompt=False
        )
        agent_args = parsed.command[1:]
    else:
        found = config.profiles.get(parsed.agent)
        if found is None:
            known = ", ".join(sorted(config.profiles))
            raise UsageError(
                f"unknown agent {parsed.agent!r}; known agents: {known} "
                "(or `aegis-mcp run -- CMD`, or a profile in the config file)"
            )
        profile, agent_args = found, parsed.agent_args
    executable = resolve_executable(profile.command[0])
    if executable is None:
        name = profile.command[0]
        raise UsageError(f"{name!r} ({profile.name}) {not_runnable(name)}")
    sandbox = "netns" if opts.netmon == "netns" else opts.sandbox
    if sandbox == "container":
        raise UsageError("--sandbox=container is not available in this version yet")
    if (opts.allow or opts.deny) and sandbox != "netns" and opts.netmon != "ebpf":
        raise UsageError(
            "--allow/--deny are enforced by a network sandbox (--sandbox=netns) "
            "or by eBPF on the agent's cgroup (--netmon=ebpf): add one"
        )
    if sandbox == "netns" or opts.allow or opts.deny:
        _check_policy(opts.allow, opts.deny, config, sandbox == "netns")
    try:
        user = resolve_agent_user(opts.keep_root)
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None
    watchdog = config.watchdog
    if opts.watchdog_timeout is not None:
        watchdog = dataclasses.replace(watchdog, heartbeat_timeout_secs=opts.watchdog_timeout)
    if opts.no_watchdog:
        watchdog = dataclasses.replace(watchdog, enabled=False)
    notices = []
    # The root notice is about permission flags: say it only where there are some.
    if user.notice and (profile.permission_args or not user.is_root):
        notices.append(user.notice)
    return RunPlan(
        profile=profile,
        executable=executable,
        agent_args=list(agent_args),
        user=user,
        config=config,
        watchdog=watchdog,
        inject_mcp=opts.inject_mcp and profile.mcp_inject != "none",
        netmon=opts.netmon,
        sandbox=sandbox,
        use_pty=is_terminal(sys.stdin.fileno()) and is_terminal(sys.stdout.fileno()),
        cwd=os.getcwd(),
        notices=tuple(notices),
        allow=tuple(opts.allow),
        deny=tuple(opts.deny),
    )


def _check_policy(allow: list[str], deny: list[str], config: Config, netns: bool) -> None:
    """UsageError unless the policy is valid and, for a sandbox, one can be made."""
    from ..sandbox.errors import PolicyError, SandboxError
    from ..sandbox.policy import Policy

    where = "--sandbox=netns" if netns else "--allow/--deny"
    try:
        Policy.from_config(config.sandbox.policy, allow=allow, deny=deny)
        if netns:
            from ..sandbox.netns.sandbox import check_can_create

            check_can_create()
    except (PolicyError, SandboxError) as exc:
        raise UsageError(f"{where}: {exc}") from None
