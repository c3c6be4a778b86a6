"""A container's network: the same netns sandbox as ``--sandbox=netns`` where root, else the
engine's user-mode networking.

Rootful (the runner is root and the engine is too), every agent's containers
join an aegis network namespace made by :mod:`aegis_mcp.sandbox.netns`: one
egress policy, one set of netmon events, whichever sandbox kind (DESIGN.md
fact 7). podman joins it by path (``network_mode="ns:/run/netns/NAME"``).
Docker Engine refuses such paths, so there a small holder container with no
network is started first and the netns sandbox is set up inside *its*
namespace (the veth moved in, the nftables table loaded there); the agent's
containers join the holder's (``network_mode="container:ID"``). The namespace
lives as long as the agent's sandbox, across the container restarts of hot
reloads. The sandbox's resolv.conf, pointing at its DNS forwarder, is mounted
over the container's.

Rootless, the kernel's policy and monitors need root: a policy is refused
(NeedsRootfulEngine) rather than left unenforced, and the engine's user-mode
network is used: slirp4netns for podman, which needs ``/dev/net/tun``
(:func:`.rootless.tun_problem` says what is missing), RootlessKit's for Docker.
``[container] network = "none"`` gives no network at all, in every mode.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import NeedsRootfulEngine, RootlessNotReady
from .lifecycle import ROLE_NETNS, Container, ContainerConfig, labels
from .mounts import Bind
from .rootless import tun_problem

if TYPE_CHECKING:
    from ..base import SandboxRequest
    from ..netns.sandbox import NetnsSandbox
    from .engine import Engine


@dataclass
class ContainerNetwork:
    """What an agent's containers get for a network, and what must be torn down with it."""

    mode: str
    """``netns`` (an aegis namespace), ``slirp4netns``, ``engine`` (its default), ``none``."""
    network_mode: str | None
    binds: list[Bind] = field(default_factory=list)
    netns: NetnsSandbox | None = None
    holder: Container | None = None

    def describe(self) -> dict[str, Any]:
        """Its part of the sandbox's status (the netns sandbox's own status inside)."""
        found: dict[str, Any] = {"mode": self.mode, "network_mode": self.network_mode}
        if self.netns is not None:
            found["netns"] = self.netns.describe()
        if self.holder is not None:
            found["holder"] = self.holder.id[:12]
        return found

    def teardown(self) -> list[str]:
        """Remove the namespace and the holder; the messages of what failed."""
        errors = self.netns.teardown() if self.netns is not None else []
        if self.holder is not None:
            try:
                self.holder.remove()
            except Exception as exc:
                errors.append(f"netns holder container: {exc}")
        return errors


def policy_problem(rootless: bool) -> str | None:
    """Why an egress policy cannot be enforced on this kind of engine here, or None."""
    if os.geteuid() != 0:
        return "needs root (nftables in the container's network namespace): run it with sudo"
    if rootless:
        return "needs a rootful engine, and this run's engine is rootless"
    return None


def make_network(
    engine: Engine,
    request: SandboxRequest,
    network: str,
    image: str,
    owner_start: float | None,
) -> ContainerNetwork:
    """The network the agent's containers will have (the namespace made now, where one is)."""
    policy = request.policy
    wants_policy = policy is not None and (bool(policy.rules) or policy.default != "allow")
    if network == "none":
        if wants_policy:
            raise NeedsRootfulEngine('an egress policy with [container] network = "none" is moot')
        return ContainerNetwork("none", "none")
    problem = policy_problem(engine.rootless)
    if problem is not None:
        if wants_policy:
            raise NeedsRootfulEngine(
                f"--allow/--deny with --sandbox=container {problem}; without a policy, "
                "--netmon=preload shows the agent's connections"
            )
        return _user_mode(engine)
    return _aegis_namespace(engine, request, image, owner_start)


def _user_mode(engine: Engine) -> ContainerNetwork:
    if engine.kind == "podman" and engine.rootless:
        missing = tun_problem()
        if missing is not None:
            raise RootlessNotReady(
                f"a rootless container's network (slirp4netns) cannot start: {missing}; "
                'or set [container] network = "none"'
            )
        return ContainerNetwork("slirp4netns", "slirp4netns")
    return ContainerNetwork("engine", None)


def _aegis_namespace(
    engine: Engine, request: SandboxRequest, image: str, owner_start: float | None
) -> ContainerNetwork:
    from ..netns.backend import create as create_netns

    holder = None
    adopt = None
    try:
        if engine.kind == "docker":
            agent = request.agent_id or "primary"
            holder = Container.create(
                engine,
                ContainerConfig(
                    image=image,
                    command=["sleep", "infinity"],
                    labels=labels(request.runner_pid, owner_start, agent, ROLE_NETNS),
                    name=f"aegis-{request.runner_pid}-{agent}-netns",
                    network_mode="none",
                    limits={"pids_limit": 16},
                ),
            )
            holder.start()
            pid = holder.pid()
            if pid is None:
                raise RootlessNotReady("the network holder container did not start")
            adopt = Path(f"/proc/{pid}/ns/net")
        netns = create_netns(request, adopt=adopt)
    except BaseException:
        if holder is not None:
            with contextlib.suppress(Exception):
                holder.remove()
        raise
    mode = f"container:{holder.id}" if holder is not None else f"ns:{netns.netns_path}"
    binds = [Bind(str(netns.resolv_path), "/etc/resolv.conf")]
    return ContainerNetwork("netns", mode, binds, netns, holder)
