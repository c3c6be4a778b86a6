"""Which netmon sources watch a run: what was asked, held against what the machine offers.

``--netmon`` alone (``auto``) is the best available: eBPF if it works here;
else the sandbox's view when the agent has a netns sandbox; else the hooks
library's log. ``--netmon=ebpf`` falls back the same way, ``--netmon=preload``
is the hooks alone, ``--netmon=netns`` the sandbox's view alone. When the
choice is not what was asked for, one line says why (:attr:`SourceChoice.reason`).
An egress policy without a sandbox can only be enforced by eBPF: without it
the run is refused (NetmonUnavailable) rather than left unguarded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..hooks_lib import HooksInfo
from ..privileges import AgentUser
from .errors import NetmonUnavailable
from .netns_view import NetnsView
from .schema import NetmonMode
from .source import NetmonSource
from .stats import NetmonStats

if TYPE_CHECKING:
    from .ebpf.policy import PolicyLike

HOOKS_MISSING = "the hooks library was not found (run `make build`)"


@dataclass(frozen=True)
class NetmonPlan:
    """What a run asks of netmon."""

    mode: NetmonMode | None
    """None: only a sandbox's view, if the agent has a sandbox."""
    runner_pid: int
    agent_id: str
    log_file: Path
    """Where the hooks library writes (the ``preload`` source)."""
    user: AgentUser | None = None
    """The agents' account when the runner drops to it: the log is made theirs."""
    sandboxed: bool = False
    """The agent runs in a netns sandbox, whose view is a source."""
    policy: PolicyLike | None = None
    """An egress policy no sandbox enforces: only the cgroup programs can."""


@dataclass(frozen=True)
class Machine:
    """What this machine offers netmon."""

    hooks: HooksInfo | None
    ebpf_problem: str | None
    """Why eBPF cannot run here, None when it can (as far as can be told before loading)."""
    hooks_problem: str | None = None
    """Why there is no hooks library the agents can load, when one was found (None:
    ``hooks`` is usable, or none was found)."""

    @classmethod
    def probe(
        cls, hooks: HooksInfo | None, plan: NetmonPlan, hooks_problem: str | None = None
    ) -> Machine:
        """Look at what ``plan`` could use (eBPF is checked only when it may be chosen)."""
        if plan.mode not in ("auto", "ebpf"):
            return cls(hooks, "not checked: not asked for", hooks_problem)
        from .ebpf import ebpf_available

        ok, reason = ebpf_available()
        return cls(hooks, None if ok else reason, hooks_problem)


@dataclass
class SourceChoice:
    """The sources of a run, and the line that says why, when they are not what was asked."""

    sources: list[NetmonSource] = field(default_factory=list)
    reason: str | None = None

    @property
    def mode(self) -> str:
        """The sources in use, e.g. ``preload`` or ``netns+ebpf``, or ``off``."""
        return "+".join(s.name for s in self.sources) if self.sources else "off"


def choose_sources(plan: NetmonPlan, machine: Machine) -> SourceChoice:
    """The best sources for ``plan`` on ``machine`` (not started)."""
    sources: list[NetmonSource] = [NetnsView()] if plan.sandboxed else []
    if plan.mode in (None, "netns"):
        return SourceChoice(sources)
    missing: list[str] = []
    if plan.mode in ("auto", "ebpf"):
        if machine.ebpf_problem is None:
            from .ebpf.source import EbpfSource

            sources.append(EbpfSource(plan.runner_pid, plan.agent_id, plan.policy))
        elif plan.policy is not None:
            raise NetmonUnavailable(
                "--allow/--deny need eBPF without --sandbox=netns, and it is unavailable: "
                f"{machine.ebpf_problem}"
            )
        else:
            missing.append(f"eBPF unavailable ({machine.ebpf_problem})")
    if plan.mode == "preload" or (plan.mode in ("auto", "ebpf") and not sources):
        if machine.hooks is not None:
            sources.append(_preload(plan, machine.hooks))
        else:
            missing.append(machine.hooks_problem or HOOKS_MISSING)
    if not missing:
        return SourceChoice(sources)
    using = SourceChoice(sources).mode
    if plan.mode == "preload":
        # Asked for preload and it is not there.
        reason = f"--netmon: {missing[0]}; preload monitoring is off"
    else:
        fallback = {"netns": "the sandbox's view", "off": "nothing: monitoring is off"}
        reason = f"--netmon: {'; '.join(missing)}; using {fallback.get(using, using)}"
    return SourceChoice(sources, reason)


def start_sources(plan: NetmonPlan, machine: Machine, stats: NetmonStats) -> SourceChoice:
    """Choose the sources and start them into ``stats``.

    eBPF may still fail while loading (a verifier or compiler error): then the
    choice is made again without it, and the reason says so.
    """
    choice = choose_sources(plan, machine)
    started: list[NetmonSource] = []
    for source in choice.sources:
        try:
            source.start(stats)
        except NetmonUnavailable as exc:
            for done in started:
                done.stop()
            if source.name != "ebpf":
                raise
            return start_sources(plan, dataclasses.replace(machine, ebpf_problem=str(exc)), stats)
        started.append(source)
    stats.mode = choice.mode
    return choice


def _preload(plan: NetmonPlan, hooks: HooksInfo) -> NetmonSource:
    from .preload_log import PreloadSource

    return PreloadSource(plan.log_file, hooks, plan.user)
