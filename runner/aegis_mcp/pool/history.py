"""The pool's history read from its database without a runner, never written.

The dashboard shows it while no runner is up. Opening a :class:`~.store.PoolStore`
would create the database, migrate it, prune it, or move a corrupt file aside:
a viewer must do none of that, so this opens the file read-only and reads only
what a listing shows. (Read-only still reads the WAL, where a runner that
crashed may have left its last commits; SQLite may create its -shm index for it.)
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from .agent_rows import BASE_SUMMARY_COLUMNS
from .errors import PoolUnavailable
from .records import DESCRIPTION_PREVIEW_CHARS, AgentRecord, summary_view
from .store import DB_NAME

DEFAULT_LIMIT = 200


def read_history(directory: Path, limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
    """The newest ``limit`` agents of the pool database in ``directory``, newest first,
    as ``agent_list`` shows them; [] when there is no database yet.

    Raises PoolUnavailable when the file cannot be read as a pool database.
    """
    path = Path(directory) / DB_NAME
    if not path.exists():
        return []
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error as exc:
        raise PoolUnavailable(f"cannot read the pool database {path}: {exc}") from None
    try:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            f"SELECT {BASE_SUMMARY_COLUMNS} FROM agents ORDER BY created_at DESC LIMIT ?",
            (DESCRIPTION_PREVIEW_CHARS + 1, limit),
        ).fetchall()
    except sqlite3.Error as exc:
        raise PoolUnavailable(f"cannot read the pool database {path}: {exc}") from None
    finally:
        conn.close()
    return [summary_view(AgentRecord(**dict(row))) for row in rows]
