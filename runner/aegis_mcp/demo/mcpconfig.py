"""MCP server configuration: ``--mcp-config`` values and the project's ``.mcp.json``.

Both use Claude Code's format::

    {"mcpServers": {"NAME": {"command": "...", "args": [...], "env": {...}}}}

(or ``{"type": "http", "url": "..."}`` for a Streamable HTTP server). A bad
``--mcp-config`` value is fatal, as in Claude: that is how a prompt placed right after
the variadic option shows up. A bad ``.mcp.json`` only earns a warning.
"""

from __future__ import annotations

import json
import os
import re

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """An ``--mcp-config`` value is missing, unreadable or malformed."""


class ServerSpec:
    """How to reach one MCP server."""

    __slots__ = ("args", "command", "env", "name", "transport", "url")

    def __init__(
        self,
        name: str,
        transport: str,
        command: str | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        url: str | None = None,
    ) -> None:
        self.name = name
        self.transport = transport
        self.command = command
        self.args = args or []
        self.env = env or {}
        self.url = url

    def __repr__(self) -> str:
        return f"ServerSpec({self.name!r}, {self.transport!r}, {self.command or self.url!r})"


def _expand(text: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` as Claude does; unknown names stay as written."""

    def sub(match: re.Match[str]) -> str:
        value = os.environ.get(match.group(1))
        if value is not None:
            return value
        default = match.group(2)
        return default if default is not None else match.group(0)

    return _VAR.sub(sub, text)


def _parse_servers(doc: object, source: str) -> list[ServerSpec]:
    if not isinstance(doc, dict) or not isinstance(doc.get("mcpServers"), dict):
        raise ConfigError(f'{source}: expected an object with an "mcpServers" object')
    specs = []
    for name, entry in doc["mcpServers"].items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: server {name!r} must be an object")
        transport = entry.get("type", "stdio")
        if transport in ("http", "sse"):
            url = entry.get("url")
            if not isinstance(url, str) or not url:
                raise ConfigError(f'{source}: server {name!r} needs a "url"')
            specs.append(ServerSpec(name, transport, url=_expand(url)))
            continue
        if transport != "stdio":
            raise ConfigError(f"{source}: server {name!r} has unknown type {transport!r}")
        command = entry.get("command")
        args = entry.get("args", [])
        env = entry.get("env", {})
        if not isinstance(command, str) or not command:
            raise ConfigError(f'{source}: server {name!r} needs a "command" string')
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ConfigError(f'{source}: server {name!r}: "args" must be a list of strings')
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise ConfigError(f'{source}: server {name!r}: "env" must map names to strings')
        specs.append(
            ServerSpec(
                name,
                "stdio",
                command=_expand(command),
                args=[_expand(a) for a in args],
                env={k: _expand(v) for k, v in env.items()},
            )
        )
    return specs


def load_value(value: str, cwd: str) -> list[ServerSpec]:
    """Servers from one ``--mcp-config`` value: inline JSON or a path to a JSON file.

    Raises:
        ConfigError: the file is missing or unreadable, or the JSON is malformed.
    """
    if value.lstrip().startswith("{"):
        source = "inline --mcp-config"
        text = value
    else:
        path = os.path.join(cwd, os.path.expanduser(value))
        source = value
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            raise ConfigError(f"MCP config file not found: {value}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read MCP config {value}: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: invalid JSON: {exc}") from None
    return _parse_servers(doc, source)


def load_servers(
    values: list[str], cwd: str, strict: bool = False
) -> tuple[list[ServerSpec], list[str]]:
    """All configured servers, ``--mcp-config`` ones first, and warnings about ``.mcp.json``.

    Servers from ``--mcp-config`` win by name over ``.mcp.json`` (which is skipped with
    ``strict``); their order decides which server answers a plain tool name.

    Raises:
        ConfigError: an ``--mcp-config`` value is unusable.
    """
    merged: dict[str, ServerSpec] = {}
    for value in values:
        for spec in load_value(value, cwd):
            merged[spec.name] = spec
    warnings: list[str] = []
    project = os.path.join(cwd, ".mcp.json")
    if not strict and os.path.isfile(project):
        try:
            for spec in load_value(project, cwd):
                merged.setdefault(spec.name, spec)
        except ConfigError as exc:
            warnings.append(f"ignoring .mcp.json: {exc}")
    return list(merged.values()), warnings
