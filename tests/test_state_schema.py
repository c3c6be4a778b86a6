"""``control/snapshot.py`` is what a real runner sends: ``server_status``, the snapshot file and
the first ``subscribe`` message carry every field the schema requires, with its declared values."""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypedDict

from aegis_mcp.control import snapshot as schema
from aegis_mcp.control.client import ControlClient
from aegis_mcp.sandbox.kinds import SANDBOX_KINDS
from helpers import WAIT, call, runner_socket, start_aegis, wait_for


def mismatches(kind: Any, value: Any, where: str) -> list[str]:
    """Where ``value`` is not of ``kind``: a required key missing, or a value outside a Literal.

    Keys the schema does not name are allowed (new fields may appear at any time), and
    plain types are not checked: the schema's TypedDicts and Literals are what clients rely on.
    """
    if typing.is_typeddict(kind):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not an object"]
        found = [f"{where}: no {key!r}" for key in sorted(kind.__required_keys__ - set(value))]
        for key, field in typing.get_type_hints(kind).items():
            if key in value:
                found += mismatches(field, value[key], f"{where}.{key}")
        return found
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        return [] if value in args else [f"{where}: {value!r} is not one of {args}"]
    if origin is list and isinstance(value, list):
        items = enumerate(value)
        return [m for i, item in items for m in mismatches(args[0], item, f"{where}[{i}]")]
    if origin is dict and isinstance(value, dict):
        entries = value.items()
        return [m for k, item in entries for m in mismatches(args[1], item, f"{where}[{k}]")]
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return []
        tries = [mismatches(arg, value, where) for arg in args if arg is not type(None)]
        return [] if any(t == [] for t in tries) else min(tries, key=len)
    return []


class _Leaf(TypedDict):
    state: Literal["on", "off"]
    count: int


class _Tree(TypedDict, total=False):
    name: str
    leaves: list[_Leaf]
    by_id: dict[str, _Leaf]
    spare: _Leaf | None


def test_the_checker_sees_a_missing_field_and_a_wrong_literal() -> None:
    # The test below means nothing if the checker passes anything (on a schema of its own,
    # so that the real one may grow without touching this).
    good = {"state": "on", "count": 1}
    assert mismatches(_Leaf, good, "l") == []
    assert mismatches(_Leaf, {"state": "on"}, "l") == ["l: no 'count'"]
    assert mismatches(_Leaf, {**good, "extra": 1}, "l") == [], "unknown keys are allowed"
    tree = {
        "leaves": [good, {"state": "dim", "count": 2}],
        "by_id": {"a": {"count": 3}},
        "spare": None,
    }
    assert mismatches(_Tree, tree, "t") == [
        "t.leaves[1].state: 'dim' is not one of ('on', 'off')",
        "t.by_id[a]: no 'state'",
    ]
    assert mismatches(_Tree, {"spare": "x"}, "t") == ["t.spare: str, not an object"]


def test_the_schema_names_the_sandbox_kinds_the_backends_have() -> None:
    # control/ may not import sandbox/, so the schema spells the kinds again: they must agree.
    kind = typing.get_type_hints(schema.SandboxInfo)["kind"]
    assert typing.get_args(kind) == SANDBOX_KINDS


def test_a_real_runner_sends_what_the_schema_says(aegis_env, runtime_dir, tmp_path: Path) -> None:
    agent = tmp_path / "agent.py"
    agent.write_text("import time\nprint('ready', flush=True)\ntime.sleep(300)\n")
    argv = ["run", "--netmon=preload", "--", sys.executable, str(agent)]
    proc = start_aegis(argv, aegis_env, cwd=tmp_path)
    try:
        sock = runner_socket(runtime_dir)
        wait_for(lambda: call(sock, "server_status")["agent"]["pid"], what="the agent's pid")
        call(sock, "restart", reason="a restart record for the schema")
        spawned = call(sock, "agent_spawn", description="/scenario say:schema", agent_type="demo")
        locked = tmp_path / "locked.txt"
        call(sock, "file_lock_acquire", path=str(locked), holder="schema-test")
        wait_for(
            lambda: (
                call(sock, "agent_status", agent_id=spawned["agent_id"])["status"] == "completed"
            ),
            what="the pool agent to finish",
        )

        status = call(sock, "server_status")
        assert status["agent"]["restarts"] == 1 and status["pool"] is not None
        assert mismatches(schema.ServerStatus, status, "server_status") == []

        snapshot_file = Path(status["runner"]["snapshot"])
        snapshot = wait_for(
            lambda: (s := json.loads(snapshot_file.read_text()))["locks"] and s,
            what="the lock in the snapshot",
        )
        assert spawned["agent_id"] in snapshot["pool_agents"]
        assert mismatches(schema.Snapshot, snapshot, "snapshot") == []

        with ControlClient(sock, timeout=WAIT) as client:
            first = next(client.subscribe())
        assert first["type"] == "state"
        assert mismatches(schema.StateMessage, first, "subscribe") == []
    finally:
        proc.terminate()
        proc.wait(timeout=30)
