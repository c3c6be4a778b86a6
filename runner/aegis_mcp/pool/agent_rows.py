"""Agent records as rows of the ``agents`` table, and the queries over them.

The columns are the fields of ``AgentRecord`` (plus ``updated_at``), derived
from the dataclass so that a field added there without a migration fails the
first write loudly instead of being silently dropped.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import deque
from collections.abc import Collection
from dataclasses import fields
from typing import Any

from .liveness import Identity
from .records import ACTIVE_STATUSES, FINAL_STATUSES, AgentRecord
from .store import PoolStore

FIELDS = tuple(f.name for f in fields(AgentRecord))
assert FIELDS[0] == "agent_id", "_UPSERT and claim() rely on the key being the first column"
_JSON_FIELDS = ("last_output", "changes")
_COLUMNS = (*FIELDS, "updated_at")
_INSERT = f"INSERT INTO agents ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_UPSERT = f"{_INSERT} ON CONFLICT (agent_id) DO UPDATE SET " + ", ".join(
    f"{c} = excluded.{c}" for c in _COLUMNS[1:]
)
_CLAIM = (
    "UPDATE agents SET "
    + ", ".join(f"{c} = ?" for c in _COLUMNS[1:])
    + " WHERE agent_id = ? AND status = ? AND runner_pid IS ? AND runner_started IS ?"
)


def _values(record: AgentRecord) -> tuple[Any, ...]:
    values = []
    for name in FIELDS:
        value = getattr(record, name)
        if name == "last_output":
            value = json.dumps(list(value), ensure_ascii=False)
        elif name in _JSON_FIELDS and value is not None:
            value = json.dumps(value, ensure_ascii=False)
        values.append(value)
    return (*values, time.time())


def from_row(row: sqlite3.Row) -> AgentRecord:
    """The record stored in ``row``."""
    data = {name: row[name] for name in FIELDS}
    data["last_output"] = deque(json.loads(data["last_output"] or "[]"))
    if data["changes"] is not None:
        data["changes"] = json.loads(data["changes"])
    return AgentRecord(**data)


def insert(conn: sqlite3.Connection, record: AgentRecord) -> None:
    """Add a new agent; sqlite3.IntegrityError when its id is taken."""
    conn.execute(_INSERT, _values(record))


def save(conn: sqlite3.Connection, record: AgentRecord) -> None:
    """Write the whole record (insert or replace)."""
    conn.execute(_UPSERT, _values(record))


def load(store: PoolStore, agent_id: str) -> AgentRecord | None:
    """One agent, None when unknown."""
    rows = store.query("SELECT * FROM agents WHERE agent_id = ?", (agent_id,))
    return from_row(rows[0]) if rows else None


def load_active(store: PoolStore, exclude: Identity | None = None) -> list[AgentRecord]:
    """Every agent not finished (but those owned by ``exclude``), oldest first."""
    marks = ",".join("?" * len(ACTIVE_STATUSES))
    sql = f"SELECT * FROM agents WHERE status IN ({marks})"
    params: tuple[Any, ...] = ACTIVE_STATUSES
    if exclude is not None:
        # The owner's start time is compared exactly: it wrote the very same value.
        sql += " AND NOT (runner_pid IS ? AND runner_started IS ?)"
        params = (*params, exclude.pid, exclude.started)
    rows = store.query(sql + " ORDER BY created_at", params)
    return [from_row(row) for row in rows]


BASE_SUMMARY_COLUMNS = (
    "agent_id, agent_type, status, substr(description, 1, ?) AS description, "
    "working_directory, log_file, created_at, started_at, ended_at, pid, exit_code, runner_pid"
)
"""What a listing shows, in every schema version (a reader that cannot migrate uses it)."""
SUMMARY_COLUMNS = BASE_SUMMARY_COLUMNS + ", spawned_by, depth"


def load_summaries(
    store: PoolStore, finished_limit: int, description_chars: int
) -> list[AgentRecord]:
    """Every active agent and the latest ``finished_limit`` finished ones, oldest first,
    with only what a listing shows (and descriptions cut to ``description_chars``)."""
    marks = ",".join("?" * len(FINAL_STATUSES))
    # "+status" keeps SQLite off the status index: walking the creation index
    # backwards stops after the limit, instead of sorting every finished agent.
    rows = store.query(
        f"SELECT * FROM (SELECT {SUMMARY_COLUMNS} FROM agents WHERE +status IN ({marks}) "
        f"ORDER BY created_at DESC LIMIT ?) UNION ALL SELECT {SUMMARY_COLUMNS} FROM agents "
        f"WHERE status NOT IN ({marks}) ORDER BY created_at",
        (description_chars, *FINAL_STATUSES, finished_limit, description_chars, *FINAL_STATUSES),
    )
    return [AgentRecord(**dict(row)) for row in rows]


def status_totals(store: PoolStore) -> dict[str, tuple[int, float, int]]:
    """Per status: how many agents, and the sum and count of their run times."""
    rows = store.query(
        "SELECT status, COUNT(*), "
        "TOTAL(CASE WHEN started_at IS NOT NULL AND ended_at IS NOT NULL "
        "THEN MAX(0.0, ended_at - started_at) END), "
        "COUNT(CASE WHEN started_at IS NOT NULL AND ended_at IS NOT NULL THEN 1 END) "
        "FROM agents GROUP BY status"
    )
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def stored_statuses(store: PoolStore, agent_ids: Collection[str]) -> dict[str, str]:
    """The statuses the database holds for ``agent_ids`` (those it knows), in one read."""
    if not agent_ids:
        return {}
    marks = ",".join("?" * len(agent_ids))
    rows = store.query(
        f"SELECT agent_id, status FROM agents WHERE agent_id IN ({marks})", tuple(agent_ids)
    )
    return {row[0]: row[1] for row in rows}


def id_taken(store: PoolStore, agent_id: str) -> bool:
    """Whether any pool on this database ever used ``agent_id``."""
    return bool(store.query("SELECT 1 FROM agents WHERE agent_id = ?", (agent_id,)))


def claim(conn: sqlite3.Connection, previous: AgentRecord, record: AgentRecord) -> bool:
    """Replace ``previous`` by ``record`` only if the row still is ``previous``'s
    (same owner, same status); False when another pool got there first."""
    cursor = conn.execute(
        _CLAIM,
        (
            *_values(record)[1:],
            previous.agent_id,
            previous.status,
            previous.runner_pid,
            previous.runner_started,
        ),
    )
    return cursor.rowcount == 1
