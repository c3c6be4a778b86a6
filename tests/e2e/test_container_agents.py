"""The real agent CLIs under ``--sandbox=container``: on rootful podman and Docker Engine
as root for a sudo user, and on a plain user's rootless podman as that user.

Rootful, the model (a stand-in server) is in a network namespace of its own: the
container's aegis namespace refuses the host's own addresses, so it is reached through
the sandbox's NAT, as a real one on the internet would be. Rootless, slirp4netns
reaches it on this machine's address.

The CLI is the host's, mounted read-only into the container; its state (``--continue``'s
conversation) lives in the user's home volume (Claude Code) or in the state directory
the user mounted (Codex, Gemini CLI), kept across the restart's new container.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from e2e.agents import agents_bin, git_workdir, model_env, require
from e2e.standin import HttpError, Request, Script, read_record
from e2e.test_agents import (
    HEADLESS,
    ORIGINAL_TOOLS,
    RESUMED,
    contains_in_order,
    restart_script,
    tool_json,
)
from e2e.test_claude_root import PORT, SERVER_ADDR, _as_sudo_user, _server_namespace
from engines import TestEngine, as_user, host_address, own_dir, user_env
from helpers import start_aegis

TIMEOUT = 90
AGENTS = ["claude", "codex", "gemini"]
# Claude takes its model from the environment: its state is all in the home volume.
# Codex and Gemini CLI read their model provider from files under the home, which the
# container does not see unless mounted, as a user would with ``[container] mounts``.
MOUNTS = {"claude": [], "codex": ["~/.codex"], "gemini": ["~/.gemini"]}


def _first(requests: list[Request], rule: str) -> Request:
    found = [r for r in requests if r.rule == rule]
    assert found, f"no {rule!r} request: {[(r.number, r.rule) for r in requests]}"
    return found[0]


@pytest.fixture(params=["podman", "docker", "rootless"])
def engine(request) -> TestEngine:
    """Each engine: rootful podman and Docker Engine, and a plain user's rootless podman."""
    return request.getfixturevalue(f"{request.param}_engine")


def _config(path: Path, engine: TestEngine, mounts: list[str]) -> Path:
    path.write_text(f'[container]\nengine = "{engine.url}"\nmounts = {json.dumps(mounts)}\n')
    return path


def _finish(name: str, proc: subprocess.Popen, requests: Callable[[], list[Request]]):
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=TIMEOUT)
        seen = [(r.number, r.rule) for r in requests()]
        pytest.fail(f"{name} did not finish: {seen}\nstdout: {out[-2000:]}\n{err[-3000:]}")
    return out, err


@pytest.fixture
def container_run(engine, request):
    """``container_run(name, script)``: agent ``name`` run headless in a container of
    ``engine``; (process, stdout, stderr, requests, env)."""
    return request.getfixturevalue("rootless_run" if engine.rootless else "sudo_run")


@pytest.fixture
def sudo_run(engine, agent_env, throwaway_user, public_runtime, tmp_path):
    """Rootful: by root for a sudo user (a throwaway one, working in its home), the model
    in a namespace of its own (the container's namespace refuses the host's addresses)."""
    user, _group = throwaway_user
    home = Path(pwd.getpwnam(user).pw_dir)

    def run(name: str, script: Script):
        env = agent_env(name, SimpleNamespace(url=f"http://{SERVER_ADDR}:{PORT}"), home)
        env["AEGIS_MCP_CONFIG"] = str(_config(tmp_path / "config.toml", engine, MOUNTS[name]))
        workdir = git_workdir(home / "work")
        _as_sudo_user(env, user, public_runtime, home)
        with _server_namespace(tmp_path, script) as record:
            proc = start_aegis([name, "--sandbox=container", *HEADLESS[name]], env, cwd=workdir)
            out, err = _finish(name, proc, lambda: read_record(record))
            requests = read_record(record)
        return proc, out, err, requests, env

    yield run
    engine.remove_volumes(user)


@pytest.fixture
def rootless_run(engine, standin):
    """Rootless: by the rootless test user, with no privileges; the network is slirp4netns,
    which reaches the model server on this machine's address."""
    user = engine.user
    base = Path(tempfile.mkdtemp(prefix="aegis-cagent-"))
    os.chmod(base, 0o755)
    for name in ("run", "state", "cache"):
        own_dir(base / name, user, 0o700)
    home = own_dir(base / "home", user)

    def run(name: str, script: Script):
        server = standin(script, host=host_address())
        require(name)
        env = user_env(user, base, AEGIS_MCP_CACHE_DIR=str(base / "cache"))
        env.update(model_env(name, server.url, home))
        env["PATH"] = f"{agents_bin()}:{env['PATH']}"
        mounts = [m.replace("~", str(home), 1) for m in MOUNTS[name]]
        env["AEGIS_MCP_CONFIG"] = str(_config(base / "config.toml", engine, mounts))
        workdir = git_workdir(base / "work")
        subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(base)], check=True)
        argv = [name, "--sandbox=container", *HEADLESS[name]]
        proc = start_aegis(argv, env, cwd=workdir, **as_user(user))
        out, err = _finish(name, proc, lambda: list(server.requests))
        return proc, out, err, list(server.requests), env

    try:
        yield run
    finally:
        engine.remove_volumes(user.pw_name)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("name", AGENTS)
def test_a_real_agent_in_a_container_reaches_the_runner_and_resumes(name, container_run, engine):
    proc, out, err, requests, _env = container_run(name, restart_script())
    assert proc.returncode == 0, f"stdout: {out[-2000:]}\nstderr: {err[-3000:]}"

    first = _first(requests, "status")
    missing = [t for t in ORIGINAL_TOOLS if first.conversation.offered(t) is None]
    assert not missing, f"tools not offered to the model: {missing}"

    # The MCP server inside the container reached the runner on the host.
    status = tool_json(_first(requests, "restart"), "server_status")
    assert status["runner"]["pid"] == proc.pid
    assert status["sandbox"]["kind"] == "container"
    before = status["sandbox"]["sandboxes"]["primary"]
    assert before["engine"]["rootless"] is engine.rootless and before["container"]["running"]

    done = _first(requests, "resumed done")
    user_texts = [i.text for i in done.conversation.items if i.role == "user" and i.kind == "text"]
    # The new container's agent sent the earlier turn (its kept state), then the new prompt.
    assert any(t.strip().endswith("go") for t in user_texts), user_texts
    assert "after-restart" in user_texts[-1]
    again = tool_json(done, "server_status")
    assert again["agent"]["restarts"] == 1
    assert contains_in_order(again["agent"]["command"], RESUMED[name]), again["agent"]["command"]
    after = again["sandbox"]["sandboxes"]["primary"]
    assert after["starts"] == 2 and after["container"]["name"] != before["container"]["name"]
    assert after["home_volume"] == before["home_volume"] is not None
    assert "resumed fine" in out
    assert engine.containers_of(proc.pid) == []


@pytest.mark.parametrize("name", AGENTS)
def test_a_real_agent_in_a_container_exits_with_its_own_code(name, container_run, engine, tmp_path):
    # Every model request fails: the agent gives up with its own (non-zero) exit code.
    script = Script(default=(HttpError(400, "scripted failure"),))
    proc, _out, err, requests, env = container_run(name, script)
    assert requests, err[-3000:]
    assert engine.containers_of(proc.pid) == []
    # The same CLI on the host, against the same failing model.
    direct_dir = tmp_path / "direct"
    direct_dir.mkdir()
    with _server_namespace(direct_dir, script):
        direct = subprocess.run(
            [str(require(name)), *HEADLESS[name]], env=env, capture_output=True, timeout=TIMEOUT
        )
    assert direct.returncode != 0
    assert proc.returncode == direct.returncode, f"stderr: {err[-3000:]}"
