"""Fixtures of the end-to-end tests: stand-in model servers and agent environments."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.agents import agents_bin, git_workdir, model_env, require
from e2e.standin import Script, StandInServer


@pytest.fixture
def standin():
    """``standin(script)``: a started stand-in model server, stopped after the test."""
    servers: list[StandInServer] = []

    def start(script: Script, **kwargs) -> StandInServer:
        server = StandInServer(script, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The agent's working directory, a git repository."""
    return git_workdir(tmp_path / "work")


@pytest.fixture
def agent_env(aegis_env, tmp_path):
    """``agent_env(name, server)``: aegis_env plus the CLIs on PATH and ``name`` pointed
    at ``server`` (skips if the CLI is not installed)."""

    def make(name: str, server: StandInServer, home: Path | None = None) -> dict[str, str]:
        require(name)
        env = dict(aegis_env)
        env["PATH"] = f"{agents_bin()}:{env.get('PATH', '')}"
        env.update(model_env(name, server.url, home or tmp_path / "home"))
        return env

    return make
