"""The runner's state as clients read it: ``server_status``, the snapshot file, ``subscribe``.

One schema for all three, written here so that the runner builds it and every
client (the CLI's ``status``, the MCP server, the dashboard) reads it without
guessing. ``schema_version`` changes when a field is removed or changes its
meaning; new fields may appear at any time (readers ignore what they do not
know).

- ``server_status`` answers :class:`ServerStatus`.
- The snapshot file (``state-<runner pid>.json`` in the runtime directory,
  replaced atomically after every change) holds a :class:`Snapshot`: the
  status with the watchdog in full, the pool's agents with their output tails,
  the file locks, the netmon counters and the last events.
- ``subscribe`` answers a :class:`StateMessage` (the current :class:`Snapshot`),
  then streams one JSON line per message on the same connection, each
  ``{"v": 1, "id": <request id>, "stream": <message>}``: a :class:`ChangeMessage`
  when a section of the state changes (the whole section; ``pool_agents`` one
  agent at a time), an :class:`EventMessage` for each runner event, a
  :class:`NetmonMessage` for each netmon event, and last an :class:`EndMessage`
  (the runner is exiting, or the client read too slowly and was dropped).
  Fold them into the state with :func:`apply`. Messages carry a ``seq`` that
  grows by one, so a client can tell it missed none.

The types are documentation as much as checks: TypedDicts, so the wire stays
plain JSON.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict, get_args

SCHEMA_VERSION = 1

Section = Literal[
    "runner",
    "agent",
    "watchdog",
    "pool",
    "pool_agents",
    "locks",
    "netmon",
    "netmon_stats",
    "sandbox",
    "system",
    "authority",
]
SECTIONS: tuple[Section, ...] = get_args(Section)
"""The parts of a :class:`Snapshot` that change messages replace."""


class RunnerInfo(TypedDict):
    """The runner process and its files."""

    pid: int
    version: str
    started_at: float
    uptime_secs: float
    socket: str
    snapshot: str
    event_log: str
    hooks_library: str | None


class UserInfo(TypedDict):
    """Who the agents run as."""

    uid: int
    name: str
    dropped_from_root: bool


class RestartRecord(TypedDict):
    """One hot reload of the primary agent."""

    number: int
    ts: float
    reason: str
    by: str
    """Who asked: ``watchdog``, ``control socket``, ``aegis-mcp restart``, an MCP tool, ..."""
    prompt: str | None
    pid: int
    caller: str
    """Who asked, as the runner established it (``primary agent``, ``user (uid N)``, ...)."""
    latency_secs: float
    """From the request to the new agent process."""


class AgentInfo(TypedDict):
    """The primary agent."""

    id: str
    profile: str
    executable: str
    args: list[str]
    command: list[str] | None
    pid: int | None
    status: Literal["starting", "running", "restarting", "stopping", "exited"]
    exit_code: int | None
    started_at: float | None
    uptime_secs: float | None
    terminal: Literal["pty", "pipes"]
    interactive: bool
    headless: bool
    cwd: str
    user: UserInfo
    permission_flags: list[str]
    mcp_injection: Literal["flag", "preload", "off"]
    restarts: int
    restart_history: list[RestartRecord]
    """The last 20."""
    restart_limit: dict[str, Any]
    """Every restart of this agent, whoever asks, against ``[runner] restart_limit_burst``
    in ``restart_limit_interval_secs``: ``burst``, ``interval_secs``, ``enabled``,
    ``restarts_in_window``, ``refused``, ``last_refusal`` (the message, None before any)."""


class WatchdogSummary(TypedDict):
    """The watchdog in ``server_status``."""

    enabled: bool
    state: Literal["Active", "Idle", "Unresponsive", "HighResource"]
    reason: str
    lockup_action: str
    heartbeat_timeout_secs: float


class WatchdogStatus(WatchdogSummary, total=False):
    """The watchdog in full (``watchdog_status``, the snapshot)."""

    configured_enabled: bool
    disabled_for_secs: float | None
    last_activity_secs_ago: float
    last_activity_kind: str
    """The signal that counted as progress last: ``screen``, ``output``, ``network``, ``io``,
    ``tool_call``, ``ping`` (or ``start``, ``re-enabled``)."""
    signals: dict[str, Any]
    """What each sign of life reads now: ``screen`` (the emulator's view: ``prompt_visible``,
    ``busy_line``, ``tail`` of lines up to the cursor, ``changes``, ``noise_redraws``) or
    ``output`` (pipes), ``network`` (the tree's TCP connections, rates against the floor,
    netmon's count), ``io``, ``cpu``, ``processes``; each with ``counted_secs_ago`` once it
    has counted."""
    restart_limit: dict[str, Any]
    """``burst``, ``interval_secs``, ``restarts_in_window``, ``refused``, ``last_refusal``,
    ``stood_down`` (a restart was refused: no more until watchdog_ping/configure)."""
    consecutive_unresponsive_checks: int
    waiting_for_ping: bool
    pending_action: str | None
    backoff_restarts: int
    gave_up: bool
    checks: int
    resources: dict[str, Any] | None
    """``processes``, ``rss_mb``, ``cpu_percent``, ``stopped_pids`` of the agent's tree."""
    config: dict[str, Any]
    recent_actions: list[dict[str, Any]]


class ProcessCoverage(TypedDict):
    """What the run's netmon sources see of one process of the agent's tree."""

    pid: int
    comm: str
    verdict: Literal["full", "partial", "blind", "unknown"]
    """``full``: its connects and bytes are seen; ``partial``: one of the two; ``blind``:
    neither; ``unknown``: no traffic to judge by yet."""
    connects: bool | None
    bytes: bool | None
    """False: some of its bytes were not seen, and its byte counts read None."""
    reason: str | None
    """Why not (``raw syscalls``, ``statically linked: ...``), None when all is seen."""
    line: str
    """``claude: connects seen, bytes not: raw syscalls; use --netmon=ebpf``."""
    sources: dict[str, str]
    """Each source's own verdict, by name."""


class NetmonCoverage(TypedDict):
    """Whether the sources see the agent, proved against /proc and the kernel about once
    a second while it runs (README: Network monitoring)."""

    verdict: Literal["full", "partial", "blind", "unknown"]
    """The worst of the processes'."""
    checks: int
    hint: str | None
    """What would see what is missed (``use --netmon=ebpf``), None when nothing would."""
    processes: list[ProcessCoverage]
    """Newest first."""
    error: str | None
    """Why the last look failed, if it did."""


class NetmonInfo(TypedDict):
    """How the run is monitored."""

    mode: str
    """The sources in use joined by ``+`` (``preload``, ``netns+ebpf``, ...), or ``off``."""
    reason: str | None
    """Why the sources are not what was asked for (said at start), None when they are."""
    sources: dict[str, dict[str, Any]]
    """Each source's own description, by name (``preload``, ``ebpf``, ``netns``)."""
    log_file: str | None
    ebpf: dict[str, Any] | None
    """The eBPF tiers and counters, when that source runs."""
    coverage: NetmonCoverage | None
    """What the sources see of the agent; None until an agent runs with a source."""


class WarmInfo(TypedDict):
    """The pool of netns sandboxes made ahead (``[sandbox] warm_namespaces``)."""

    size: int
    ready: int
    """Made and not given to an agent yet."""
    failures: list[str]
    """Why the last ones could not be made (the agents' starts then make their own)."""


class SandboxInfo(TypedDict):
    """Where the agents run."""

    kind: Literal["none", "netns", "container"]
    """The primary agent's."""
    sandboxes: dict[str, dict[str, Any]]
    """Every sandbox of the run by agent id (``primary`` and pool agents), each its backend's
    description with ``kind`` first."""
    warm_namespaces: WarmInfo | None
    """Netns sandboxes kept ready for pool agents; None until the first one asks for one."""


class TreeUse(TypedDict):
    """CPU and memory of the primary agent and every process it started."""

    processes: int
    rss_mb: float
    cpu_percent: float
    """Percent of one core (a tree busy on two cores shows 200)."""


class MachineUse(TypedDict):
    """CPU and memory of the whole machine."""

    cpus: int
    cpu_percent: float
    """Percent of all the machine's cores together (0 to 100)."""
    memory_total_mb: float
    memory_used_mb: float
    """Total less what is available (page cache that can be dropped counts as available)."""


class SystemInfo(TypedDict):
    """Resource use for the dashboard's System panel, sampled at most once a second."""

    sampled_at: float
    agent_tree: TreeUse | None
    """None while no agent process runs."""
    machine: MachineUse


class Refusal(TypedDict):
    """A control request refused for who made it."""

    ts: float
    who: dict[str, Any]
    """The caller (``kind`` user/primary/pool, ``agent_id``, ``uid``, ``pid``), or the claim
    that was not proven (``kind`` ``unproven``, ``claimed``: the agent id it named)."""
    op: str
    reason: str


class AuthorityInfo(TypedDict):
    """Who asked for what (see ``aegis_mcp.control.authority``): every request counted, the
    refusals by caller, the latest refusals. Each request is also a ``control.request`` or
    ``control.refused`` event."""

    requests: int
    refused: int
    refused_by: dict[str, int]
    """By the caller's label (``pool agent ID``, ``pid N (uid U) claiming agent 'X'``)."""
    recent_refusals: list[Refusal]
    """The last 20, oldest first."""


class ServerStatus(TypedDict):
    """What ``server_status`` answers (to the user and the primary agent; a pool agent
    gets its own view: the runner, ``agent`` itself with ``spawned_by`` and ``depth``, its
    own ``watchdog``, the pool's limits and the agents it spawned, ``netmon``). Every
    answer ends with ``caller``: who asked as the runner established it, and ``may``,
    what it may do by operation."""

    schema_version: int
    runner: RunnerInfo
    agent: AgentInfo
    watchdog: WatchdogSummary
    pool: dict[str, Any] | None
    """``agent_pool_stats``: counts by status, this pool's share, the database; None until
    the pool is first used (``{"error": ...}`` while its database cannot be read)."""
    netmon: NetmonInfo
    sandbox: SandboxInfo
    authority: AuthorityInfo


class PoolAgent(TypedDict, total=False):
    """A background agent as ``agent_list`` shows it, with its output tail while it runs."""

    agent_id: str
    agent_type: str
    status: str
    description: str
    pid: int | None
    created_at: float
    started_at: float | None
    ended_at: float | None
    run_secs: float | None
    """In whole seconds while the agent runs (the state is not resent for its clock alone)."""
    exit_code: int | None
    runner_pid: int
    spawned_by: str | None
    """``user``, ``primary`` or the id of the pool agent that spawned it."""
    depth: int
    last_output: list[str]
    """The last lines it wrote (agents of this runner that have started)."""
    output_bytes: int


class FileLock(TypedDict):
    """A file lock held by an agent (``agent_file_locks``)."""

    path: str
    holder: str
    holder_pid: int | None
    since: float
    expires_at: float
    owner_pid: int


class RunnerEvent(TypedDict, total=False):
    """One entry of the runner's event log (``events``, the event log file)."""

    seq: int
    ts: float
    kind: str
    """``agent.start``, ``agent.restarted``, ``watchdog.state``, ``pool.start``, ..."""
    level: Literal["info", "warning", "error"]
    message: str


class Snapshot(TypedDict):
    """The snapshot file and the first message of ``subscribe``."""

    schema_version: int
    runner: RunnerInfo
    agent: AgentInfo
    watchdog: WatchdogStatus
    pool: dict[str, Any] | None
    pool_agents: dict[str, PoolAgent]
    """By agent id; empty until the pool is first used."""
    locks: list[FileLock]
    netmon: NetmonInfo
    netmon_stats: dict[str, Any] | None
    """``netmon_status``: totals, top targets and processes, and ``traffic`` (bytes and
    events per ``bucket_secs`` over the last minutes, oldest first, the last bucket
    ending at ``until``); None when monitoring is off (also when no source could
    start). Bytes no source saw are None, not 0: the totals ``bytes_sent``/
    ``bytes_received`` (``bytes_counted`` keeps what was counted), and the
    ``bytes_sent``/``bytes_received`` of the processes and targets concerned."""
    sandbox: SandboxInfo
    system: SystemInfo | None
    """None during the run's first second (the first sample is taken then)."""
    authority: AuthorityInfo
    events: list[RunnerEvent]
    """The last 50."""
    netmon_events: list[dict[str, Any]]
    """The last 20 netmon events (the format of :mod:`aegis_mcp.netmon.schema`)."""
    written_at: float


class StateMessage(TypedDict):
    """The current state: the reply to ``subscribe``."""

    type: Literal["state"]
    seq: int
    state: Snapshot


class ChangeMessage(TypedDict, total=False):
    """A section of the state replaced (``pool_agents``: one agent, ``value`` None when gone)."""

    type: Literal["change"]
    seq: int
    section: Section
    key: str
    value: Any


class EventMessage(TypedDict):
    """A runner event, as it happens."""

    type: Literal["event"]
    seq: int
    event: RunnerEvent


class NetmonMessage(TypedDict, total=False):
    """A netmon event, as a source delivered it; ``skipped`` counts the events left out
    before this one when they came faster than a client could be sent them."""

    type: Literal["netmon"]
    seq: int
    event: dict[str, Any]
    skipped: int


class EndMessage(TypedDict):
    """The last message: ``end`` (the runner is exiting) or ``dropped`` (too slow a reader)."""

    type: Literal["end", "dropped"]
    seq: int
    reason: str


StreamMessage = StateMessage | ChangeMessage | EventMessage | NetmonMessage | EndMessage
KEYED_SECTIONS = ("pool_agents",)
"""Sections whose change messages carry one entry (``key``) rather than the whole section."""
MAX_EVENTS = 50
MAX_NETMON_EVENTS = 20


def apply(state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """Fold one stream message into ``state`` (a :class:`Snapshot`, changed in place)."""
    kind = message.get("type")
    if kind == "state":
        state.clear()
        state.update(message["state"])
    elif kind == "change":
        section = message["section"]
        if section in KEYED_SECTIONS:
            entries = state.setdefault(section, {})
            if message.get("value") is None:
                entries.pop(message["key"], None)
            else:
                entries[message["key"]] = message["value"]
        else:
            state[section] = message["value"]
    elif kind == "event":
        state["events"] = [*state.get("events", []), message["event"]][-MAX_EVENTS:]
    elif kind == "netmon" and "event" in message:
        events = [*state.get("netmon_events", []), message["event"]]
        state["netmon_events"] = events[-MAX_NETMON_EVENTS:]
    return state
