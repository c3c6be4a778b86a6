"""One agent's network namespace: creation, confinement steps, counters, teardown.

Set-up, in process and without helper processes (target: connectivity in
5 ms or less; DESIGN.md fact 6, issue 5):

1. Under the pool lock: pick a free subnet and a host-end name, write the
   marker (before anything exists, so that no cleanup can take the new
   namespace for an orphan).
2. A thread ``unshare(CLONE_NEWNET)``s into a fresh namespace, bind-mounts it
   at ``/var/run/netns/<name>`` (what ``ip netns add`` does) and, with
   netlink and nftables sockets created there, brings ``lo`` up, creates the
   veth (its peer straight into the host namespace), the address, the
   default route and the egress table. That thread then stays in the
   namespace as the monitor (NFLOG and conntrack readers).
3. Before that the calling thread has loaded the host table (NAT, input
   backstop), turned IP forwarding on and written the namespace's
   resolv.conf; after it, it starts the DNS forwarder and addresses and
   raises the host end.

Teardown undoes all of it in reverse, each step tolerant of what is already
gone, so it is idempotent and also serves after a half-done set-up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import ipaddress
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...dns_wire import Upstream, host_upstreams, resolve
from ...files import write_atomic
from ...owners import process_start_time
from ...processes import SpawnSpec
from ..base import Sandbox
from ..dns_proxy import DnsAnswer, DnsForwarder
from ..errors import NameClashError, NotRootError, SandboxError
from ..policy import Policy
from . import firewall, markers, syscalls
from .monitor import Event, Monitor
from .names import DEFAULT_RUN_DIR, namespace_name, parse_name
from .nft import Nft, NftError
from .nft import available as nft_available
from .pool import AddressPool, allocate, endpoints, pool_lock
from .rtnl import Rtnl, addr_msg, alias_msg, default_route_msg, up_msg, veth_msg

SANDBOX_IF = "eth0"
SANDBOX_IF_INDEX = 2
ALIAS_PREFIX = "aegis-mcp:"
RESOLV_DIR = Path("/etc/netns")
HOST_RESOLV = Path("/etc/resolv.conf")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
FORWARD_ORIG = "ip_forward.orig"
SETUP_TIMEOUT = 10.0


def host_if_name(owner_pid: int, number: int) -> str:
    """The host end of a sandbox's veth: ``ae<pid>h<n>``, within IFNAMSIZ (15 characters)."""
    name = f"ae{owner_pid}h{number}"
    if len(name) > 15:
        raise SandboxError(f"pid {owner_pid} is too large for an interface name")
    return name


# ---- the host side, shared by every sandbox of this process ---------------------------------


class _Host:
    """Netlink and nftables handles on the host namespace (the creating thread's)."""

    def __init__(self) -> None:
        self.netns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.rtnl = Rtnl()
        self.nft = Nft()


_host: _Host | None = None
_host_lock = threading.Lock()
_run_dir_ready: set[Path] = set()
_run_dir_lock = threading.Lock()


def host() -> _Host:
    """The process's host-namespace handles, made on first use."""
    global _host
    with _host_lock:
        if _host is None:
            _host = _Host()
        return _host


def _prepare_run_dir(run_dir: Path) -> None:
    # As `ip netns add` does: a shared mount, so that namespaces mounted in it
    # later are seen by processes in other mount namespaces too. Under a lock:
    # two first sandboxes made at once must not bind-mount the directory twice.
    with _run_dir_lock:
        if run_dir in _run_dir_ready:
            return
        markers.checked_dir(run_dir, "namespace directory")
        target = bytes(run_dir)
        try:
            syscalls.mount(b"none", target, None, syscalls.MS_SHARED | syscalls.MS_REC)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            syscalls.mount(target, target, None, syscalls.MS_BIND | syscalls.MS_REC)
            syscalls.mount(b"none", target, None, syscalls.MS_SHARED | syscalls.MS_REC)
        _run_dir_ready.add(run_dir)


def _write(path: str | Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


# ---- the namespace thread ------------------------------------------------------------------


class _NamespaceThread(threading.Thread):
    """Creates the namespace from inside, then stays there as the monitor."""

    def __init__(self, sandbox: NetnsSandbox, ruleset: list[dict[str, Any]]) -> None:
        super().__init__(name=f"aegis-netns-{sandbox.name}", daemon=True)
        self.sandbox = sandbox
        self.ruleset = ruleset
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.netns_fd: int | None = None
        self.nft: Nft | None = None
        self.monitor: Monitor | None = None

    def run(self) -> None:
        try:
            self._setup()
        except BaseException as exc:
            self.error = exc
        finally:
            self.ready.set()
        try:
            if self.error is None and self.monitor is not None:
                self.monitor.run()
        finally:
            if self.nft is not None:
                self.nft.close()

    def _setup(self) -> None:
        sb = self.sandbox
        if sb.adopted is None:
            syscalls.unshare(syscalls.CLONE_NEWNET)
        else:
            # A namespace someone else made (a container's): set it up from inside the same way.
            adopted = os.open(sb.adopted, os.O_RDONLY | os.O_CLOEXEC)
            try:
                syscalls.setns(adopted, syscalls.CLONE_NEWNET)
            finally:
                os.close(adopted)
        try:
            fd = os.open(sb.netns_path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
        except FileExistsError:
            raise NameClashError(f"network namespace {sb.name} already exists") from None
        os.close(fd)
        syscalls.mount(b"/proc/thread-self/ns/net", bytes(sb.netns_path), b"none", syscalls.MS_BIND)
        self.netns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        # No IPv6 on the veth (the pool is IPv4): no link-local chatter in the
        # counters, and AAAA destinations fail at once. Loopback keeps ::1.
        with contextlib.suppress(OSError):
            _write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")
        # Per-flow byte counts in conntrack's DESTROY events.
        with contextlib.suppress(OSError):
            _write("/proc/sys/net/netfilter/nf_conntrack_acct", "1")
        index = SANDBOX_IF_INDEX
        with contextlib.closing(Rtnl()) as rtnl:
            rtnl.request(
                [
                    up_msg(1),
                    veth_msg(SANDBOX_IF, index, sb.host_if, sb.host_netns_fd),
                    addr_msg(index, sb.address, sb.subnet.prefixlen),
                    up_msg(index),
                    default_route_msg(sb.gateway, index),
                ]
            )
        self.nft = Nft()
        self.nft.run(self.ruleset)
        rules = {rule.index: rule for rule in sb.policy.rules}
        inode = os.fstat(self.netns_fd).st_ino
        self.monitor = Monitor(sb.name, inode, sb.gateway, rules, sb.on_event)


# ---- the sandbox ---------------------------------------------------------------------------


@dataclass
class NetnsSandbox(Sandbox):
    """A network namespace for one agent, its veth, firewall tables, DNS and monitor."""

    kind = "netns"

    name: str
    owner_pid: int
    agent_id: str | None
    policy: Policy
    subnet: ipaddress.IPv4Network
    gateway: str
    address: str
    host_if: str
    host_table: str
    netns_path: Path
    resolv_path: Path
    state_dir: Path
    upstreams: list[Upstream]
    host_netns_fd: int
    on_event: Callable[[Event], None] | None = None
    adopted: Path | None = None
    """The existing namespace this sandbox was set up in (``/proc/PID/ns/net``), if any."""
    ip_forward_was: str | None = None
    dns: DnsForwarder | None = None
    setup_secs: float | None = None
    unresolved: list[str] = field(default_factory=list)
    _thread: _NamespaceThread | None = None
    _host_index: int | None = None
    _torn_down: bool = False
    _teardown_lock: threading.Lock = field(default_factory=threading.Lock)
    _confine: tuple[Callable[[], None], ...] = ()
    claimed_by: str | None = None
    """The pool agent a sandbox made ahead of time (:mod:`..warm`) was given to."""

    # ---- what the runner uses --------------------------------------------------------------

    def claim(self, agent_id: str) -> None:
        """Give a sandbox made ahead of time to pool agent ``agent_id`` (its marker says so
        from now on). A sandbox is given once: a second claim, or one after teardown, is
        refused with SandboxError."""
        with self._teardown_lock:
            if self._torn_down:
                raise SandboxError(f"{self.name} is torn down: it cannot be claimed")
            if self.claimed_by is not None:
                raise SandboxError(f"{self.name} was claimed already, by agent {self.claimed_by}")
            self.claimed_by = agent_id
        marker = markers.read_marker(self.state_dir, self.name)
        if marker is not None:
            markers.write_marker(self.state_dir, {**marker, "claimed_by": agent_id})

    def wrap(self, spec: SpawnSpec) -> SpawnSpec:
        """``spec`` with the :attr:`confine` steps added: the agent starts in the namespace."""
        return dataclasses.replace(spec, confine=(*spec.confine, *self.confine))

    @property
    def netns_fd(self) -> int | None:
        """An open fd on the namespace (valid until teardown)."""
        return self._thread.netns_fd if self._thread is not None else None

    @property
    def confine(self) -> tuple[Callable[[], None], ...]:
        """SpawnSpec.confine steps: enter the namespace, private mounts, bind resolv.conf.

        Each is a plain syscall on data prepared here (an open fd, byte
        paths), safe between fork and exec. Run before the privilege drop.
        """
        return self._confine

    @property
    def monitor(self) -> Monitor | None:
        """The NFLOG/conntrack monitor (None after teardown)."""
        return self._thread.monitor if self._thread is not None else None

    def recent_events(self, count: int = 50) -> list[Event]:
        """The monitor's last events (copies), newest last."""
        monitor = self.monitor
        if monitor is None:
            return []
        return [dict(e) for e in list(monitor.recent)[-count:]]

    def counters(self) -> dict[str, int] | None:
        """Bytes and packets through the veth, from the sandbox's point of view.

        Read from the host end (netlink link stats, IFLA_STATS64), whose
        receive side is what the sandbox sent. Ethernet-level: each packet
        counts its 14-byte Ethernet header, IP and TCP/UDP headers, and every
        handshake, ACK and DNS packet. None once the veth is gone.
        """
        if self._host_index is None:
            return None
        try:
            stats = host().rtnl.link_info(self._host_index)["stats"]
        except OSError:
            return None
        return {
            "tx_bytes": stats.get("rx_bytes", 0),
            "tx_packets": stats.get("rx_packets", 0),
            "rx_bytes": stats.get("tx_bytes", 0),
            "rx_packets": stats.get("tx_packets", 0),
            "tx_dropped": stats.get("rx_dropped", 0),
            "rx_dropped": stats.get("tx_dropped", 0),
        }

    def describe(self) -> dict[str, Any]:
        """JSON-able state, for server_status and netmon_status."""
        monitor = self.monitor
        return {
            "kind": "netns",
            "name": self.name,
            "owner_pid": self.owner_pid,
            "agent_id": self.claimed_by or self.agent_id,
            "netns": str(self.netns_path),
            "subnet": str(self.subnet),
            "gateway": self.gateway,
            "address": self.address,
            "host_if": self.host_if,
            "nft_table": f"{firewall.FAMILY} {self.host_table}",
            "resolv_conf": str(self.resolv_path),
            "dns": {
                "listen": f"{self.gateway}:53",
                "upstreams": [f"{ip}:{port}" for ip, port in self.upstreams],
                "queries": self.dns.queries if self.dns else 0,
                "failures": self.dns.failures if self.dns else 0,
            },
            "policy": self.policy.describe(),
            "unresolved_hosts": list(self.unresolved),
            "ip_forward_was": self.ip_forward_was,
            "setup_ms": round(self.setup_secs * 1000, 2) if self.setup_secs else None,
            "counters": self.counters(),
            "events": dict(monitor.counts) if monitor else {},
            "torn_down": self._torn_down,
        }

    # ---- set-up pieces ---------------------------------------------------------------------

    def _on_answer(self, answer: DnsAnswer) -> None:
        changes = self.policy.learn(answer.names, answer.addresses)
        thread = self._thread
        if changes and thread is not None and thread.nft is not None:
            with contextlib.suppress(NftError):
                thread.nft.run(firewall.learned_elements(changes))
        monitor = self.monitor
        if monitor is None:
            return
        client = answer.client or ("", 0)
        monitor.emit_event(
            {
                "event": "dns",
                "kind": "query",
                "pid": None,
                "comm": None,
                "host": answer.qname,
                "qtype": answer.qtype,
                "rcode": answer.rcode,
                "answers": answer.addresses,
                "names": sorted(answer.names),
                "local_port": client[1],
                "upstream": _endpoint(answer.upstream),
            }
        )

    def _write_resolv(self, search: list[str]) -> None:
        markers.checked_dir(self.resolv_path.parent, "resolv.conf directory")
        lines = [f"{_resolv_tag(self.name)} DNS through the sandbox's forwarder"]
        lines.append(f"nameserver {self.gateway}")
        lines += search
        write_atomic(self.resolv_path, ("\n".join(lines) + "\n").encode(), mode=0o644)

    def _prepare_confine(self) -> None:
        fd = self.netns_fd
        assert fd is not None
        resolv = bytes(self.resolv_path)
        target = bytes(HOST_RESOLV)
        bind_resolv = HOST_RESOLV.exists()

        def enter_netns() -> None:
            syscalls.setns(fd, syscalls.CLONE_NEWNET)

        def own_mounts() -> None:
            # A slave mount tree: the host's later mounts still reach the
            # agent, the agent's (our resolv.conf bind) never reach the host.
            syscalls.unshare(syscalls.CLONE_NEWNS)
            syscalls.mount(b"none", b"/", None, syscalls.MS_SLAVE | syscalls.MS_REC)

        def bind_resolv_conf() -> None:
            syscalls.mount(resolv, target, None, syscalls.MS_BIND)

        steps: list[Callable[[], None]] = [enter_netns, own_mounts]
        if bind_resolv:
            steps.append(bind_resolv_conf)
        self._confine = tuple(steps)

    # ---- teardown --------------------------------------------------------------------------

    def teardown(self) -> list[str]:
        """Remove everything the sandbox made; idempotent. Returns what failed (messages)."""
        with self._teardown_lock:
            if self._torn_down:
                return []
            self._torn_down = True
            self._confine = ()
            errors: list[str] = []

            def attempt(what: str, step: Callable[[], object]) -> None:
                try:
                    step()
                except Exception as exc:
                    errors.append(f"{what}: {exc}")

            if self.dns is not None:
                attempt("dns forwarder", self.dns.stop)
            thread = self._thread
            if thread is not None:
                if thread.monitor is not None:
                    thread.monitor.stop()
                thread.join(5)
            attempt("nft table", lambda: remove_host_table(self.host_table))
            # Deleting the veth waits for the kernel (~20 ms): the kernel deletes it anyway with
            # the namespace, once nothing holds that any more, on its own (it takes about a
            # second, and needs no runner). Only a process still in the namespace (one that
            # escaped the agent's session) would keep it, and its way out, alive: then now.
            if namespace_in_use(self.netns_path):
                attempt("veth", lambda: remove_host_link(self.host_if))
            attempt("namespace", lambda: remove_netns_mount(self.netns_path))
            if thread is not None and thread.netns_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(thread.netns_fd)
                thread.netns_fd = None
            attempt("resolv.conf", lambda: remove_resolv_dir(self.resolv_path.parent, self.name))
            attempt("marker", lambda: release_marker(self.state_dir, self.name))
            self._host_index = None
            return errors


def _endpoint(upstream: Upstream | None) -> str | None:
    return f"{upstream[0]}:{upstream[1]}" if upstream else None


def namespace_in_use(path: Path) -> bool:
    """Whether a process is in the namespace mounted at ``path`` (True when unsure)."""
    try:
        mounted = os.stat(path)
    except OSError:
        return False
    try:
        pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return True
    for pid in pids:
        try:
            info = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue  # gone, or not ours to look at
        if (info.st_ino, info.st_dev) == (mounted.st_ino, mounted.st_dev):
            return True
    return False


def remove_host_table(table: str) -> bool:
    """Delete host nft table ``table``; False if it did not exist."""
    try:
        host().nft.run(firewall.delete_table(table))
    except NftError as exc:
        if "No such file or directory" in str(exc):
            return False
        raise
    return True


def remove_host_link(ifname: str) -> bool:
    """Delete host link ``ifname`` (a veth takes its peer along); False if absent."""
    rtnl = host().rtnl
    index = rtnl.link_index(ifname)
    return index is not None and rtnl.delete_link(index)


def remove_netns_mount(path: Path) -> bool:
    """Unmount (lazily) and unlink a named namespace; False if it was not there."""
    # What pyroute2's netns.remove does, without its module's import (tens of milliseconds):
    # an unmount that fails (not mounted any more) still leaves the name to unlink.
    with contextlib.suppress(OSError):
        syscalls.unmount_detached(os.fsencode(path))
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _resolv_tag(name: str) -> str:
    # The first line of a sandbox's resolv.conf: what says the directory is ours.
    return f"# {ALIAS_PREFIX}{name}:"


def resolv_is_ours(directory: Path, name: str) -> bool:
    """Whether ``directory``'s resolv.conf is the one sandbox ``name`` wrote.

    OSError (FileNotFoundError when there is none) if it cannot be read.
    """
    with open(directory / "resolv.conf") as f:
        return f.readline().startswith(_resolv_tag(name))


def remove_resolv_dir(directory: Path, name: str) -> bool:
    """Remove ``/etc/netns/<name>`` if it is ours (our resolv.conf and nothing foreign)."""
    try:
        ours = resolv_is_ours(directory, name)
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            directory.rmdir()
        return False
    if not ours:
        return False
    shutil.rmtree(directory, ignore_errors=True)
    return True


def release_marker(directory: Path, name: str) -> None:
    """Remove ``name``'s marker; the last sandbox to go restores IP forwarding."""
    with pool_lock(directory):
        markers.remove_marker(directory, name)
        restore_forwarding(directory)


def restore_forwarding(directory: Path) -> None:
    """Put ip_forward back as it was before the first sandbox, once none is left.

    Call with the pool lock held.
    """
    orig = directory / FORWARD_ORIG
    if markers.read_markers(directory) or not orig.exists():
        return
    value = orig.read_text().strip()
    with contextlib.suppress(OSError):
        if value in ("0", "1"):
            _write(IP_FORWARD, value)
    orig.unlink(missing_ok=True)


def _enable_forwarding(directory: Path) -> str:
    """Turn IPv4 forwarding on (pool lock held); returns what it was."""
    was = IP_FORWARD.read_text().strip()
    if was != "1":
        orig = directory / FORWARD_ORIG
        if not orig.exists():
            write_atomic(orig, was.encode(), mode=0o644)
        _write(IP_FORWARD, "1")
    return was


def _search_lines(resolv_conf: Path) -> list[str]:
    # The host's search domains and options still apply inside; its nameservers do not.
    try:
        text = resolv_conf.read_text()
    except OSError:
        return []
    keep = ("search ", "domain ", "options ")
    return [line.strip() for line in text.splitlines() if line.strip().startswith(keep)]


def _user_namespaces() -> str:
    try:
        limit = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        limit = 0
    return "available" if limit > 0 else "not available"


def check_can_create() -> None:
    """Raise the error that says why no sandbox can be made here (root, nftables)."""
    if os.geteuid() != 0:
        raise NotRootError(
            "--sandbox=netns needs root (network namespaces, veths and nftables on the host): "
            "run it with sudo. User namespaces are "
            f"{_user_namespaces()} here, but a rootless netns sandbox cannot give the agent "
            "a route out; use --sandbox=container for that"
        )
    if not nft_available():
        from .nft import INSTALL_HINT, NftablesMissingError

        raise NftablesMissingError(INSTALL_HINT)


def create_sandbox(
    runner_pid: int,
    agent_id: str | None,
    policy: Policy | None = None,
    pool: AddressPool | None = None,
    *,
    upstreams: list[Upstream] | None = None,
    on_event: Callable[[Event], None] | None = None,
    state_dir: Path | None = None,
    run_dir: Path = DEFAULT_RUN_DIR,
    resolv_dir: Path = RESOLV_DIR,
    host_resolv_conf: Path = HOST_RESOLV,
    adopt: Path | None = None,
) -> NetnsSandbox:
    """Create and start the network sandbox of one agent of runner ``runner_pid``.

    ``policy`` is copied (the sandbox learns host addresses into its own);
    ``upstreams`` are the resolvers the DNS forwarder asks (default: the
    host's resolv.conf); ``on_event`` receives every netmon event (``source:
    "netns"``), e.g. ``NetmonStats.ingest``, from the monitor and DNS threads.
    ``adopt`` names an existing namespace (a container's ``/proc/PID/ns/net``)
    to set up instead of a new one: it is bind-mounted under the sandbox's name
    all the same, and lives on after teardown only as long as its other users.
    Raises NotRootError, NftablesMissingError, PoolExhaustedError,
    NameClashError or SandboxError; nothing is left behind on failure.
    """
    started = time.perf_counter()
    check_can_create()
    name = namespace_name(runner_pid, agent_id)
    if parse_name(name) is None:
        raise SandboxError(f"agent id {agent_id!r} cannot be part of a namespace name")
    base = policy or Policy()
    policy = Policy(base.allow, base.deny, base.default)
    pool = pool or AddressPool()
    directory = markers.state_dir(state_dir)
    netns_path = Path(run_dir) / name
    if netns_path.exists():
        raise NameClashError(
            f"network namespace {name} already exists: another runner with pid {runner_pid}, "
            "or one that crashed (`sudo aegis-mcp netns cleanup` removes those)"
        )
    upstreams = list(upstreams) if upstreams is not None else host_upstreams(host_resolv_conf)
    unresolved = _resolve_policy_hosts(policy, upstreams)
    handles = host()
    host_addresses: list[str] = []
    owner_start = process_start_time(runner_pid)
    claim: dict[str, Any] = {}

    def claim_subnet(subnet: ipaddress.IPv4Network) -> None:
        taken = {m.get("host_if") for m in markers.read_markers(directory)}
        number = 0
        while (host_if := host_if_name(runner_pid, number)) in taken or handles.rtnl.link_index(
            host_if
        ):
            number += 1
        gateway, address = endpoints(subnet)
        claim.update(
            name=name,
            owner_pid=runner_pid,
            owner_start=owner_start,
            agent_id=agent_id,
            subnet=str(subnet),
            gateway=gateway,
            address=address,
            host_if=host_if,
            host_table=name,
            netns=str(netns_path),
            resolv_dir=str(resolv_dir / name),
            created_at=time.time(),
        )
        markers.write_marker(directory, claim)
        claim["ip_forward_was"] = _enable_forwarding(directory)

    def host_networks() -> list[ipaddress.IPv4Network]:
        addresses, networks = handles.rtnl.addresses_and_networks()
        host_addresses.extend(addresses)
        return networks

    subnet = allocate(pool, name, directory, host_networks, claim_subnet)
    sandbox = NetnsSandbox(
        name=name,
        owner_pid=runner_pid,
        agent_id=agent_id,
        policy=policy,
        subnet=subnet,
        gateway=claim["gateway"],
        address=claim["address"],
        host_if=claim["host_if"],
        host_table=name,
        netns_path=netns_path,
        resolv_path=resolv_dir / name / "resolv.conf",
        state_dir=directory,
        upstreams=upstreams,
        host_netns_fd=handles.netns_fd,
        on_event=on_event,
        adopted=adopt,
        ip_forward_was=claim["ip_forward_was"],
        unresolved=unresolved,
    )
    try:
        _start(sandbox, pool, host_addresses, host_resolv_conf)
    except BaseException as exc:
        sandbox.teardown()
        if isinstance(exc, SandboxError | KeyboardInterrupt):
            raise
        if isinstance(exc, OSError) and exc.errno == errno.EEXIST:
            raise NameClashError(f"{name}: {exc}") from exc
        raise SandboxError(f"cannot create the network sandbox {name}: {exc}") from exc
    sandbox.setup_secs = time.perf_counter() - started
    return sandbox


def _resolve_policy_hosts(policy: Policy, upstreams: list[Upstream]) -> list[str]:
    names = [r.host for r in policy.host_rules if r.host and not r.host.startswith("*.")]
    if not names or not upstreams:
        return sorted(set(names))
    unresolved = []
    for hostname, addrs in resolve(sorted(set(names)), upstreams).items():
        if addrs:
            policy.learn([hostname], addrs)
        else:
            unresolved.append(hostname)
    return unresolved


def _start(
    sb: NetnsSandbox, pool: AddressPool, host_addresses: list[str], host_resolv_conf: Path
) -> None:
    _prepare_run_dir(sb.netns_path.parent)
    # The gateway is not among the host's addresses yet: its own DNS port aside,
    # it is the host like any other address.
    addresses = [*host_addresses, sb.gateway]
    ruleset = firewall.sandbox_ruleset(sb.policy, sb.gateway, pool.network, addresses)
    handles = host()
    comment = firewall.host_table_comment(sb.name, sb.owner_pid)
    handles.nft.run(
        firewall.host_ruleset(sb.host_table, comment, sb.host_if, sb.subnet, sb.gateway, sb.policy)
    )
    sb._write_resolv(_search_lines(host_resolv_conf))
    # One thread at a time: this one waits while the namespace thread works.
    # Overlapping them looked cheaper but cost more, as each handed the GIL
    # to the other only at the 5 ms switch interval.
    thread = _NamespaceThread(sb, ruleset)
    sb._thread = thread
    thread.start()
    if not thread.ready.wait(SETUP_TIMEOUT):
        raise SandboxError(f"setting up the namespace {sb.name} took over {SETUP_TIMEOUT} s")
    if thread.error is not None:
        raise thread.error
    sb.dns = DnsForwarder(sb.gateway, sb.upstreams, sb._on_answer)
    sb.dns.start()
    index = handles.rtnl.link_index(sb.host_if)
    if index is None:
        raise SandboxError(f"the host end {sb.host_if} of {sb.name} is missing")
    handles.rtnl.request(
        [
            alias_msg(index, ALIAS_PREFIX + sb.name),
            addr_msg(index, sb.gateway, sb.subnet.prefixlen),
            up_msg(index),
        ]
    )
    sb._host_index = index
    sb._prepare_confine()
