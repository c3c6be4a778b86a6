"""The ``subscribe`` stream: a real runner's state, then its changes and events as they happen;
and a slow client dropped without slowing anyone else."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from aegis_mcp.control.client import ControlClient, subscribe
from aegis_mcp.control.snapshot import SCHEMA_VERSION, SECTIONS, apply
from aegis_mcp.hooks_lib import find_hooks
from aegis_mcp.runner.control_server import MAX_STREAM_BUFFER, ControlServer
from aegis_mcp.runner.feed import StateFeed
from aegis_mcp.runner.ops import stream_ops
from helpers import REPO, WAIT, call, runner_socket, serve_connections, start_aegis, wait_for


class Listener:
    """Reads a subscription in a thread; the test takes its messages as they come."""

    def __init__(self, socket_path: Path) -> None:
        self.client = ControlClient(socket_path, timeout=WAIT)
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        stream = self.client.subscribe()
        self.first = next(stream)
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for message in stream:
            self.messages.put(message)

    def until(self, what: str, predicate) -> dict[str, Any]:
        """The first message from now on that ``predicate`` accepts."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                message = self.messages.get(timeout=0.5)
            except queue.Empty:
                continue
            self.seen.append(message)
            if predicate(message):
                return message
        raise AssertionError(f"no {what} arrived; got {[m['type'] for m in self.seen][-20:]}")


def is_event(kind: str):
    return lambda m: m["type"] == "event" and m["event"]["kind"] == kind


def pool_change(agent_id: str, status: str):
    return lambda m: (
        m["type"] == "change"
        and m["section"] == "pool_agents"
        and m.get("key") == agent_id
        and (m["value"] or {}).get("status") == status
    )


@pytest.fixture(scope="module")
def hooks() -> None:
    if find_hooks() is None:
        subprocess.run(["make", "-C", str(REPO), "build"], check=True, capture_output=True)
    if find_hooks() is None:
        pytest.skip("the hooks library could not be built (gcc missing?)")


def test_a_subscriber_sees_restarts_pool_agents_and_netmon_as_they_happen(
    hooks, aegis_env, runtime_dir, tmp_path
):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    serve_connections(server, socket.socket.close)
    agent = tmp_path / "agent.py"
    # Every start of the agent connects once: the restarted one is seen by netmon.
    agent.write_text(
        "import socket, time\n"
        f"socket.create_connection(('127.0.0.1', {port})).close()\n"
        "time.sleep(300)\n"
    )
    proc = start_aegis(
        ["run", "--netmon=preload", "--no-watchdog", "--", sys.executable, str(agent)],
        aegis_env,
        output=False,
    )
    listener = None
    try:
        sock = runner_socket(runtime_dir)
        first_pid = wait_for(lambda: call(sock, "server_status")["agent"]["pid"])
        listener = Listener(sock)
        assert listener.first["type"] == "state"
        state = apply({}, listener.first)
        assert state["schema_version"] == SCHEMA_VERSION
        assert set(SECTIONS) <= set(state)
        assert state["agent"]["pid"] == first_pid and state["agent"]["restarts"] == 0
        assert state["pool_agents"] == {} and state["netmon"]["mode"] == "preload"

        call(sock, "restart", reason="seen by a subscriber")
        restarted = listener.until("restart event", is_event("agent.restarted"))
        new_pid = restarted["event"]["pid"]
        assert new_pid != first_pid
        listener.until(
            "agent change",
            lambda m: (
                m["type"] == "change"
                and m["section"] == "agent"
                and m["value"]["restarts"] == 1
                and m["value"]["pid"] == new_pid
            ),
        )
        connect = listener.until(
            "netmon event of the new agent",
            lambda m: (
                m["type"] == "netmon"
                and m["event"]["event"] == "connect"
                and m["event"]["pid"] == new_pid
            ),
        )
        assert connect["event"]["remote_port"] == port

        spawned = call(
            sock, "agent_spawn", description="/scenario say:hello-from-the-pool", agent_type="demo"
        )
        agent_id = spawned["agent_id"]
        listener.until("pool start event", is_event("pool.start"))
        listener.until("running pool agent", pool_change(agent_id, "running"))
        done = listener.until("finished pool agent", pool_change(agent_id, "completed"))
        assert any("hello-from-the-pool" in line for line in done["value"]["last_output"])

        # Folding the stream into the first state gives the runner's state now.
        for message in listener.seen:
            apply(state, message)
        status = call(sock, "server_status")
        assert state["agent"]["restarts"] == status["agent"]["restarts"] == 1
        assert state["agent"]["pid"] == status["agent"]["pid"]
        assert list(state["pool_agents"]) == [agent_id]
        seqs = [listener.first["seq"], *(m["seq"] for m in listener.seen)]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a message was missed"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        server.close()
    end = listener.until("end of the stream", lambda m: m["type"] in ("end", "dropped"))
    assert end["type"] == "end" and "exiting" in end["reason"]
    # The last state sent is the run's end: the agent exited, its pool still on record.
    final = apply({}, listener.first)
    for message in listener.seen:
        apply(final, message)
    assert final["agent"]["status"] == "exited"
    assert final["pool_agents"][agent_id]["status"] == "completed"


# ---- back-pressure, in process: a real control server and feed on a real socket -----------------


def test_a_slow_subscriber_is_dropped_and_the_others_keep_up(tmp_path):
    events = 900
    padding = "x" * 10_000  # ~9 MB in all: past the slow client's buffer, whatever the socket's

    async def main() -> dict[str, Any]:
        state = _state()
        feed = StateFeed(lambda: state, tick_secs=60)
        server = ControlServer(tmp_path / "s.sock", {os.getuid()})
        for op, opener in stream_ops(feed).items():
            server.register_stream(op, opener)
        await server.start()
        slow = socket.socket(socket.AF_UNIX)
        slow.connect(str(tmp_path / "s.sock"))
        slow.sendall(b'{"v":1,"id":7,"op":"subscribe","args":{}}\n')
        fast_messages: list[dict[str, Any]] = []
        fast = subscribe(tmp_path / "s.sock")
        fast_messages.append(await anext(fast))

        async def read_fast() -> None:
            async for message in fast:
                fast_messages.append(message)

        reader = asyncio.ensure_future(read_fast())
        await wait_async(lambda: feed.subscribers == 2)
        for number in range(events):
            feed.event({"seq": number, "kind": "test.flood", "message": padding})
            if number % 10 == 0:
                await asyncio.sleep(0.005)  # the fast reader reads meanwhile
        await wait_async(lambda: feed.subscribers == 1)
        state["pool_agents"] = {"a1": {"agent_id": "a1", "status": "running"}}
        feed.changed()
        await wait_async(lambda: any(m.get("section") == "pool_agents" for m in fast_messages))
        del state["pool_agents"]["a1"]
        feed.changed()
        await wait_async(lambda: fast_messages[-1].get("key") == "a1")
        slow_lines = await asyncio.to_thread(_read_all, slow)
        feed.close("the test is over")
        await reader
        await server.close()
        return {"fast": fast_messages, "slow": slow_lines}

    got = asyncio.run(main())
    fast = got["fast"]
    assert fast[0]["type"] == "state" and fast[-1] == {
        "type": "end",
        "seq": fast[-1]["seq"],
        "reason": "the test is over",
    }
    flood = [m for m in fast if m["type"] == "event"]
    assert [m["event"]["seq"] for m in flood] == list(range(events))
    assert [m["seq"] for m in fast[1:]] == list(range(fast[1]["seq"], fast[-1]["seq"] + 1))
    removal = fast[-2]
    assert (removal["section"], removal["key"], removal["value"]) == ("pool_agents", "a1", None)
    # The slow client got its reply, then what fitted, then a last line saying why.
    slow = [json.loads(line) for line in got["slow"]]
    assert slow[0]["ok"] is True and slow[0]["result"]["type"] == "state"
    *streamed, last = (line["stream"] for line in slow[1:])
    assert last["type"] == "dropped" and "too slowly" in last["reason"]
    assert str(MAX_STREAM_BUFFER) in last["reason"]
    assert 0 < len(streamed) < events
    assert [m["seq"] for m in [*streamed, last]] == list(range(streamed[0]["seq"], last["seq"] + 1))


def test_a_refused_subscribe_leaves_the_connection_usable(tmp_path):
    async def main() -> list[dict[str, Any]]:
        feed = StateFeed(_state, tick_secs=60)
        server = ControlServer(tmp_path / "s.sock", {os.getuid()})
        for op, opener in stream_ops(feed).items():
            server.register_stream(op, opener)
        await server.start()
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "s.sock"))
        writer.write(b'{"v":1,"id":1,"op":"subscribe","args":{"topics":["all"]}}\n')
        refused = json.loads(await reader.readline())
        writer.write(b'{"v":1,"id":2,"op":"subscribe","args":{}}\n')
        accepted = json.loads(await reader.readline())
        feed.close("done")
        end = json.loads(await reader.readline())
        closed = await reader.readline()
        writer.close()
        await server.close()
        return [refused, accepted, end, {"closed": closed == b""}]

    refused, accepted, end, closed = asyncio.run(main())
    assert refused["error"]["code"] == "invalid_argument"
    assert "topics" in refused["error"]["message"]
    assert accepted["id"] == 2 and accepted["result"]["type"] == "state"
    assert end == {"v": 1, "id": 2, "stream": {"type": "end", "seq": 1, "reason": "done"}}
    assert closed == {"closed": True}


def _state() -> dict[str, Any]:
    state: dict[str, Any] = {section: {} for section in SECTIONS}
    state.update(schema_version=SCHEMA_VERSION, events=[], netmon_events=[], written_at=0.0)
    return state


def _read_all(sock: socket.socket) -> list[str]:
    sock.settimeout(WAIT)
    data = b""
    while chunk := sock.recv(1 << 20):
        data += chunk
    sock.close()
    return data.decode().splitlines()


async def wait_async(predicate, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)
