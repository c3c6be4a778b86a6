"""Every example in the README is parsed or run here, so that README and code cannot drift.

Command lines (in ```bash blocks and inline code) go through the CLI's own
parsers: agent runs through the wrapper's argument parser and the config's
profiles, other commands through the typer application's parser (without
running them: some need root or a live runner), and the harmless ones
(``--version``, ``--mcp-server``) are run. The config block is loaded by the
config loader, the JSON blocks are parsed, the protocol example is decoded.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import typer.main

from aegis_mcp.agents.command import restart_args
from aegis_mcp.cli.app import app
from aegis_mcp.cli.args import parse_agent_invocation, parse_run_command
from aegis_mcp.cli.main import APP_COMMANDS
from aegis_mcp.config import Config, load_config
from aegis_mcp.control.protocol import decode_request
from helpers import AEGIS, REPO

README = (REPO / "README.md").read_text()
# Placeholders in the README's synopsis lines, and what stands in for them here.
PLACEHOLDERS = {"PID": "4242", "TEXT": "some text", "SECS": "5", "SPEC": "example.com:443"}
# Lines of the bash blocks that are not aegis-mcp commands: the build and the VM.
OTHER_TOOLS = ("make", "vagrant")
# Examples the README gives of mistakes: they must be refused.
MISTAKES = {("restart", "abc")}


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.DOTALL)


def _expand(line: str) -> list[list[str]]:
    """Concrete argument lists for a synopsis line: ``[X]`` kept, ``a | b`` both."""
    line = re.sub(r"\[([^\]]*)\]", r"\1", line.replace("...", ""))
    first, *alternatives = line.split(" | ")
    variants = [first]
    prefix = first.rsplit(" ", 1)[0]
    variants += [f"{prefix} {alt}" for alt in alternatives]
    out = []
    for variant in variants:
        words = shlex.split(variant, comments=True)
        out.append([PLACEHOLDERS.get(word, word) for word in words])
    return out


def _command_lines() -> list[list[str]]:
    lines = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if not words:
                continue
            if words[0] in OTHER_TOOLS:
                continue
            assert words[0] == "aegis-mcp", f"a README command this test does not know: {line}"
            lines.extend(_expand(line))
    for code in re.findall(r"`(?:sudo )?(aegis-mcp [^`]*)`", README):
        lines.extend(_expand(code))
    unique = dict.fromkeys(tuple(words[1:]) for words in lines)
    return [list(words) for words in unique]


def _readme_config(tmp_path: Path) -> Config:
    (block,) = _blocks("toml")
    path = tmp_path / "config.toml"
    path.write_text(block)
    return load_config(path)


def test_the_readme_config_block_loads(tmp_path):
    config = _readme_config(tmp_path)
    assert config.sandbox.pool == "10.213.0.0/16"
    assert config.pool.max_agents == 4
    assert config.watchdog.lockup_action == "restart_with_backoff"
    assert config.watchdog.max_memory_mb == 8192
    assert config.runner.stop_grace_secs == 3
    assert (config.runner.restart_limit_burst, config.runner.restart_limit_interval_secs) == (5, 60)
    assert config.profiles["claude"].permission_args == ()
    assert config.profiles["myagent"].command == ("myagent", "--fixed-flag")
    myagent = config.profiles["myagent"]
    assert myagent.is_headless(["run", "x"]) and myagent.is_headless(["--task", "x"])
    assert restart_args(myagent, ["--task", "a"], "b") == ["--continue", "--task", "b"]
    assert config.sandbox.policy["allow"] == ["api.anthropic.com:443"]
    assert config.container.memory == 4 << 30 and config.container.mounts == ("~/.gitconfig:ro",)
    assert config.watchdog.restart_limit_burst == 5
    assert config.watchdog.net_floor_bytes_per_sec == 64
    assert config.profiles["myagent"].watch.prompt == ("^myagent> ",)
    assert config.profiles["myagent"].watch.noise == (r"\d+ tokens",)
    assert config.dashboard.notify == "command"
    assert config.dashboard.notify_command[0] == "notify-send"


def _parse_app_command(args: list[str]) -> str:
    """Parse ``args`` with the typer application's parser, as running it would."""
    group = typer.main.get_command(app)
    context = group.make_context("aegis-mcp", list(args))
    rest = [*getattr(context, "_protected_args", []), *context.args]
    while True:
        name, command, rest = group.resolve_command(context, rest)
        context = command.make_context(name, rest, parent=context)
        if not hasattr(command, "resolve_command"):
            return context.command_path
        group = command
        rest = [*getattr(context, "_protected_args", []), *context.args]


@pytest.mark.parametrize("args", _command_lines(), ids=" ".join)
def test_every_readme_command_line_parses(args, tmp_path):
    config = _readme_config(tmp_path)
    first = args[0]
    if tuple(args) in MISTAKES:
        result = subprocess.run([*AEGIS, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and result.stderr.startswith("aegis-mcp: error: ")
        return
    if first in ("--version", "-V", "--mcp-server", "mcp-server"):
        # Handled before any parser; harmless to run (the server ends at end of input).
        result = subprocess.run(
            [*AEGIS, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
    elif first in ("dashboard", "--dashboard"):
        # Parsed by the dashboard itself: run it (no runner, no terminal: a clear refusal).
        result = subprocess.run(
            [*AEGIS, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
        )
        assert "Traceback" not in result.stderr
        assert result.returncode == 0 or (
            result.returncode == 2
            and ("no runner" in result.stderr or "needs a terminal" in result.stderr)
        ), result.stderr
    elif first in APP_COMMANDS:
        assert _parse_app_command(args).startswith("aegis-mcp ")
    elif first == "run":
        parsed = parse_run_command(args[1:])
        assert parsed.command
    else:
        parsed = parse_agent_invocation(args)
        assert parsed.agent in config.profiles, f"README names an unknown agent: {args}"


def test_readme_lines_are_found():
    """The extraction above must keep seeing the README's examples."""
    lines = {" ".join(args) for args in _command_lines()}
    assert "claude -p fix the tests --model sonnet" in lines
    assert (
        "netns cleanup" in lines and "restart 4242 --prompt some text --reason some text" in lines
    )
    assert "cleanup --dry-run --runner 4242" in lines
    assert "run -- my-agent --flag" in lines


def test_readme_wrapper_options_parse():
    options = re.findall(r"^\| `(--[^`]+)`(?:, `(--[^`]+)`)?", README, re.MULTILINE)
    names = [name for pair in options for name in pair if name]
    assert "--watchdog-timeout=SECS" in names and "--sandbox=netns" in names
    for name in names:
        args = []
        for word in name.split():
            key, equals, value = word.partition("=")
            args.append(
                key + equals + PLACEHOLDERS.get(value, value)
                if equals
                else PLACEHOLDERS.get(word, word)
            )
        parsed = parse_agent_invocation(["demo", *args])
        assert parsed.agent == "demo" and parsed.agent_args == [], name


def test_readme_json_examples_parse():
    blocks = _blocks("json")
    assert blocks
    for block in blocks:
        server = json.loads(block)["mcpServers"]["aegis-mcp"]
        assert server["command"] == "aegis-mcp" and server["args"] == ["--mcp-server"]
    (protocol,) = re.findall(r'`(\{"v": 1, [^`]*)`', README.replace("\n", " "))
    request = decode_request(protocol.encode())
    assert request.op == "server_status" and request.args == {}
