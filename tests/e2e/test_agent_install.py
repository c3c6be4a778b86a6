"""What the end-to-end tests do with the installer's cache: a CLI whose install failed
makes its tests skip with the install's own message, one never installed names the
installer, an installed one is used (scripts/install_agents.sh writes the cache)."""

from __future__ import annotations

import pytest

from e2e.agents import agents_bin, require


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AEGIS_AGENTS_CACHE", str(tmp_path / "agents"))
    assert agents_bin() == tmp_path / "agents" / "bin"
    return tmp_path / "agents"


def test_a_failed_install_skips_with_its_message(cache):
    cache.mkdir()
    (cache / "codex-0.171.0.failed").write_text(
        "installing @openai/codex 0.171.0 failed:\nnpm error network unreachable\n"
    )
    with pytest.raises(pytest.skip.Exception, match="codex CLI not installed: installing "):
        require("codex")
    with pytest.raises(pytest.skip.Exception, match="npm error network unreachable"):
        require("codex")


def test_a_cli_never_installed_names_the_installer(cache):
    with pytest.raises(pytest.skip.Exception, match=r"run scripts/install_agents\.sh"):
        require("gemini")


def test_an_installed_cli_is_used(cache):
    exe = cache / "bin" / "aider"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert require("aider") == exe
