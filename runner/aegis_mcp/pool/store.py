"""The pool's SQLite database: agents, locks and their history, shared by every
pool on one state directory (``<state dir>/pool.db``).

WAL mode lets readers (``agent_list`` of another runner) go on while one
process writes; writes are small transactions started with ``BEGIN IMMEDIATE``,
so that a read-check-write (a lock acquire) is atomic across processes. Waits
for another writer are bounded by ``busy_timeout``. Calls are synchronous and
run on the host's event loop: each is a few hundred microseconds, far cheaper
than a hop to a thread with its own connection.

Every SQLite failure reaches the caller as :class:`~.errors.PoolUnavailable` with
the database's path and what to do. A file that is not a database, or that
fails SQLite's ``quick_check``, is moved aside to ``pool.db.corrupt-<time>``
(never deleted) and a new database is started; ``notices`` and the new
database's event history say so.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..safe_paths import UnsafeDirectoryError, private_dir
from . import liveness
from .errors import PoolUnavailable
from .records import FINAL_STATUSES
from .schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

DB_NAME = "pool.db"
DEFAULT_BUSY_TIMEOUT_SECS = 5.0
MAX_FINISHED_AGENTS = 5_000
"""Finished agents kept in the database; older rows go (their log files stay)."""
MAX_EVENTS = 20_000

Notice = tuple[str, str, str]
"""``(kind, message, level)``, the shape of the host's event log."""


class _Corrupt(Exception):
    """The file opened but SQLite's integrity check failed."""


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    # Extended codes carry the primary code in their low byte.
    return None if code is None else code & 0xFF


def _is_corrupt(exc: BaseException) -> bool:
    if isinstance(exc, _Corrupt):
        return True
    return isinstance(exc, sqlite3.DatabaseError) and _code(exc) in (
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_NOTADB,
    )


def _private_file(path: Path) -> None:
    """Create the database file 0600 before SQLite does (it follows the umask,
    and copies the database's mode to its -wal and -shm files); an existing one
    must be a plain file of ours."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    fd = os.open(path, flags, 0o600)
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        raise OSError(errno.EPERM, "not a regular file owned by this user", str(path))


def _move_aside(path: Path) -> Path:
    """Rename a corrupt database (and its WAL files) out of the way; returns the new name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    os.rename(path, aside)
    # The WAL belongs to the corrupt file: left in place, SQLite would replay it
    # into the new database.
    for suffix in ("-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            os.rename(side, Path(f"{aside}{suffix}"))
    return aside


def _migrate(conn: sqlite3.Connection, where: str) -> None:
    """Bring the schema up to ``SCHEMA_VERSION`` (a no-op read when it is)."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    version = row[0] or 0
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have migrated while we waited for the write lock.
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
        if version > SCHEMA_VERSION:
            raise PoolUnavailable(
                f"the pool database {where} has schema version {version}, newer than this "
                f"aegis-mcp knows ({SCHEMA_VERSION}): upgrade aegis-mcp, or point "
                "AEGIS_MCP_STATE_DIR at another directory",
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[number - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


class PoolStore:
    """One connection to the pool database, and the translation of its failures."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None, busy_timeout: float) -> None:
        """Use ``open`` or ``in_memory``."""
        self._conn = conn
        self.path = path
        self.busy_timeout = busy_timeout
        self.me = liveness.current()
        """The process using this store: owner of the agents it starts and the locks it takes."""
        self.notices: list[Notice] = []
        """What happened while opening (a corrupt file moved aside), for the host's event log."""

    @property
    def directory(self) -> Path | None:
        """The state directory holding the database (None in memory)."""
        return None if self.path is None else self.path.parent

    @property
    def where(self) -> str:
        """The database's name in messages."""
        return "(in memory)" if self.path is None else str(self.path)

    # -- opening -------------------------------------------------------------------

    @classmethod
    def open(
        cls, directory: Path | None = None, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT_SECS
    ) -> PoolStore:
        """Open (or create) the database in ``directory`` (default: the state directory).

        Raises PoolUnavailable when it cannot be used (locked past the
        timeout, unreadable, a newer schema); a corrupt file is moved aside.
        """
        if directory is None:
            from ..paths import state_dir

            directory = state_dir()
        path = Path(directory) / DB_NAME
        try:
            return cls._open_file(path, busy_timeout)
        except (sqlite3.Error, _Corrupt) as exc:
            if not _is_corrupt(exc):
                raise _translate(exc, str(path), busy_timeout) from None
            reason = str(exc)
        try:
            aside = _move_aside(path)
        except OSError as exc:
            raise PoolUnavailable(
                f"the pool database {path} is corrupt ({reason}) and could not be moved aside "
                f"({exc.strerror}): move it away by hand, a new one is created on the next start",
            ) from None
        try:
            store = cls._open_file(path, busy_timeout)
        except (sqlite3.Error, _Corrupt) as exc:
            raise _translate(exc, str(path), busy_timeout) from None
        message = (
            f"the pool database {path} was corrupt ({reason}); it was moved aside to {aside} "
            "(the earlier history is in that file) and a new one was started"
        )
        log.error("%s", message)
        store.notices.append(("pool.store_corrupt", message, "error"))
        with contextlib.suppress(PoolUnavailable), store.write() as conn:
            store.add_event(conn, "pool.store_corrupt", message, "error")
        return store

    @classmethod
    def _open_file(cls, path: Path, busy_timeout: float) -> PoolStore:
        try:
            private_dir(path.parent)
            _private_file(path)
        except UnsafeDirectoryError as exc:
            raise PoolUnavailable(
                f"cannot use the pool database {path}: {exc}; set AEGIS_MCP_STATE_DIR"
            ) from None
        except OSError as exc:
            raise PoolUnavailable(
                f"cannot create the pool database {path}: {exc.strerror}; check the "
                "directory's permissions and free space, or set AEGIS_MCP_STATE_DIR",
            ) from None
        # ``timeout`` is SQLite's busy timeout: how long a call waits for another writer.
        conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL loses at most the last commits on a power cut,
            # never consistency; FULL would fsync on every agent state change.
            conn.execute("PRAGMA synchronous = NORMAL")
            check = [tuple(row) for row in conn.execute("PRAGMA quick_check")]
            if check != [("ok",)]:
                raise _Corrupt("; ".join(str(row[0]) for row in check[:3]))
            _migrate(conn, str(path))
        except BaseException:
            conn.close()
            raise
        store = cls(conn, path, busy_timeout)
        store._prune()
        return store

    @classmethod
    def in_memory(cls) -> PoolStore:
        """A private database that lives as long as the store (no history across runs)."""
        conn = sqlite3.connect(":memory:", isolation_level=None)
        conn.row_factory = sqlite3.Row
        _migrate(conn, "(in memory)")
        return cls(conn, None, 0.0)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    # -- use -----------------------------------------------------------------------

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): all of it is saved, or none of it.

        The body must not await: the connection is shared by everything on the loop.
        """
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self.error(exc) from None
        try:
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self.error(exc) from None
        except BaseException:
            self._rollback()
            raise

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Rows of one read."""
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self.error(exc) from None

    def add_event(
        self,
        conn: sqlite3.Connection,
        kind: str,
        message: str,
        level: str = "info",
        agent_id: str | None = None,
    ) -> None:
        """Record one history event inside the caller's transaction."""
        conn.execute(
            "INSERT INTO events (ts, runner_pid, agent_id, kind, level, message) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), self.me.pid, agent_id, kind, level, message),
        )

    def events(self, limit: int = 200, agent_id: str | None = None) -> list[dict[str, Any]]:
        """The latest history events (of one agent when given), oldest first."""
        where, params = ("WHERE agent_id = ?", (agent_id,)) if agent_id else ("", ())
        rows = self.query(
            f"SELECT ts, runner_pid, agent_id, kind, level, message FROM events {where} "
            "ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [dict(row) for row in reversed(rows)]

    def error(self, exc: sqlite3.Error) -> PoolUnavailable:
        """The error to give the caller for a failed database call."""
        return _translate(exc, self.where, self.busy_timeout)

    # -- upkeep --------------------------------------------------------------------

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")

    def _prune(self) -> None:
        """Drop the oldest finished agents and events beyond the limits (best effort)."""
        marks = ",".join("?" * len(FINAL_STATUSES))
        try:
            finished = self.query(
                f"SELECT COUNT(*) FROM agents WHERE status IN ({marks})", FINAL_STATUSES
            )[0][0]
            events = self.query("SELECT COUNT(*) FROM events")[0][0]
            if finished <= MAX_FINISHED_AGENTS and events <= MAX_EVENTS:
                return
            with self.write() as conn:
                conn.execute(
                    f"DELETE FROM agents WHERE status IN ({marks}) AND agent_id NOT IN "
                    f"(SELECT agent_id FROM agents WHERE status IN ({marks}) "
                    "ORDER BY created_at DESC LIMIT ?)",
                    (*FINAL_STATUSES, *FINAL_STATUSES, MAX_FINISHED_AGENTS),
                )
                conn.execute(
                    "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?",
                    (MAX_EVENTS,),
                )
        except PoolUnavailable as exc:
            # Pruning can wait for the next start; the pool works without it.
            log.warning("pruning the pool history failed: %s", exc)


def _translate(exc: BaseException, where: str, busy_timeout: float) -> PoolUnavailable:
    """A PoolUnavailable that says what failed and what the user can do about it."""
    if isinstance(exc, PoolUnavailable):
        return exc
    code = _code(exc) if isinstance(exc, sqlite3.Error) else None
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        message = (
            f"the pool database {where} stayed locked by another process for more than "
            f"{busy_timeout:g} s, so the change was not made: retry; if it persists, another "
            f"aegis-mcp is stuck in a write (`fuser {where}` names it)"
        )
    elif code == sqlite3.SQLITE_FULL:
        message = (
            f"no space left to write the pool database {where} (disk or quota full), so the "
            "change was not made: free some space and retry"
        )
    elif _is_corrupt(exc):
        message = (
            f"the pool database {where} is corrupt ({exc}): stop the aegis-mcp processes "
            "using it and move the file aside; a new one is created on the next start"
        )
    elif code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_CANTOPEN):
        message = (
            f"cannot write the pool database {where} ({exc}): check the permissions of the "
            "file and its directory, or set AEGIS_MCP_STATE_DIR"
        )
    elif code == sqlite3.SQLITE_IOERR:
        message = f"I/O error on the pool database {where} ({exc}): check the disk"
    else:
        message = f"the pool database {where} failed: {exc}"
    return PoolUnavailable(message)
