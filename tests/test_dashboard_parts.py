"""The pieces under the dashboard: the model folding the stream, the notifier, the pool
history read without writing, the traffic history and the resource sampler."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from aegis_mcp.config import DashboardSettings
from aegis_mcp.dashboard.model import Alert, DashboardModel
from aegis_mcp.dashboard.notify import Notifier
from aegis_mcp.netmon.stats import TRAFFIC_BUCKET_SECS, TRAFFIC_BUCKETS, NetmonStats
from aegis_mcp.pool import agent_rows
from aegis_mcp.pool.errors import PoolUnavailable
from aegis_mcp.pool.history import read_history
from aegis_mcp.pool.records import AgentRecord
from aegis_mcp.pool.store import DB_NAME, PoolStore
from aegis_mcp.runner.resources import ResourceSampler


def _state(health: str = "Active") -> dict:
    return {
        "type": "state",
        "seq": 5,
        "state": {
            "watchdog": {"state": health, "reason": "r"},
            "events": [{"seq": 1, "kind": "a"}],
            "netmon_events": [],
        },
    }


def test_the_model_alerts_on_entering_idle_or_unresponsive_only():
    model = DashboardModel()
    assert model.fold(_state("Idle")) is None  # already idle when attached: no alarm
    assert model.take_dirty() >= {"watchdog", "events"}
    idle = {"type": "change", "seq": 6, "section": "watchdog"}
    assert model.fold({**idle, "value": {"state": "Idle", "reason": "again"}}) is None
    assert model.fold({**idle, "seq": 7, "value": {"state": "Active", "reason": ""}}) is None
    alert = model.fold({**idle, "seq": 8, "value": {"state": "Idle", "reason": "at its prompt"}})
    assert alert == Alert("Idle", "at its prompt")
    stuck = {"state": "Unresponsive", "reason": "no output"}
    assert model.fold({**idle, "seq": 9, "value": stuck}) == Alert("Unresponsive", "no output")
    assert model.take_dirty() == {"watchdog"}
    # A gap in the numbers is counted; the log keeps growing past the state's ring.
    model.fold({"type": "event", "seq": 12, "event": {"kind": "b"}})
    assert model.missed == 2 and [e["kind"] for e in model.log] == ["a", "b"]
    assert model.log_total == 2


def test_a_failing_notify_command_is_reported_not_raised(tmp_path):
    said: list[str] = []
    rang: list[bool] = []

    async def main() -> None:
        for argv in (["/nonexistent/notifier"], ["sh", "-c", "echo nope >&2; exit 3"]):
            notifier = Notifier(
                DashboardSettings("command", tuple(argv)), lambda: rang.append(True), said.append
            )
            notifier.alert(Alert("Idle", "waiting"), 42)
            await asyncio.gather(*notifier._tasks)
        Notifier(DashboardSettings("bell"), lambda: rang.append(True), said.append).alert(
            Alert("Idle", "waiting"), 42
        )
        Notifier(DashboardSettings("none"), lambda: rang.append(True), said.append).alert(
            Alert("Idle", "waiting"), 42
        )

    asyncio.run(main())
    assert "could not start" in said[0] and "exited 3 nope" in said[1]
    assert rang == [True]


def _database(directory: Path, count: int) -> None:
    store = PoolStore.open(directory)
    with store.write() as conn:
        for n in range(count):
            record = AgentRecord(
                agent_id=f"a{n}",
                agent_type="demo",
                description=f"task {n}",
                working_directory="/w",
                log_file="/l",
                status="completed",
                created_at=1000.0 + n,
            )
            agent_rows.insert(conn, record)
    store.close()


def test_pool_history_is_read_without_writing(tmp_path):
    assert read_history(tmp_path) == []
    assert not (tmp_path / DB_NAME).exists(), "reading must not create the database"
    _database(tmp_path, 5)
    before = (tmp_path / DB_NAME).read_bytes()
    history = read_history(tmp_path, limit=3)
    assert [a["agent_id"] for a in history] == ["a4", "a3", "a2"]
    assert history[0]["description"] == "task 4" and history[0]["status"] == "completed"
    # (A WAL reader may leave SQLite's empty -wal and -shm index beside it.)
    assert (tmp_path / DB_NAME).read_bytes() == before


def test_unreadable_pool_history_is_an_error_and_the_file_stays(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"not a database" * 100)
    with pytest.raises(PoolUnavailable, match="cannot read the pool database"):
        read_history(tmp_path)
    assert (tmp_path / DB_NAME).read_bytes() == b"not a database" * 100
    assert sorted(p.name for p in tmp_path.iterdir()) == [DB_NAME]
    with pytest.raises(sqlite3.Error):
        sqlite3.connect(tmp_path / DB_NAME).execute("SELECT 1 FROM agents")


def test_traffic_is_kept_per_bucket_over_the_last_minutes():
    stats = NetmonStats("test")
    now = time.time()
    bucket = now - now % TRAFFIC_BUCKET_SECS
    ev = {"source": "preload", "pid": 1, "remote_addr": "127.0.0.1", "remote_port": 9}
    stats.ingest({**ev, "event": "send", "bytes": 100, "ts": bucket + 1})
    stats.ingest({**ev, "event": "recv", "bytes": 50, "ts": bucket + 2})
    stats.ingest({**ev, "event": "connect", "result": 0, "ts": bucket - TRAFFIC_BUCKET_SECS})
    # Older than the window: counted in the totals, not in the history.
    stats.ingest({**ev, "event": "send", "bytes": 7, "ts": bucket - 100 * TRAFFIC_BUCKET_SECS})
    traffic = stats.status()["traffic"]
    assert traffic["bucket_secs"] == TRAFFIC_BUCKET_SECS
    assert traffic["until"] == bucket + TRAFFIC_BUCKET_SECS
    assert len(traffic["bytes"]) == len(traffic["events"]) == TRAFFIC_BUCKETS
    assert traffic["bytes"][-1] == 150 and traffic["events"][-1] == 2
    assert traffic["bytes"][-2] == 0 and traffic["events"][-2] == 1
    assert sum(traffic["bytes"]) == 150 and stats.status()["bytes_sent"] == 107


def test_resources_are_not_sampled_in_the_first_second():
    sampler = ResourceSampler(first_after=60)
    assert sampler.section(None) is None


def test_resources_are_sampled_at_most_once_a_second():
    sampler = ResourceSampler(min_interval=60, first_after=0)
    first = sampler.section(None)
    assert first["agent_tree"] is None
    machine = first["machine"]
    assert machine["cpus"] >= 1 and 0 < machine["memory_used_mb"] < machine["memory_total_mb"]
    assert sampler.section(None) is first
