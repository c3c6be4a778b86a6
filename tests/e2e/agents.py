"""The real agent CLIs of the end-to-end tests: where the set-up installed them, and the
environment that points each at a stand-in model server, offline.

``scripts/install_agents.sh`` (run by ``make setup``, so by ``make test``) installs them
at pinned versions into a cache outside the repository; a CLI whose install failed
makes its tests skip with the install's own message.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers import REPO

INSTALLER = REPO / "scripts" / "install_agents.sh"
MODEL = "standin"
API_KEY = "standin-key"


def agents_bin() -> Path:
    """The cache's bin directory, as the installer names it for this user."""
    out = subprocess.run([str(INSTALLER), "--print"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def require(name: str) -> Path:
    """The installed CLI ``name``; skips the test with the reason if it is not there."""
    exe = agents_bin() / name
    if os.access(exe, os.X_OK):
        return exe
    failed = sorted(exe.parent.parent.glob(f"{name}-*.failed"))
    reason = failed[-1].read_text().strip() if failed else f"run {INSTALLER.relative_to(REPO)}"
    pytest.skip(f"{name} CLI not installed: {reason}")


def model_env(name: str, url: str, home: Path) -> dict[str, str]:
    """Variables (and config files under ``home``) that send agent ``name`` to the
    model server at ``url`` and keep its state in ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    env = {"HOME": str(home)}
    if name == "claude":
        env.update(
            ANTHROPIC_BASE_URL=url,
            ANTHROPIC_API_KEY=API_KEY,
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            DISABLE_AUTOUPDATER="1",
            # MCP tools straight in the model's tool list (DESIGN.md fact 3).
            ENABLE_TOOL_SEARCH="false",
        )
    elif name == "codex":
        codex_home = home / ".codex"
        codex_home.mkdir(exist_ok=True)
        (codex_home / "config.toml").write_text(
            f'model = "{MODEL}"\nmodel_provider = "standin"\n'
            "[model_providers.standin]\n"
            f'name = "standin"\nbase_url = "{url}/v1"\nenv_key = "STANDIN_API_KEY"\n'
            'wire_api = "responses"\n'
        )
        env.update(CODEX_HOME=str(codex_home), STANDIN_API_KEY=API_KEY)
    elif name == "gemini":
        settings = home / ".gemini" / "settings.json"
        settings.parent.mkdir(exist_ok=True)
        # The base URL alone would select gateway auth, which exits 41 (fact 13).
        settings.write_text(json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}}}))
        env.update(
            GEMINI_CLI_HOME=str(home),
            GOOGLE_GEMINI_BASE_URL=url,
            GEMINI_API_KEY=API_KEY,
            GEMINI_CLI_TRUST_WORKSPACE="true",
        )
    elif name == "aider":
        env.update(
            OPENAI_API_BASE=f"{url}/v1",
            OPENAI_API_KEY=API_KEY,
            AIDER_MODEL=f"openai/{MODEL}",
            AIDER_CHECK_UPDATE="false",
            AIDER_ANALYTICS_DISABLE="true",
            AIDER_SHOW_MODEL_WARNINGS="false",
            AIDER_GITIGNORE="false",
            # litellm fetches its model price list from the internet otherwise.
            LITELLM_LOCAL_MODEL_COST_MAP="True",
        )
    return env


def interactive_setup(name: str, home: Path, workdir: Path) -> None:
    """What agent ``name``'s TUI needs in ``home`` to open straight at its prompt in
    ``workdir``: no first-run screens (read off each CLI in tmux)."""
    if name == "claude":
        # Onboarding (theme, then a connection check that fails offline), the folder
        # trust dialog and "use this API key?" are each a screen before the prompt.
        (home / ".claude.json").write_text(
            json.dumps(
                {
                    "hasCompletedOnboarding": True,
                    "theme": "dark",
                    "customApiKeyResponses": {"approved": [API_KEY[-20:]], "rejected": []},
                    "projects": {
                        str(workdir): {
                            "hasTrustDialogAccepted": True,
                            "hasCompletedProjectOnboarding": True,
                        }
                    },
                }
            )
        )
    elif name == "codex":
        # "Trust this folder?" comes first otherwise.
        with open(home / ".codex" / "config.toml", "a") as config:
            config.write(f'[projects."{workdir}"]\ntrust_level = "trusted"\n')
    # Gemini CLI: GEMINI_CLI_TRUST_WORKSPACE (model_env) is all its TUI needs too.


def git_workdir(path: Path) -> Path:
    """A git repository to work in (codex and aider want one)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path
