"""What crashed runners' sandboxes left on the host, and removing it.

A sandbox leaves, besides its namespace mount (handled with the other
namespaces by :mod:`.namespaces`): its host veth, its host
nft table, its ``/etc/netns/<name>`` directory and its marker. Each is ours
only if it carries our name *and* a tag naming its sandbox: the marker file
(``/run/aegis-mcp/netns/<name>.json``), the veth's alias
(``aegis-mcp:<name>``), the table's comment (``aegis-mcp sandbox <name>
owner <pid>``), the resolv.conf's first line. It is removed only when its
owner is dead: by the marker's pid and start time where there is a marker,
else by the pid in the name (a live process whose command line mentions
aegis counts as alive). Nothing of a live runner is ever touched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import firewall, markers
from .names import name_owner_alive, parse_name
from .pool import pool_lock
from .sandbox import (
    ALIAS_PREFIX,
    RESOLV_DIR,
    host,
    remove_host_link,
    remove_host_table,
    remove_resolv_dir,
    resolv_is_ours,
    restore_forwarding,
)

_HOST_IF = re.compile(r"ae[0-9]+h[0-9]+")
_COMMENT = re.compile(r"aegis-mcp sandbox (?P<name>\S+) owner (?P<pid>[0-9]+)")


def _tagged(table: str) -> bool:
    """Whether host table ``table`` carries our comment naming itself."""
    listing = host().nft.run([{"list": {"table": {"family": firewall.FAMILY, "name": table}}}])
    for item in (listing or {}).get("nftables", []):
        rule = item.get("rule") or {}
        match = _COMMENT.fullmatch(rule.get("comment") or "")
        if match and match["name"] == table:
            return True
    return False


def find_leftovers(
    state_dir: Path | None = None, resolv_dir: Path = RESOLV_DIR
) -> list[dict[str, Any]]:
    """Every sandbox resource on the host: kind, name, its sandbox, owner alive or not."""
    directory = markers.state_dir(state_dir)
    by_name = {m["name"]: m for m in markers.read_markers(directory)}
    found: list[dict[str, Any]] = []

    def add(kind: str, ident: str, sandbox: str) -> None:
        alive = name_owner_alive(sandbox, by_name.get(sandbox))
        found.append({"kind": kind, "id": ident, "sandbox": sandbox, "owner_alive": alive})

    for name in by_name:
        add("marker", name, name)
    handles = host()
    for link in handles.rtnl.links():
        alias = link.get("alias") or ""
        if _HOST_IF.fullmatch(link.get("ifname") or "") and alias.startswith(ALIAS_PREFIX):
            sandbox = alias[len(ALIAS_PREFIX) :]
            if parse_name(sandbox) is not None:
                add("veth", link["ifname"], sandbox)
    for table in handles.nft.list_tables():
        name = table.get("name") or ""
        if table.get("family") == firewall.FAMILY and parse_name(name) and _tagged(name):
            add("nft_table", name, name)
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
    return found


def cleanup_leftovers(
    state_dir: Path | None = None, resolv_dir: Path = RESOLV_DIR
) -> dict[str, list[Any]]:
    """Remove the resources of sandboxes whose owner is dead; returns removed/kept/errors.

    Markers go last (they say what else to look for), and when none is left
    IP forwarding is put back as it was before the first sandbox.
    """
    directory = markers.state_dir(state_dir)
    removed: list[dict[str, str]] = []
    kept: list[dict[str, str]] = []
    errors: list[dict[str, str]] = []
    leftovers = find_leftovers(directory, resolv_dir)
    order = {"nft_table": 0, "veth": 1, "resolv_dir": 2, "marker": 3}
    for item in sorted(leftovers, key=lambda i: order[i["kind"]]):
        entry = {"kind": item["kind"], "id": item["id"], "sandbox": item["sandbox"]}
        if item["owner_alive"]:
            kept.append(entry)
            continue
        remover: Callable[[], object] = {
            "nft_table": lambda i=item: remove_host_table(i["id"]),
            "veth": lambda i=item: remove_host_link(i["id"]),
            "resolv_dir": lambda i=item: remove_resolv_dir(Path(i["id"]), i["sandbox"]),
            "marker": lambda i=item: markers.remove_marker(directory, i["id"]),
        }[item["kind"]]
        try:
            remover()
        except Exception as exc:
            errors.append({**entry, "error": str(exc)})
        else:
            removed.append(entry)
    with pool_lock(directory):
        restore_forwarding(directory)
    return {"removed": removed, "kept": kept, "errors": errors}
