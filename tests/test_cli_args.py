"""Command lines: wrapper options vs the agent's, argv building for starts and restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from aegis_mcp.agents.command import LaunchOptions, build_argv, headless_task_args
from aegis_mcp.agents.profiles import BUILTIN_PROFILES
from aegis_mcp.cli.args import UsageError, parse_agent_invocation, parse_run_command
from aegis_mcp.config import ConfigError, load_config

CLAUDE = BUILTIN_PROFILES["claude"]
AIDER = BUILTIN_PROFILES["aider"]


def test_wrapper_options_anywhere_before_separator():
    parsed = parse_agent_invocation(
        [
            "claude",
            "-p",
            "hi",
            "--netmon",
            "--model",
            "x",
            "--watchdog-timeout=5",
            "--",
            "--no-watchdog",
        ]
    )
    assert parsed.agent == "claude"
    assert parsed.agent_args == ["-p", "hi", "--model", "x", "--no-watchdog"]
    assert parsed.options.netmon == "auto"
    assert parsed.options.watchdog_timeout == 5.0
    assert parsed.options.no_watchdog is False


def test_netmon_value_only_with_equals_so_prompts_are_not_eaten():
    parsed = parse_agent_invocation(["--keep-root", "claude", "--netmon", "preload"])
    assert parsed.options.netmon == "auto"
    assert parsed.options.keep_root
    assert parsed.agent_args == ["preload"]
    assert parse_agent_invocation(["claude", "--netmon=preload"]).options.netmon == "preload"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["claude", "--netmon=bogus"], "--netmon must be one of"),
        (["claude", "--watchdog-timeout=abc"], "takes seconds"),
        (["claude", "--watchdog-timeout=-1"], "between"),
        (["claude", "--sandbox=vm"], "--sandbox must be one of"),
        (["--bogus", "claude"], "unknown option"),
        ([], "no agent named"),
        (["--", "x"], "name an agent"),
    ],
)
def test_bad_wrapper_options(argv, message):
    with pytest.raises(UsageError, match=message):
        parse_agent_invocation(argv)


def test_run_command_forms():
    assert parse_run_command(["--no-watchdog", "--", "ls", "-l"]).command == ["ls", "-l"]
    assert parse_run_command(["ls", "--no-watchdog"]).command == ["ls", "--no-watchdog"]
    with pytest.raises(UsageError, match="needs a command"):
        parse_run_command(["--no-watchdog"])
    with pytest.raises(UsageError, match="unknown wrapper option"):
        parse_run_command(["-l", "ls"])


def _launch(config: Path | None = Path("/run/o.json"), skip: bool = True) -> LaunchOptions:
    return LaunchOptions("/usr/bin/claude", config, skip)


def test_first_start_puts_mcp_config_where_no_prompt_follows():
    argv = build_argv(CLAUDE, _launch(), ["fix the bug", "--model", "x"])
    assert argv == [
        "/usr/bin/claude",
        "--dangerously-skip-permissions",
        "fix the bug",
        "--model",
        "x",
        "--mcp-config",
        "/run/o.json",
    ]


def test_root_without_sudo_gets_no_permission_flag():
    assert "--dangerously-skip-permissions" not in build_argv(CLAUDE, _launch(skip=False), [])


def test_headless_task_args():
    assert headless_task_args(CLAUDE, "do it", 3) == [
        "-p",
        "do it",
        "--output-format",
        "stream-json",
        "--verbose",
        "--max-turns",
        "3",
    ]


def test_config_profiles_and_errors(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[agents.mine]\ncommand = ["mine", "--x"]\ncontinue_args = ["--again"]\n'
        '[agents.claude]\npermission_args = []\n[watchdog]\nlockup_action = "kill"\n'
    )
    config = load_config(cfg)
    assert config.profiles["mine"].command == ("mine", "--x")
    assert config.profiles["claude"].permission_args == ()
    assert config.profiles["mine"].syntax.continue_args == ("--again",)
    assert config.profiles["claude"].syntax.continue_args == ("--continue",)
    assert config.watchdog.lockup_action == "kill"
    cfg.write_text("[pool]\nmax_agents = 3\n")
    assert load_config(cfg).pool.max_agents == 3
    cfg.write_text("[runner]\nrestart_limit_burst = 2\nrestart_limit_interval_secs = 0\n")
    runner = load_config(cfg).runner
    assert (runner.restart_limit_burst, runner.restart_limit_interval_secs) == (2, 0.0)
    for text, message in [
        ("[agents.x]\ncontinue_args = []\n", "command is required"),
        ("[agents.x]\ncommand = 'x'\n", "list of strings"),
        ("[watchdog]\nlockup_action = 'explode'\n", "lockup_action must be one of"),
        ("[nonsense]\n", "unknown section"),
        ("this is not toml", "invalid TOML"),
        ("[runner]\nstop_grace_secs = -1\n", "between 0 and 3600"),
        ("[runner]\nrestart_limit_burst = 0\n", "whole number from 1 to 1000"),
        ("[runner]\nrestart_limit_burst = 2.5\n", "whole number from 1 to 1000"),
        ("[runner]\nrestart_limit_burst = true\n", "whole number from 1 to 1000"),
        ("[pool]\nmax_agents = 0\n", "from 1 to 1000"),
        ("[pool]\nqueue = 3\n", "unknown setting"),
    ]:
        cfg.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(cfg)
    assert load_config(tmp_path / "missing.toml").profiles["claude"] == CLAUDE
