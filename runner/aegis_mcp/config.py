"""The user's config file: runner settings, watchdog defaults and custom agent profiles.

``~/.config/aegis-mcp/config.toml`` (or ``$AEGIS_MCP_CONFIG``)::

    [runner]
    stop_grace_secs = 3        # each of SIGINT, SIGTERM before the next signal
    restart_delay_secs = 0.3   # lets a restart tool's reply reach the agent first
    restart_limit_burst = 5    # restarts of any kind allowed ...
    restart_limit_interval_secs = 60   # ... within this window (0: no limit)

    [pool]
    max_agents = 4             # background agents at once (default: CPUs, at least 2)
    max_spawn_depth = 2        # pool agents may spawn agents this many levels deep

    [watchdog]
    heartbeat_timeout_secs = 120
    lockup_action = "restart_with_backoff"

    [sandbox]                  # --sandbox=netns
    pool = "10.213.0.0/16"     # private range for the sandboxes' /30s

    [container]                # --sandbox=container (see sandbox/container/settings.py)
    engine = "unix:///run/podman/podman.sock"   # default: discovered
    mounts = ["~/.gitconfig:ro"]
    memory = "4g"

    [policy]                   # egress policy of sandboxed agents (default allow)
    deny = ["169.254.169.254", "10.0.0.0/8"]
    allow = ["api.anthropic.com:443"]

    [dashboard]
    notify = "command"         # Idle/Unresponsive: "bell" (default), "none" or "command"
    notify_command = ["notify-send", "aegis-mcp", "{state}: {reason}"]

    [agents.myagent]           # `aegis-mcp myagent ...`
    command = ["myagent", "--some-fixed-flag"]
    continue_args = ["--continue"]
    permission_args = ["--yes"]
    mcp_inject = "flag"        # flag | preload | settings | none
    mcp_inject_args = ["--mcp-config", "{config}"]   # also {command} {args} {env}
    headless_args = ["-p", "{task}"]
    value_options = ["--model"]         # the command line (see agents/syntax.py)
    [agents.myagent.subcommands.run]    # `myagent run PROMPT` runs headless
    headless = true

    [agents.myagent.watch]     # what the watchdog knows of its screen (regexes)
    prompt = ['^> ']           # on the cursor's line: waiting for the user
    busy = ['esc to interrupt']   # anywhere: working (a spinner line)
    noise = ['\\d+ tokens']     # redrawn in place, not progress

A profile may name a built-in (``[agents.claude]``) to change some of its fields.
Every error names the file, the key and what is wrong; nothing is guessed.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from .agents.profiles import BUILTIN_PROFILES, AgentProfile, McpInject, WatchRules
from .agents.syntax import CommandSyntax
from .sandbox.container.settings import ContainerSettings, SettingsError
from .watchdog.config import WatchdogConfig, WatchdogConfigError, validate_changes


class ConfigError(ValueError):
    """The config file is unreadable or invalid."""


@dataclass(frozen=True)
class RunnerSettings:
    """Runner timing settings and the restart limit."""

    stop_grace_secs: float = 3.0
    restart_delay_secs: float = 0.3
    restart_limit_burst: int = 5
    """At most this many restarts of the primary agent, whoever asks (a tool, the
    command line, the socket, the watchdog), within ``restart_limit_interval_secs``
    (systemd's StartLimitBurst); one more is refused and the agent left running. Each
    pool agent has a limit of its own with these settings."""
    restart_limit_interval_secs: float = 60.0
    """The window of the restart limit (StartLimitIntervalSec); 0 turns the limit off."""


@dataclass(frozen=True)
class PoolSettings:
    """Background agent pool settings."""

    max_agents: int | None = None
    """Agents running at once; None: max(2, number of CPUs)."""
    max_spawn_depth: int = 2
    """Levels of agents: the user's or primary agent's are at 1, theirs at 2, ..."""


@dataclass(frozen=True)
class SandboxSettings:
    """Network sandbox settings: the ``[sandbox]`` and ``[policy]`` tables."""

    pool: str = "10.213.0.0/16"
    """Private range the sandboxes' subnets are cut from."""
    prefixlen: int = 30
    warm_namespaces: int = 1
    """Namespaces kept ready for pool agents' ``sandbox="netns"`` (0: none), from the first one
    on."""
    policy: dict[str, Any] = field(default_factory=dict)
    """The ``[policy]`` table (``default``, ``allow``, ``deny``), checked at load."""


NOTIFY_KINDS = ("bell", "none", "command")


@dataclass(frozen=True)
class DashboardSettings:
    """How the dashboard tells the user that the agent became Idle or Unresponsive."""

    notify: str = "bell"
    notify_command: tuple[str, ...] = ()
    """argv run for ``notify = "command"``; ``{state}``, ``{reason}``, ``{pid}`` filled in."""


@dataclass(frozen=True)
class Config:
    """Everything read from the config file, with defaults filled in."""

    runner: RunnerSettings = field(default_factory=RunnerSettings)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    pool: PoolSettings = field(default_factory=PoolSettings)
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    container: ContainerSettings = field(default_factory=ContainerSettings)
    profiles: dict[str, AgentProfile] = field(default_factory=lambda: dict(BUILTIN_PROFILES))
    path: Path | None = None


# What each configurable field holds, read off the dataclasses so that a new field
# needs no second list here. ``name`` comes from the table's key; the fields of the
# command line (``CommandSyntax``) may stand at the top of an agent's table.
_FIELD_TYPES = {
    f.name: f.type
    for f in dataclasses.fields(AgentProfile)
    if f.name not in ("name", "takes_prompt", "syntax")
}
_SYNTAX_TYPES = {f.name: f.type for f in dataclasses.fields(CommandSyntax)}
_MCP_INJECT = get_args(McpInject)


def _string_list(where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return value


def _patterns(where: str, value: Any) -> tuple[str, ...]:
    patterns = _string_list(where, value)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{where}: {pattern!r} is not a regular expression: {exc}") from None
    return tuple(patterns)


def _watch_rules(where: str, table: Any, base: WatchRules) -> WatchRules:
    """``[agents.NAME.watch]``: the given keys replace the profile's."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    values: dict[str, Any] = {}
    for key, value in table.items():
        at = f"{where}.{key}"
        if key in ("prompt", "busy", "noise"):
            values[key] = _patterns(at, value)
        elif key == "prompt_context_lines":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
                raise ConfigError(f"{at} must be a whole number from 0 to 100")
            values[key] = value
        else:
            raise ConfigError(f"{at}: unknown setting")
    return dataclasses.replace(base, **values)


def _value(kind: Any, at: str, value: Any) -> Any:
    """``value`` checked and converted for a field of type ``kind``."""
    if kind == "tuple[str, ...]":
        return tuple(_string_list(at, value))
    if kind == "frozenset[str]":
        return frozenset(_string_list(at, value))
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{at} must be true or false")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{at} must be a string")
        return value
    if kind == "McpInject":
        if value not in _MCP_INJECT:
            raise ConfigError(f"{at} must be one of {', '.join(_MCP_INJECT)}")
        return value
    raise ConfigError(f"{at}: unknown setting")


def _syntax(base: CommandSyntax, table: dict[str, Any], where: str) -> CommandSyntax:
    """``base`` with the command-line fields of ``table`` (and its subcommands) changed."""
    values: dict[str, Any] = {}
    for key, value in table.items():
        at = f"{where}.{key}"
        if key == "subcommands":
            if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
                raise ConfigError(f"{at} must be a table of tables")
            subs = dict(base.subcommands)
            for sub, body in value.items():
                subs[sub] = _syntax(subs.get(sub, CommandSyntax()), body, f"{at}.{sub}")
            values[key] = subs
        else:
            values[key] = _value(_SYNTAX_TYPES.get(key), at, value)
    return dataclasses.replace(base, **values)


def _profile(name: str, table: Any, where: str) -> AgentProfile:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"{where}: agent names may use letters, digits, '-' and '_' only")
    base = BUILTIN_PROFILES.get(name)
    values: dict[str, Any] = {}
    syntax_table = {k: v for k, v in table.items() if k in _SYNTAX_TYPES}
    for key, value in table.items():
        if key == "watch":
            values[key] = _watch_rules(
                f"{where}.{key}", value, base.watch if base else WatchRules()
            )
        elif key not in syntax_table:
            values[key] = _value(_FIELD_TYPES.get(key), f"{where}.{key}", value)
    if syntax_table or base is None:
        values["syntax"] = _syntax(base.syntax if base else CommandSyntax(), syntax_table, where)
    if base is None and not values.get("command"):
        raise ConfigError(f"{where}.command is required for a new agent")
    if "command" in values and not values["command"]:
        raise ConfigError(f"{where}.command must not be empty")
    if values.get("mcp_inject", base.mcp_inject if base else "none") == "flag" and not values.get(
        "mcp_inject_args", base.mcp_inject_args if base else ()
    ):
        raise ConfigError(f'{where}: mcp_inject = "flag" needs mcp_inject_args')
    if base is not None:
        return dataclasses.replace(base, **values)
    return AgentProfile(name=name, **values)


def _runner(table: Any, where: str) -> RunnerSettings:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in RunnerSettings.__dataclass_fields__:
            raise ConfigError(f"{where}.{key}: unknown setting")
        if key == "restart_limit_burst":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
                raise ConfigError(f"{where}.{key} must be a whole number from 1 to 1000")
            values[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
            raise ConfigError(f"{where}.{key} must be a number of seconds between 0 and 3600")
        values[key] = float(value)
    return RunnerSettings(**values)


def _pool(table: Any, where: str) -> PoolSettings:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    for key in table:
        if key not in ("max_agents", "max_spawn_depth"):
            raise ConfigError(f"{where}.{key}: unknown setting")
    value = table.get("max_agents")
    if value is not None and not _whole(value, 1, 1000):
        raise ConfigError(f"{where}.max_agents must be a whole number from 1 to 1000")
    depth = table.get("max_spawn_depth", 2)
    if not _whole(depth, 1, 16):
        raise ConfigError(f"{where}.max_spawn_depth must be a whole number from 1 to 16")
    return PoolSettings(max_agents=value, max_spawn_depth=depth)


def _whole(value: Any, low: int, high: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and low <= value <= high


def _dashboard(table: Any, where: str) -> DashboardSettings:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    for key in table:
        if key not in DashboardSettings.__dataclass_fields__:
            raise ConfigError(f"{where}.{key}: unknown setting")
    notify = table.get("notify", "bell")
    if notify not in NOTIFY_KINDS:
        raise ConfigError(f"{where}.notify must be one of {', '.join(NOTIFY_KINDS)}")
    command = tuple(_string_list(f"{where}.notify_command", table.get("notify_command", [])))
    if notify == "command" and not command:
        raise ConfigError(f'{where}: notify = "command" needs notify_command (a list of strings)')
    try:
        for arg in command:
            arg.format(state="", reason="", pid="")
    except (KeyError, ValueError, IndexError) as exc:
        raise ConfigError(
            f"{where}.notify_command: {arg!r} has a bad placeholder ({exc}); "
            "use {state}, {reason} or {pid}, and {{ }} for braces"
        ) from None
    return DashboardSettings(notify=notify, notify_command=command)


def _sandbox(table: Any, where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    for key in table:
        if key not in ("pool", "prefixlen", "warm_namespaces"):
            raise ConfigError(f"{where}.{key}: unknown setting")
    warm = table.get("warm_namespaces", 1)
    if isinstance(warm, bool) or not isinstance(warm, int) or not 0 <= warm <= 8:
        raise ConfigError(f"{where}.warm_namespaces must be a whole number from 0 to 8")
    from .sandbox.errors import SandboxError
    from .sandbox.netns.pool import DEFAULT_POOL, AddressPool

    cidr, prefixlen = table.get("pool", DEFAULT_POOL), table.get("prefixlen", 30)
    if not isinstance(cidr, str):
        raise ConfigError(f'{where}.pool must be a string such as "10.213.0.0/16"')
    if isinstance(prefixlen, bool) or not isinstance(prefixlen, int):
        raise ConfigError(f"{where}.prefixlen must be 30 or 31")
    try:
        AddressPool(cidr, prefixlen)
    except SandboxError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return dict(table)


def _container(table: Any, where: str) -> ContainerSettings:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    try:
        return ContainerSettings.from_table(table)
    except SettingsError as exc:
        raise ConfigError(f"{where}.{exc}") from None


def _policy(table: Any, where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    from .sandbox.errors import PolicyError
    from .sandbox.policy import Policy

    try:
        Policy.from_config(table)
    except PolicyError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return dict(table)


def _read_regular_file(path: Path) -> bytes:
    # Non-blocking: a FIFO named as the config must give an error, not a hang.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return f.read()


def load_config(path: Path) -> Config:
    """Read and validate the config file; a missing file gives the defaults."""
    try:
        raw = _read_regular_file(path)
    except FileNotFoundError:
        return Config()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    import tomllib

    try:
        data = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    runner = RunnerSettings()
    pool = PoolSettings()
    sandbox: dict[str, Any] = {}
    policy: dict[str, Any] = {}
    container = ContainerSettings()
    watchdog = WatchdogConfig()
    dashboard = DashboardSettings()
    profiles = dict(BUILTIN_PROFILES)
    for section, table in data.items():
        where = f"{path}: [{section}]"
        if section == "runner":
            runner = _runner(table, where)
        elif section == "pool":
            pool = _pool(table, where)
        elif section == "sandbox":
            sandbox = _sandbox(table, where)
        elif section == "policy":
            policy = _policy(table, where)
        elif section == "dashboard":
            dashboard = _dashboard(table, where)
        elif section == "container":
            container = _container(table, where)
        elif section == "watchdog":
            if not isinstance(table, dict):
                raise ConfigError(f"{where} must be a table")
            try:
                watchdog = WatchdogConfig(**validate_changes(table))
            except WatchdogConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        elif section == "agents":
            if not isinstance(table, dict):
                raise ConfigError(f"{where} must be a table")
            for name, body in table.items():
                profiles[name] = _profile(name, body, f"{path}: [agents.{name}]")
        else:
            raise ConfigError(f"{where}: unknown section")
    return Config(
        runner=runner,
        watchdog=watchdog,
        pool=pool,
        sandbox=SandboxSettings(**sandbox, policy=policy),
        dashboard=dashboard,
        container=container,
        profiles=profiles,
        path=path,
    )
