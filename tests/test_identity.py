"""Agent identity and authority (issue 17), with real runners and the stand-in agent.

Every agent proves who it is with the token the runner put in its environment; the
user is whoever connects without one from outside the run. A pool agent's
``restart_claude``, ``watchdog_*`` and ``server_status`` act on itself; it acts on no
agent it did not spawn, nor on the pool's limits or the machine's namespaces; a bare
``AEGIS_MCP_AGENT_ID`` is refused; every request is an event and refusals are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from aegis_mcp.control import authority, protocol
from aegis_mcp.control.client import ControlClient
from aegis_mcp.control.protocol import ControlError, RequestError, decode_request
from aegis_mcp.hooks_lib import find_hooks
from aegis_mcp.runner.identity import AgentTokens
from helpers import REPO, call, mcp_client, read_report, runner_socket, start_aegis, wait_for

TIMEOUT = 60


def _scenario(*steps: str) -> str:
    """A pool agent's task: these demo scenario steps."""
    return "/scenario " + ";".join(steps)


def _tool(name: str, args: dict[str, Any] | None = None) -> str:
    return f"tool:{name}:{json.dumps(args or {})}"


def tool_results(log_file: str) -> list[tuple[str, Any, bool]]:
    """``(tool, result, is_error)`` of each tool call in a headless demo agent's
    stream-json log, in order (a JSON result parsed)."""
    names: dict[str, str] = {}
    results = []
    for line in Path(log_file).read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # aegis-mcp's and the demo's own lines
        for block in event.get("message", {}).get("content", []):
            if block.get("type") == "tool_use":
                names[block["id"]] = block["name"].rsplit("__", 1)[-1]
            elif block.get("type") == "tool_result":
                text = block["content"]
                with contextlib.suppress(ValueError):
                    text = json.loads(text)
                results.append((names[block["tool_use_id"]], text, bool(block.get("is_error"))))
    return results


def _until(sock: Path, agent_id: str, *statuses: str) -> dict[str, Any]:
    return wait_for(
        lambda: (s := call(sock, "agent_status", agent_id=agent_id))["status"] in statuses and s,
        TIMEOUT,
        what=f"agent {agent_id} to be {'/'.join(statuses)}",
    )


@pytest.fixture
def runner(aegis_env, tmp_path):
    """``runner(argv)``: a runner started in the background, stopped after the test."""
    procs = []

    def start(argv: list[str]) -> Path:
        procs.append(start_aegis(argv, aegis_env, tmp_path, output=False))
        return runner_socket(Path(aegis_env["AEGIS_MCP_RUNTIME_DIR"]))

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=30)


# -- the wire and the table --------------------------------------------------------------


def test_the_request_carries_agent_and_token_and_bad_ones_are_named_not_echoed():
    line = protocol.make_request(1, "hello", {}, identity=("ab12", "s3cret"))
    request = decode_request(line)
    assert (request.agent, request.token) == ("ab12", "s3cret")
    assert "s3cret" not in repr(request)
    for bad, needle in [
        (b'{"v":1,"op":"hello","agent":5}', "'agent' must be a string"),
        (b'{"v":1,"op":"hello","token":""}', "'token' must be a string of 1 to 200"),
        (b'{"v":1,"op":"hello","token":"' + b"t" * 201 + b'"}', "got a string of 201"),
        (b'{"v":1,"op":"hello","token":"bad\\u0007secret"}', "unprintable"),
    ]:
        with pytest.raises(RequestError) as caught:
            decode_request(bad)
        assert needle in caught.value.message and "secret" not in caught.value.message


def test_tokens_prove_only_their_own_agent_until_revoked():
    tokens = AgentTokens()
    primary, pool = tokens.issue("primary"), tokens.issue("ab12")
    assert tokens.issue("ab12") == pool != primary
    assert tokens.verify("ab12", pool) and not tokens.verify("primary", pool)
    assert not tokens.verify("nobody", pool)
    tokens.revoke("ab12")
    assert not tokens.verify("ab12", pool) and tokens.verify("primary", primary)


def test_every_served_operation_has_a_row_and_refusals_say_what_instead():
    from aegis_mcp.runner.ops import runner_ops

    class _Run:
        pid = 1

    served = {
        *runner_ops(_Run(), list),  # type: ignore[arg-type]
        *protocol.POOL_OPS,
        *protocol.NETMON_OPS,
        *protocol.NAMESPACE_OPS,
        *protocol.STREAM_OPS,
    }
    assert served == set(authority.AUTHORITY)
    pool = authority.Caller(authority.POOL, "ab12")
    for op, rule in authority.AUTHORITY.items():
        if rule.pool == authority.NO:
            with pytest.raises(ControlError) as caught:
                authority.check(op, pool)
            assert caught.value.code == protocol.FORBIDDEN
            assert "pool agent ab12 may not" in caught.value.message and rule.instead
            assert rule.instead in caught.value.message
    # Nothing is closed to the user or the primary agent.
    for kind in (authority.USER, authority.PRIMARY):
        assert authority.NO not in {rule.grant(kind) for rule in authority.AUTHORITY.values()}


def test_the_readme_table_is_the_code_table():
    text = (REPO / "README.md").read_text()
    section = text.split("## Who may do what", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            # "`restart` (`restart_claude`, ...)": the tools in brackets are not ops.
            for op in re.findall(r"`([a-z_]+)`", cells[0].split("(")[0]):
                rows[op] = tuple(cells[1:])
    table = {op: (r.user, r.primary, r.pool) for op, r in authority.AUTHORITY.items()}
    assert rows == table


# -- a pool agent acts on itself ---------------------------------------------------------


def test_a_pool_agent_restarts_itself_and_is_refused_the_rest(runner, aegis_env, report, tmp_path):
    # Long enough for the demo agent to end its turn (and record it) before it is stopped.
    Path(aegis_env["AEGIS_MCP_CONFIG"]).write_text("[runner]\nrestart_delay_secs = 3\n")
    sock = runner(["demo", "--scenario", "quiet"])
    other = call(sock, "agent_spawn", description=_scenario("quiet"), agent_type="demo")
    work = tmp_path / "pool-work"
    work.mkdir()
    task = _scenario(
        _tool("watchdog_disable", {"duration_secs": 600}),
        _tool("agent_stop", {"agent_id": other["agent_id"]}),
        _tool("agent_status", {"agent_id": other["agent_id"]}),
        _tool("agent_pool_configure", {"max_agents": 1}),
        _tool("netmon_namespace_cleanup"),
        _tool("file_lock_acquire", {"path": "x.txt"}),
        _tool("server_status"),
        _tool("restart_claude", {"reason": "e2e", "prompt": "after-restart"}),
    )
    spawned = call(
        sock, "agent_spawn", description=task, agent_type="demo", working_directory=str(work)
    )
    agent_id = spawned["agent_id"]
    assert (spawned["spawned_by"], spawned["depth"]) == ("user", 1)
    done = call(sock, "agent_await", agent_id=agent_id, timeout_secs=TIMEOUT)
    assert done["status"] == "completed" and done["restarts"] == 1, done
    # Restarted headless with the continue form and the new prompt: its conversation went on.
    starts = read_report(report, agent_id)
    assert len(starts) == 2 and starts[0]["mcp_servers"] == ["aegis-mcp"]
    assert starts[1]["continue"] and starts[1]["prompt"] == "after-restart"
    # Its own conversation, by the id it was started with: never the latest in its
    # directory, which might be the user's.
    session = starts[0]["argv"][starts[0]["argv"].index("--session-id") + 1]
    assert starts[1]["headless"] and starts[1]["resume"] == session
    assert "continuing conversation (1 turns)" in Path(done["log_file"]).read_text()
    assert "demo: you said: after-restart" in done["result"]
    # The primary agent was not touched: one start, no prompt of the pool agent's.
    status = call(sock, "server_status")
    assert status["agent"]["restarts"] == 0
    assert len(read_report(report)) == 1
    assert "after-restart" not in json.dumps(status["agent"]["command"])
    assert "after-restart" not in Path(f"/proc/{status['agent']['pid']}/cmdline").read_text()
    watchdog = call(sock, "watchdog_status")
    assert watchdog["enabled"] and watchdog["disabled_for_secs"] is None
    assert call(sock, "agent_status", agent_id=other["agent_id"])["status"] == "running"
    assert call(sock, "agent_pool_stats")["max_agents"] != 1
    # What it got: its own watchdog paused; the rest refused, saying what it may do.
    results = dict(
        (name, (result, error)) for name, result, error in tool_results(done["log_file"])
    )
    own_watchdog, error = results["watchdog_disable"]
    assert not error and own_watchdog["disabled_for_secs"] > 500
    assert not own_watchdog["configured_enabled"]  # a pool agent's starts off
    stop, error = results["agent_stop"]
    assert error and f"may not stop agent {other['agent_id']}, which it did not spawn" in stop
    assert "acts only on itself and the agents it spawned (none yet)" in stop
    assert results["agent_status"][1] and "which it did not spawn" in results["agent_status"][0]
    configure, error = results["agent_pool_configure"]
    assert error and "may not use agent_pool_configure; agent_pool_stats shows" in configure
    assert "may not use netmon_namespace_cleanup" in results["netmon_namespace_cleanup"][0]
    assert results["file_lock_acquire"][0]["holder"] == agent_id
    own, error = results["server_status"]
    assert own["agent"]["id"] == agent_id and own["agent"]["kind"] == "pool"
    assert own["caller"]["kind"] == "pool" and own["caller"]["may"]["restart"] == "itself"
    assert "primary" not in json.dumps(own["agent"])
    assert results["restart_claude"][0]["agent_id"] == agent_id
    # Refused, counted and logged with who asked.
    refused = status["authority"]["recent_refusals"]
    assert {r["op"] for r in refused} == {
        "agent_stop",
        "agent_status",
        "agent_pool_configure",
        "netmon_namespace_cleanup",
    }
    assert all(r["who"]["kind"] == "pool" and r["who"]["agent_id"] == agent_id for r in refused)
    assert status["authority"]["refused_by"] == {f"pool agent {agent_id}": 4}
    events = call(sock, "events", limit=500)["events"]
    mine = [
        e for e in events if e["kind"].startswith("control.") and e["who"]["agent_id"] == agent_id
    ]
    assert {e["op"] for e in mine if not e["allowed"]} == {r["op"] for r in refused}
    allowed = {e["op"] for e in mine if e["allowed"]}
    assert {"watchdog_disable", "restart", "server_status", "file_lock_acquire"} <= allowed


def test_a_forged_agent_id_or_a_tokenless_process_of_the_run_is_refused(
    runner, aegis_env, tmp_path
):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os\n"
        "from aegis_mcp.control.client import ControlClient\n"
        "with ControlClient(os.environ['AEGIS_MCP_SOCKET']) as c:\n"
        "    try:\n"
        "        print('ALLOWED', c.call('hello')['caller']['kind'], flush=True)\n"
        "    except Exception as exc:\n"
        "        print('REFUSED', exc, flush=True)\n"
    )
    out = tmp_path / "probe.out"
    # Inside the run: the primary agent with its token, then without token or id.
    script = (
        f"{sys.executable} {probe} > {out}; "
        f"env -u AEGIS_MCP_AGENT_TOKEN -u AEGIS_MCP_AGENT_ID {sys.executable} {probe} >> {out}; "
        "sleep 600"
    )
    sock = runner(["run", "--", "sh", "-c", script])
    lines = wait_for(
        lambda: out.exists() and len(t := out.read_text().splitlines()) == 2 and t, TIMEOUT
    )
    assert lines[0] == "ALLOWED primary"
    assert lines[1].startswith("REFUSED refused: pid ") and "sent no agent token" in lines[1]
    for identity, needle in [
        (("primary", None), "AEGIS_MCP_AGENT_ID alone is a label, not an identity"),
        (("primary", "not-the-token"), "the token does not prove agent 'primary'"),
        ((None, "not-the-token"), "must name its agent"),
    ]:
        with ControlClient(sock, identity=identity) as client, pytest.raises(ControlError) as e:
            client.call("restart", prompt="forged")
        assert e.value.code == protocol.FORBIDDEN and needle in e.value.message
    # Through a real MCP server that was handed the id alone: its tools are refused.
    env = dict(aegis_env, AEGIS_MCP_SOCKET=str(sock), AEGIS_MCP_AGENT_ID="primary")

    async def forged() -> str:
        async with mcp_client(env) as client:
            result = await client.call_tool("watchdog_disable", {})
            return result.content[0].text

    assert "label, not an identity" in asyncio.run(forged())
    status = call(sock, "server_status")
    assert status["agent"]["restarts"] == 0
    assert call(sock, "watchdog_status")["disabled_for_secs"] is None
    authority_state = status["authority"]
    assert authority_state["refused"] == 5
    claims = [r["who"] for r in authority_state["recent_refusals"]]
    assert [c.get("claimed") for c in claims] == [None, "primary", "primary", None, "primary"]
    assert all(c["kind"] == "unproven" and c["uid"] == os.getuid() for c in claims)
    # The token is nowhere but the agents' environments.
    secret = _token_of(status["agent"]["pid"]).encode()
    runtime = Path(aegis_env["AEGIS_MCP_RUNTIME_DIR"])
    for path in runtime.iterdir():
        if path.is_file():
            assert secret not in path.read_bytes(), path
    assert secret.decode() not in json.dumps(status)
    for pid in (status["runner"]["pid"], status["agent"]["pid"]):
        assert secret not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_a_pool_agent_under_run_has_the_tools_and_spawn_depth_is_limited(runner, report):
    sock = runner(["run", "--no-watchdog", "--", "sleep", "600"])
    # Depth 1 spawns depth 2, which may not spawn depth 3 (the default limit is 2).
    deeper = _scenario(_tool("agent_spawn", {"description": "x", "agent_type": "demo"}))
    top = call(
        sock,
        "agent_spawn",
        description=_scenario(
            _tool("server_status"),
            _tool("agent_spawn", {"description": deeper, "agent_type": "demo"}),
            _tool("agent_list"),
            "sleep:30",
        ),
        agent_type="demo",
    )
    first = wait_for(lambda: read_report(report, top["agent_id"]), TIMEOUT)[0]
    # The primary agent is `sleep`: the pool agent still got its MCP server, as itself.
    assert first["mcp_servers"] == ["aegis-mcp"]
    assert first["env"]["AEGIS_MCP_AGENT_ID"] == top["agent_id"]
    assert first["env"]["AEGIS_MCP_AGENT_TOKEN"] == "(set)"
    agents = wait_for(lambda: len(a := call(sock, "agent_list")["agents"]) == 2 and a, TIMEOUT)
    by_depth = {a["depth"]: a for a in agents}
    assert by_depth[1]["agent_id"] == top["agent_id"] and by_depth[1]["spawned_by"] == "user"
    assert by_depth[2]["spawned_by"] == top["agent_id"]
    second = _until(sock, by_depth[2]["agent_id"], "completed")
    refusals = call(sock, "server_status")["authority"]["recent_refusals"]
    assert [(r["op"], r["who"]["agent_id"]) for r in refusals] == [
        ("agent_spawn", second["agent_id"])
    ]
    assert "beyond depth 2" in refusals[0]["reason"]
    [(name, refused, error)] = tool_results(second["log_file"])
    assert name == "agent_spawn" and error
    assert "it runs at depth 2 and the pool's spawn depth limit is 2" in refused
    results = dict((name, result) for name, result, _ in tool_results(top["log_file"]))
    own = results["server_status"]
    assert own["caller"]["agent_id"] == top["agent_id"] and own["agent"]["depth"] == 1
    # It sees itself and what it spawned.
    listed = {a["agent_id"] for a in results["agent_list"]["agents"]}
    assert listed == {top["agent_id"], second["agent_id"]}
    # The user may lift the limit.
    assert call(sock, "agent_pool_configure", max_spawn_depth=3)["max_spawn_depth"] == 3


def test_a_pool_agents_own_watchdog_restarts_it_not_the_primary(
    runner, aegis_env, report, tmp_path
):
    # One restart per minute for each agent: the second one its watchdog asks for is refused.
    Path(aegis_env["AEGIS_MCP_CONFIG"]).write_text("[runner]\nrestart_limit_burst = 1\n")
    sock = runner(["demo", "--scenario", "quiet"])
    work = tmp_path / "pool-work"
    work.mkdir()
    settings = {"enabled": True, "heartbeat_timeout_secs": 1, "lockup_action": "restart"}
    task = _scenario(_tool("watchdog_configure", settings), "quiet")
    agent = call(
        sock, "agent_spawn", description=task, agent_type="demo", working_directory=str(work)
    )
    # Silent after turning its watchdog on: its watchdog restarts it (and again).
    restarted = wait_for(
        lambda: (s := call(sock, "agent_status", agent_id=agent["agent_id"]))["restarts"] and s,
        TIMEOUT,
        what="the pool agent's watchdog to restart it",
    )
    assert restarted["status"] == "running"
    starts = wait_for(lambda: len(r := read_report(report, agent["agent_id"])) >= 2 and r)
    assert starts[1]["headless"] and starts[1]["resume"]
    limited = wait_for(
        lambda: [
            e
            for e in call(sock, "events", limit=500)["events"]
            if e["kind"] == "pool.restart_limit" and e.get("agent") == agent["agent_id"]
        ],
        TIMEOUT,
        what="the agent's start limit to refuse the next restart",
    )
    assert "it keeps running" in limited[0]["message"]
    now = call(sock, "agent_status", agent_id=agent["agent_id"])
    assert now["restarts"] == 1 and now["status"] == "running"
    # The agent's own status shows its limit; the primary agent's is untouched.
    identity = (agent["agent_id"], _token_of(now["pid"]))
    with ControlClient(sock, identity=identity) as client:
        own = client.call("server_status")["agent"]["restart_limit"]
    assert (own["burst"], own["restarts_in_window"], own["refused"]) == (1, 1, 1)
    assert "restart limit reached: 1 restarts within 60s" in own["last_refusal"]
    stopped = call(sock, "agent_stop", agent_id=agent["agent_id"])
    assert stopped["status"] == "stopped"
    events = call(sock, "events", limit=500)["events"]
    assert any(
        e["kind"].startswith("watchdog.") and e.get("agent") == agent["agent_id"] for e in events
    )
    # The primary agent's watchdog saw none of it.
    status = call(sock, "server_status")
    assert status["agent"]["restarts"] == 0 and len(read_report(report)) == 1
    assert status["agent"]["restart_limit"]["refused"] == 0
    assert call(sock, "watchdog_status")["config"]["heartbeat_timeout_secs"] != 1


def _token_of(pid: int) -> str:
    """The agent token in process ``pid``'s environment (root reads any)."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(v.split(b"=", 1) for v in environ if b"=" in v)[b"AEGIS_MCP_AGENT_TOKEN"].decode()


def _listener() -> tuple[socket.socket, int]:
    """A local TCP server that reads whatever comes and closes, for as long as the test."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                with conn:
                    while conn.recv(65536):
                        pass

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def test_a_pool_agent_sees_its_own_traffic_only(runner, tmp_path):
    if find_hooks() is None:
        pytest.skip("the hooks library is not built (make build)")
    servers = [_listener(), _listener()]
    (_, primary_port), (_, pool_port) = servers
    agent = tmp_path / "agent.py"
    agent.write_text(
        "import socket, time\n"
        f"socket.create_connection(('127.0.0.1', {primary_port})).sendall(b'p' * 100)\n"
        "time.sleep(600)\n"
    )
    try:
        argv = ["run", "--netmon=preload", "--no-watchdog", "--", sys.executable, str(agent)]
        sock = runner(argv)
        task = _scenario(
            f"connect:127.0.0.1:{pool_port}:200",
            _tool("netmon_log", {"count": 100}),
            _tool("netmon_status"),
        )
        spawned = call(sock, "agent_spawn", description=task, agent_type="demo")
        done = call(sock, "agent_await", agent_id=spawned["agent_id"], timeout_secs=TIMEOUT)
        everything = call(sock, "netmon_log", count=1000)["events"]
    finally:
        for server, _ in servers:
            server.close()
    results = {name: result for name, result, _ in tool_results(done["log_file"])}
    ports = {e.get("remote_port") for e in results["netmon_log"]["events"]}
    assert pool_port in ports and primary_port not in ports, ports
    own = results["netmon_status"]
    assert own["scope"] == "own processes" and own["bytes_sent"] >= 200
    # The sources' coverage check is of the primary agent's processes, not its own.
    assert "coverage" not in own
    assert f":{primary_port}" not in json.dumps(own["top_targets"])
    # The user sees the whole run.
    assert {primary_port, pool_port} <= {e.get("remote_port") for e in everything}
