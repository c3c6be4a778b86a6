"""The netns sandbox: one network namespace per agent, with an egress policy.

Public API (import costs pyroute2's message classes, tens of milliseconds even without
pyroute2's own package init, which :mod:`.pyroute2_lite` leaves out: import this package's
modules only when ``--sandbox=netns`` / ``--netmon=netns`` is asked for)::

    from aegis_mcp.sandbox.netns import AddressPool, create_sandbox
    from aegis_mcp.sandbox.policy import Policy

    sandbox = create_sandbox(os.getpid(), None, Policy(deny=("10.0.0.0/8",)),
                             AddressPool("10.213.0.0/16"), on_event=stats.ingest)
    spec = sandbox.wrap(SpawnSpec(...))   # or get_sandbox("netns", SandboxRequest(...))
    ...
    sandbox.teardown()

Modules: :mod:`.backend` (the backend :func:`aegis_mcp.sandbox.get_sandbox`
makes), :mod:`.sandbox` (set-up, confine steps, teardown), :mod:`.pool`
(subnets), :mod:`.firewall` (nftables rules), :mod:`.monitor` (events),
:mod:`.names` and :mod:`.markers` (whose a namespace is), :mod:`.namespaces`
and :mod:`.leftovers` (listing and removing what crashed runners left),
:mod:`.ops` (the namespace control operations), and the transports
:mod:`.nlsock`, :mod:`.rtnl`, :mod:`.nfnetlink`, :mod:`.nft`, :mod:`.syscalls`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .pyroute2_lite import install

install()  # before any module here imports from pyroute2

if TYPE_CHECKING:
    from .pool import DEFAULT_POOL, AddressPool
    from .sandbox import NetnsSandbox, check_can_create, create_sandbox

__all__ = ["DEFAULT_POOL", "AddressPool", "NetnsSandbox", "check_can_create", "create_sandbox"]


def __getattr__(name: str) -> Any:
    # Lazy: the namespace listing reads only the names and markers modules, and must
    # not pay for pyroute2 and dnspython through this package's init.
    if name in ("DEFAULT_POOL", "AddressPool"):
        from . import pool

        return getattr(pool, name)
    if name in ("NetnsSandbox", "check_can_create", "create_sandbox"):
        from . import sandbox

        return getattr(sandbox, name)
    raise AttributeError(name)
