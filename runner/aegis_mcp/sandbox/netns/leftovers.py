"""What crashed runners' sandboxes left on the host, and removing it.

A sandbox leaves its namespace mount (``/var/run/netns/<name>``), its host veth,
its host nft table, its ``/etc/netns/<name>`` directory and its marker. Each is
ours only if it carries our name *and* a tag naming its sandbox: the marker file
(``/run/aegis-mcp/netns/<name>.json``), the veth's alias (``aegis-mcp:<name>``),
the table's comment (``aegis-mcp sandbox <name> owner <pid>``), the
resolv.conf's first line. It is removed only when its owner is dead: by the
marker's pid and start time where there is a marker, else by the pid in the
name (a live process whose command line mentions aegis counts as alive).
Nothing of a live runner is ever touched.

Processes still in a dead runner's namespace are killed before the namespace is
removed (unmounting alone would leave them running, cut off). The one exception
is a pool agent's own namespace (``aegis-<pid>-<agent>``) whose agent still
runs: that agent is ``orphaned`` and the next pool takes it over, so its whole
sandbox stays (policy included) until it ends.

pyroute2 and the sandbox set-up are imported only by :meth:`NetnsLeftovers.find`
and :meth:`~NetnsLeftovers.remove`: :meth:`~NetnsLeftovers.possible` is asked at
every root runner's start.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

from ...leftovers import Leftover, kill_processes
from ...owners import proc_stat
from ..errors import NftablesMissingError
from . import markers
from .names import DEFAULT_RUN_DIR, name_owner_alive, parse_name

_HOST_IF = re.compile(r"ae[0-9]+h[0-9]+")
_COMMENT = re.compile(r"aegis-mcp sandbox (?P<name>\S+) owner (?P<pid>[0-9]+)")


class NetnsLeftovers:
    """The :class:`aegis_mcp.leftovers.LeftoverSource` of netns sandboxes."""

    def __init__(
        self,
        run_dir: Path | None = None,
        state_dir: Path | None = None,
        resolv_dir: Path | None = None,
    ) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else DEFAULT_RUN_DIR
        self.state_dir = Path(state_dir) if state_dir is not None else markers.DEFAULT_STATE_DIR
        self.resolv_dir = resolv_dir
        """Where sandboxes keep their resolv.conf (``/etc/netns``; None: that default)."""

    def _markers(self) -> dict[str, dict[str, Any]]:
        return {m["name"]: m for m in markers.read_markers(self.state_dir)}

    def possible(self) -> bool:
        """Whether a namespace or a marker of a dead runner is there. Every other
        resource of a sandbox exists only while its marker does (written first,
        removed last)."""
        by_name = self._markers()
        names = set(by_name)
        with contextlib.suppress(OSError):
            names.update(n for n in os.listdir(self.run_dir) if parse_name(n) is not None)
        return any(not name_owner_alive(name, by_name.get(name)) for name in names)

    def find(self) -> list[Leftover]:
        """Every sandbox resource on the host, in removal order: namespaces first (with
        the processes in them), then nft tables, veths, resolv.conf directories, markers."""
        by_name = self._markers()
        found = self._namespaces(by_name)

        def add(kind: str, ident: str, sandbox: str) -> None:
            alive = name_owner_alive(sandbox, by_name.get(sandbox))
            parsed = parse_name(sandbox)
            owner = parsed[0] if parsed else None
            found.append(Leftover(kind, ident, owner, alive, group=sandbox))

        from . import firewall
        from .sandbox import ALIAS_PREFIX, RESOLV_DIR, host, resolv_is_ours

        try:
            handles = host()
        except NftablesMissingError:
            handles = None  # without nftables no sandbox could have made a veth or table
        if handles is not None:
            for table in handles.nft.list_tables():
                name = table.get("name") or ""
                if table.get("family") == firewall.FAMILY and parse_name(name) and _tagged(name):
                    add("nft_table", name, name)
            for link in handles.rtnl.links():
                alias = link.get("alias") or ""
                if _HOST_IF.fullmatch(link.get("ifname") or "") and alias.startswith(ALIAS_PREFIX):
                    sandbox = alias[len(ALIAS_PREFIX) :]
                    if parse_name(sandbox) is not None:
                        add("veth", link["ifname"], sandbox)
        resolv_dir = self.resolv_dir or RESOLV_DIR
        if resolv_dir.is_dir():
            for entry in sorted(resolv_dir.iterdir()):
                if parse_name(entry.name) is None:
                    continue
                try:
                    ours = resolv_is_ours(entry, entry.name)
                except OSError:
                    continue
                if ours:
                    add("resolv_dir", str(entry), entry.name)
        for name in by_name:
            add("marker", name, name)
        return found

    def _namespaces(self, by_name: dict[str, dict[str, Any]]) -> list[Leftover]:
        from pyroute2 import netns

        found = []
        inside = _processes_by_netns()
        for name in sorted(netns.listnetns(str(self.run_dir))):
            parsed = parse_name(name)
            if parsed is None:
                continue
            pid, agent = parsed
            path = self.run_dir / name
            processes = _processes_in(path, inside)
            alive = name_owner_alive(name, by_name.get(name))
            reason = ""
            if not alive and agent is not None and _leaders(processes):
                # Only that pool agent's processes can be in its namespace (one made ahead
                # of time, aegis-<pid>-warm-<n>, names the agent that claimed it in its marker).
                agent = (by_name.get(name) or {}).get("claimed_by") or agent
                reason = (
                    f"pool agent {agent} of the dead runner still runs in it (orphaned: the "
                    "next pool takes it over, agent_stop ends it)"
                )
                processes = []
            found.append(
                Leftover(
                    "namespace",
                    str(path),
                    pid,
                    alive,
                    group=name,
                    processes=tuple(processes),
                    keep_reason=reason,
                )
            )
        return found

    def remove(self, item: Leftover) -> None:
        """Remove one resource (the processes in a namespace killed first)."""
        from .sandbox import remove_host_link, remove_host_table, remove_resolv_dir

        if item.kind == "namespace":
            path = Path(item.id)
            if left := kill_processes(_processes_in(path, _processes_by_netns())):
                raise OSError(f"processes {left} in {path.name} outlived SIGKILL")
            from pyroute2 import netns

            with contextlib.suppress(FileNotFoundError):
                netns.remove(str(path))
        elif item.kind == "nft_table":
            remove_host_table(item.id)
        elif item.kind == "veth":
            # Gone already when its namespace went: the kernel takes the pair along.
            remove_host_link(item.id)
        elif item.kind == "resolv_dir":
            remove_resolv_dir(Path(item.id), item.group)
        elif item.kind == "marker":
            markers.remove_marker(self.state_dir, item.id)

    def finish(self) -> None:
        """With no sandbox left, IP forwarding is put back as it was before the first."""
        if not self.state_dir.is_dir():
            return
        from .pool import pool_lock
        from .sandbox import restore_forwarding

        with pool_lock(self.state_dir):
            restore_forwarding(self.state_dir)


def _tagged(table: str) -> bool:
    """Whether host table ``table`` carries our comment naming itself."""
    from . import firewall
    from .nft import NftError
    from .sandbox import host

    try:
        listing = host().nft.run([{"list": {"table": {"family": firewall.FAMILY, "name": table}}}])
    except NftError as exc:
        if "No such file or directory" in str(exc):
            return False  # gone since it was listed: its sandbox's teardown, or another sweep
        raise
    for item in (listing or {}).get("nftables", []):
        rule = item.get("rule") or {}
        match = _COMMENT.fullmatch(rule.get("comment") or "")
        if match and match["name"] == table:
            return True
    return False


def _processes_by_netns() -> dict[int, list[int]]:
    """Every process, by the inode of its network namespace."""
    found: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                found.setdefault(os.stat(f"/proc/{entry}/ns/net").st_ino, []).append(int(entry))
    return found


def _processes_in(path: Path, by_netns: dict[int, list[int]]) -> list[int]:
    """The processes in the namespace mounted at ``path``."""
    try:
        inode = os.stat(path).st_ino
    except OSError:
        return []
    return [pid for pid in by_netns.get(inode, []) if pid != os.getpid()]


def _leaders(pids: list[int]) -> list[int]:
    """Those of ``pids`` that lead their session (a pool agent does; its children do not)."""
    return [pid for pid in pids if (f := proc_stat(pid)) is not None and int(f[3]) == pid]
