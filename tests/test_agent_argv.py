"""Each agent's command line for a restart: continue form, prompt place, injection.

The forms are those verified with the real CLIs in ``tests/e2e/``; these tables pin
them so that a profile change that breaks one fails here first.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aegis_mcp.agents.command import LaunchOptions, build_argv, headless_task_args, restart_args
from aegis_mcp.agents.profiles import BUILTIN_PROFILES
from aegis_mcp.agents.syntax import PromptNotAccepted
from aegis_mcp.config import ConfigError, load_config

P = BUILTIN_PROFILES

RESTARTS = [
    # (agent, first arguments, new prompt, arguments of the restart)
    ("claude", ["fix the bug", "--model", "x"], None, ["--model", "x", "--continue"]),
    (
        "claude",
        ["-p", "task", "--output-format", "stream-json"],
        None,
        ["-p", "--output-format", "stream-json", "--continue", "task"],
    ),
    ("claude", ["-p", "task"], "new task", ["-p", "--continue", "new task"]),
    (
        "claude",
        ["--model", "fix", "-p", "old"],
        "new",
        ["--model", "fix", "-p", "--continue", "new"],
    ),
    (
        "claude",
        ["--resume", "abc123", "--mcp-config", "a.json", "b.json"],
        "go on",
        ["--mcp-config", "a.json", "b.json", "--continue", "go on"],
    ),
    (
        "claude",
        ["-c", "-r", "--debug", "api", "hi"],
        "new",
        ["--debug", "api", "--continue", "new"],
    ),
    ("claude", ["mcp", "list"], None, ["mcp", "list"]),
    ("codex", ["exec", "go"], "after", ["exec", "resume", "--last", "after"]),
    ("codex", ["exec", "go"], None, ["exec", "resume", "--last", "go"]),
    (
        "codex",
        ["-m", "o3", "exec", "--json", "-i", "a.png", "--", "go"],
        "next",
        ["-m", "o3", "exec", "-i", "a.png", "--json", "resume", "--last", "next"],
    ),
    ("codex", ["exec", "resume", "--last", "go"], "again", ["exec", "resume", "--last", "again"]),
    (
        "codex",
        ["exec", "resume", "0199-id", "go", "--json"],
        "again",
        ["exec", "resume", "--last", "--json", "again"],
    ),
    ("codex", ["e", "go"], "x", ["e", "resume", "--last", "x"]),
    ("codex", ["go"], None, ["resume", "--last"]),
    ("codex", ["-c", "model=o3", "go"], "more", ["-c", "model=o3", "resume", "--last", "more"]),
    ("codex", ["resume", "--last"], "more", ["resume", "--last", "more"]),
    ("codex", ["mcp", "list"], None, ["mcp", "list"]),
    ("gemini", ["-p", "go"], "after", ["--resume", "latest", "-p", "after"]),
    (
        "gemini",
        ["--resume", "3", "-m", "x", "--prompt=go"],
        None,
        ["-m", "x", "--resume", "latest", "--prompt", "go"],
    ),
    ("gemini", ["hello"], None, ["--resume", "latest"]),
    ("gemini", ["hello"], "next", ["--resume", "latest", "next"]),
    ("gemini", ["-i", "hello"], "next", ["--resume", "latest", "-i", "next"]),
    (
        "gemini",
        ["--include-directories", "a", "b"],
        "x",
        ["--include-directories", "a", "b", "--resume", "latest", "-i", "x"],
    ),
    (
        "gemini",
        ["-m", "x", "--include-directories", "a"],
        "y",
        ["--include-directories", "a", "-m", "x", "--resume", "latest", "-i", "y"],
    ),
    ("gemini", ["mcp", "list"], None, ["mcp", "list"]),
    (
        "aider",
        ["--message", "old", "a.py"],
        "new",
        ["--restore-chat-history", "--message", "new", "a.py"],
    ),
    ("aider", ["--model", "m", "a.py"], None, ["--model", "m", "--restore-chat-history", "a.py"]),
    (
        "aider",
        ["--message-file", "t.md"],
        "new",
        ["--message-file", "t.md", "--restore-chat-history", "--message", "new"],
    ),
    ("cursor", ["-p", "go", "--resume", "c1"], "n", ["-p", "--resume", "n"]),
]


@pytest.mark.parametrize(("agent", "args", "prompt", "expected"), RESTARTS)
def test_restart_arguments(agent, args, prompt, expected):
    assert restart_args(P[agent], args, prompt) == expected
    # A restart of the restart keeps the same form.
    assert restart_args(P[agent], expected, prompt) == expected


@pytest.mark.parametrize(
    ("agent", "args", "headless"),
    [
        ("claude", ["-p", "x"], True),
        ("claude", ["--model", "-p"], False),  # "-p" is --model's value
        ("claude", ["x"], False),
        ("codex", ["exec", "x"], True),
        ("codex", ["-m", "exec", "x"], False),  # "exec" is --model's value
        ("codex", ["exec"], True),
        ("codex", ["x"], False),
        ("gemini", ["-p", "x"], True),
        ("gemini", ["-i", "x"], False),
        ("aider", ["--message", "x"], True),
        ("aider", ["x.py"], False),
    ],
)
def test_headless_sessions(agent, args, headless):
    assert P[agent].is_headless(args) is headless


def test_a_subcommand_is_never_the_prompt():
    assert P["codex"].parse(["exec", "go"]).prompt == "go"
    assert P["codex"].parse(["exec", "resume", "--last"]).prompt is None
    assert P["codex"].parse(["exec", "resume", "id"]).session == "id"
    assert P["claude"].parse(["mcp", "add", "x"]).prompt is None
    assert P["aider"].parse(["a.py", "b.py"]).prompt is None


def test_no_prompt_for_an_interactive_aider():
    with pytest.raises(PromptNotAccepted, match="interactive"):
        restart_args(P["aider"], ["a.py"], "do this")


def test_a_prompt_that_looks_like_an_option_follows_a_separator():
    assert restart_args(P["claude"], ["-p", "x"], "-v please") == [
        "-p",
        "--continue",
        "--",
        "-v please",
    ]


def test_plain_commands_are_never_rewritten():
    from aegis_mcp.agents.profiles import AgentProfile

    plain = AgentProfile(name="ls", command=("ls",), takes_prompt=False)
    assert restart_args(plain, ["-l", "x"], None) == ["-l", "x"]
    assert not plain.is_headless(["-p"])


SERVER = {
    "command": "/opt/aegis-mcp",
    "args": ["--mcp-server"],
    "env": {"AEGIS_MCP_SOCKET": "/run/s"},
}


def test_codex_gets_the_server_inline_and_required():
    launch = LaunchOptions("/usr/bin/codex", Path("/run/o.json"), True, SERVER)
    first = build_argv(P["codex"], launch, ["exec", "fix it"])
    assert first[:4] == [
        "/usr/bin/codex",
        "--dangerously-bypass-approvals-and-sandbox",
        "exec",
        "fix it",
    ]
    assert first[4:] == [
        "-c", 'mcp_servers.aegis-mcp.command="/opt/aegis-mcp"',
        "-c", 'mcp_servers.aegis-mcp.args=["--mcp-server"]',
        "-c", 'mcp_servers.aegis-mcp.env={AEGIS_MCP_SOCKET = "/run/s"}',
        # The agent's identity by name: its token stays out of the command line.
        "-c", 'mcp_servers.aegis-mcp.env_vars=["AEGIS_MCP_AGENT_ID", "AEGIS_MCP_AGENT_TOKEN"]',
        # Else `codex exec` may start its first turn without the server.
        "-c", "mcp_servers.aegis-mcp.required=true",
    ]  # fmt: skip
    again = build_argv(P["codex"], launch, restart_args(P["codex"], ["exec", "fix it"], "after"))
    assert again[1:7] == [
        "--dangerously-bypass-approvals-and-sandbox", "exec", "resume", "--last", "after", "-c",
    ]  # fmt: skip


def test_claude_mcp_config_goes_before_a_separator():
    launch = LaunchOptions("/usr/bin/claude", Path("/run/o.json"), False)
    argv = build_argv(P["claude"], launch, ["--allowedTools", "Bash", "--", "the prompt"])
    assert argv == [
        "/usr/bin/claude",
        "--allowedTools",
        "Bash",
        "--mcp-config",
        "/run/o.json",
        "--",
        "the prompt",
    ]


def test_config_changes_the_command_line_tables(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[agents.codex]\nvalue_options = ["--model"]\n'
        "[agents.codex.subcommands.run]\nheadless = true\n"
        '[agents.mine]\ncommand = ["mine"]\nprompt_options = ["--task"]\n'
        'headless_options = ["--task"]\n'
    )
    profiles = load_config(cfg).profiles
    assert profiles["codex"].is_headless(["run", "x"])
    assert profiles["codex"].is_headless(["exec", "x"])  # the others stay
    assert restart_args(profiles["mine"], ["--task", "a"], "b") == ["--task", "b"]
    for text, message in [
        ("[agents.codex]\nsubcommands = 3\n", "table of tables"),
        ("[agents.codex.subcommands.x]\nheadless = 1\n", "true or false"),
        ("[agents.codex.subcommands.x]\nbogus = 1\n", "unknown setting"),
    ]:
        cfg.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(cfg)


def test_the_pinned_cli_versions_agree(tmp_path):
    """One pinned version per agent: the profiles', the installer's and the README's."""
    from aegis_mcp.agents.profiles import VERIFIED
    from helpers import REPO

    readme = (REPO / "README.md").read_text()
    installer = (REPO / "scripts" / "install_agents.sh").read_text()
    pins = re.findall(r'^\s+"(\w+)\s+(?:npm|pypi)\s+(\S+)\s+(\S+)"$', installer, re.M)
    assert {name: f"{package} {version}" for name, package, version in pins} == VERIFIED
    for pinned in VERIFIED.values():
        package, version = pinned.split()
        assert f"`{package}` {version}" in readme, pinned


def test_a_pool_task_started_in_its_own_session_resumes_that_one_again_and_again():
    # Not --continue: the latest conversation of the directory may be the user's.
    task = headless_task_args(P["claude"], "do it", 3, "S-1")
    assert task[-2:] == ["--session-id", "S-1"]
    once = restart_args(P["claude"], task, "after", "S-1")
    head = ["-p", "--output-format", "stream-json", "--verbose", "--max-turns", "3"]
    assert once == [*head, "--resume", "S-1", "after"]
    assert restart_args(P["claude"], once, "again", "S-1")[-3:] == ["--resume", "S-1", "again"]
    # A profile that cannot name a session keeps its continue form.
    codex = headless_task_args(P["codex"], "do it", None, "S-1")
    assert restart_args(P["codex"], codex, "after", "S-1")[-3:] == ["resume", "--last", "after"]
