"""The pool database's schema, as a list of migrations.

Migration N (1-based) takes a database from version N-1 to N; ``schema_version``
holds the version reached. To change the schema, append a migration: never edit
one that has shipped, since databases out there have already run it. Each
migration is a tuple of single statements, run inside one transaction
(``executescript`` would commit half-way).
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: agents (every field of AgentRecord), locks, and the event history.
    (
        """
        CREATE TABLE agents (
            agent_id TEXT PRIMARY KEY,
            agent_type TEXT NOT NULL,
            description TEXT NOT NULL,
            working_directory TEXT NOT NULL,
            log_file TEXT NOT NULL,
            max_iterations INTEGER,
            timeout_secs REAL,
            status TEXT NOT NULL,
            created_at REAL NOT NULL,
            started_at REAL,
            ended_at REAL,
            pid INTEGER,
            exit_code INTEGER,
            result TEXT,
            error TEXT,
            output_bytes INTEGER NOT NULL DEFAULT 0,
            last_output TEXT NOT NULL DEFAULT '[]',
            pid_started REAL,
            runner_pid INTEGER,
            runner_started REAL,
            sandbox TEXT NOT NULL DEFAULT 'none',
            isolation TEXT NOT NULL DEFAULT 'none',
            worktree TEXT,
            branch TEXT,
            base_commit TEXT,
            changes TEXT,
            note TEXT,
            updated_at REAL NOT NULL
        )
        """,
        # Covers the statistics query: counts and run times without reading the rows.
        "CREATE INDEX agents_by_status ON agents (status, started_at, ended_at)",
        "CREATE INDEX agents_by_created ON agents (created_at)",
        """
        CREATE TABLE locks (
            path TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            holder_pid INTEGER,
            holder_started REAL,
            owner_pid INTEGER NOT NULL,
            owner_started REAL,
            since REAL NOT NULL,
            expires_at REAL NOT NULL
        )
        """,
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            runner_pid INTEGER,
            agent_id TEXT,
            kind TEXT NOT NULL,
            level TEXT NOT NULL,
            message TEXT NOT NULL
        )
        """,
        "CREATE INDEX events_by_agent ON events (agent_id)",
    ),
    # 2: who spawned each agent (what a pool agent may act on), at what depth, and
    # how often it restarted itself.
    (
        "ALTER TABLE agents ADD COLUMN spawned_by TEXT",
        "ALTER TABLE agents ADD COLUMN depth INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE agents ADD COLUMN restarts INTEGER NOT NULL DEFAULT 0",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)
