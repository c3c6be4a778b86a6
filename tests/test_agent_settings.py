"""Settings-file injection (gemini): the root-ownership rule and the settings copy."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from aegis_mcp.agents.command import LaunchOptions
from aegis_mcp.agents.profiles import BUILTIN_PROFILES
from aegis_mcp.agents.settings import (
    inject_env,
    root_settings_refusal,
    settings_with_servers,
    user_settings_file,
)
from aegis_mcp.hooks_lib import HooksInfo

GEMINI = BUILTIN_PROFILES["gemini"]
OURS = {"aegis-mcp": {"command": "aegis-mcp", "args": ["--mcp-server"]}}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own the files")
def test_root_settings_rule(tmp_path):
    safe = Path(tempfile.mkdtemp(dir="/run"))
    try:
        (safe / "s.json").write_text("{}")
        assert root_settings_refusal(safe / "s.json") is None
        os.chmod(safe / "s.json", 0o666)
        assert "writable by group or others" in root_settings_refusal(safe / "s.json")
        os.chmod(safe / "s.json", 0o644)
        os.chown(safe / "s.json", 65534, 0)
        assert "not owned by root" in root_settings_refusal(safe / "s.json")
    finally:
        for p in safe.iterdir():
            p.unlink()
        safe.rmdir()
    # /tmp is world-writable, so nothing under it qualifies.
    (tmp_path / "s.json").write_text("{}")
    assert "/tmp is writable by group or others" in root_settings_refusal(tmp_path / "s.json")


def test_settings_copy_keeps_the_users_servers_and_settings(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"theme": "x", "mcpServers": {"mine": {"command": "m"}}}))
    data = json.loads(settings_with_servers(path, OURS))
    assert data == {"theme": "x", "mcpServers": {"mine": {"command": "m"}, **OURS}}
    assert json.loads(settings_with_servers(tmp_path / "missing.json", OURS)) == {
        "mcpServers": OURS
    }
    for text, message in [
        ("// c\n{}", "not plain JSON"),
        ("[]", "settings object"),
        ('{"mcpServers": 1}', "settings object"),
    ]:
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            settings_with_servers(path, OURS)


def test_user_settings_file_follows_gemini_cli_home():
    assert user_settings_file(GEMINI, {"HOME": "/h"}) == Path("/h/.gemini/settings.json")
    env = {"HOME": "/h", "GEMINI_CLI_HOME": "/g"}
    assert user_settings_file(GEMINI, env) == Path("/g/.gemini/settings.json")


def test_inject_env_picks_the_variable_or_the_overlay(tmp_path):
    hooks = HooksInfo(path=tmp_path / "libaegis_hooks.so", version="x", built="y", git="z")
    base = LaunchOptions("/bin/gemini", tmp_path / "overlay.json", hooks=hooks)
    env: dict[str, str] = {"HOME": "/h"}
    inject_env(GEMINI, LaunchOptions("/bin/gemini", None), env)
    assert env == {"HOME": "/h"}  # no injection in this run
    from dataclasses import replace

    inject_env(GEMINI, replace(base, settings_trusted=True), env)
    assert env["GEMINI_CLI_SYSTEM_DEFAULTS_PATH"] == str(tmp_path / "overlay.json")
    env = {"HOME": "/h", "LD_PRELOAD": "/x.so"}
    inject_env(GEMINI, replace(base, settings_overlay=tmp_path / "settings.json"), env)
    assert env["LD_PRELOAD"].split() == [str(hooks.path), "/x.so"]
    assert env["AEGIS_MCP_OVERLAY"] == str(tmp_path / "settings.json")
    assert env["AEGIS_MCP_OVERLAY_TARGET"] == "/h/.gemini/settings.json"
    # Not a settings agent: untouched.
    env = {}
    inject_env(BUILTIN_PROFILES["claude"], replace(base, settings_trusted=True), env)
    assert env == {}
