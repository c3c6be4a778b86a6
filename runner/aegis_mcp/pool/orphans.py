"""Agents whose pool died: what they become, and how to stop one that still runs.

When the process hosting a pool dies (a runner killed with SIGKILL), its
agents stay in the database as queued or running. The next pool on the same
database takes them over: a queued one never started and is ``lost``; a running
one whose process is still there (same pid *and* start time) is ``orphaned``,
watched by polling and stoppable by pid; one whose process is gone is ``lost``.
None is dropped, and ``note``/``error`` say what happened.

An orphan is not our child: its exit status went to whoever reaped it, so its
exit code is unknown, and its output after its pool died went nowhere (its
stdout was a pipe to that pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Container
from dataclasses import replace

from ..processes import kill_session, session_members
from . import agent_rows, liveness
from .records import LOST, ORPHANED, QUEUED, AgentRecord
from .store import PoolStore

POLL_SECS = 0.05


def take_over(record: AgentRecord, me: liveness.Identity) -> AgentRecord:
    """What an active agent of a dead pool becomes once ``me`` owns it."""
    now = time.time()
    new = replace(record, runner_pid=me.pid, runner_started=me.started)
    died = f"its pool (pid {record.runner_pid}) died"
    if record.status == QUEUED:
        return replace(
            new,
            status=LOST,
            ended_at=now,
            error=f"{died} while it was queued, so it never started: spawn it again",
        )
    if liveness.alive(record.pid, record.pid_started):
        return replace(
            new,
            status=ORPHANED,
            note=(
                f"{died}; the agent still runs (pid {record.pid}) but unsupervised: output "
                f"since then is not recorded. Now watched by pid {me.pid}: agent_stop ends it, "
                "and it becomes lost when it exits"
            ),
        )
    return replace(
        new,
        status=LOST,
        ended_at=now,
        error=(
            f"{died} and the agent process (pid {record.pid}) is gone too: its exit code and "
            f"result are unknown; its output up to then is in {record.log_file}"
        ),
    )


def claim_dead(store: PoolStore, known: Container[str]) -> list[tuple[AgentRecord, str]]:
    """Take over, in the database, the active agents of pools that died (but those in
    ``known``); returns each record as it now is, with a message saying what happened."""
    me = store.me
    claimed = []
    for record in agent_rows.load_active(store, exclude=me):
        if record.agent_id in known or liveness.alive(record.runner_pid, record.runner_started):
            continue
        new = take_over(record, me)
        message = f"agent {new.agent_id} {new.status}: {new.note or new.error}"
        with store.write() as conn:
            if not agent_rows.claim(conn, record, new):
                continue  # another pool took it over first
            store.add_event(conn, f"pool.{new.status}", message, "warning", new.agent_id)
        claimed.append((new, message))
    return claimed


def lost_error(record: AgentRecord) -> str:
    """The error of an orphan that exited by itself."""
    return (
        f"the agent process (pid {record.pid}) ended while unsupervised (its pool had died): "
        f"its exit code and result are unknown; its output up to then is in {record.log_file}"
    )


def ended_note(how: str) -> str:
    """The note of an orphan once it ended (``how``: "was stopped by pid", "exited")."""
    return (
        f"it was orphaned (its pool died) and then {how}; its exit code is unknown "
        "(it was not this process's child)"
    )


async def wait_gone(pid: int, started: float | None, timeout: float) -> bool:
    """Poll until the process is gone (or a zombie); True when it is."""
    deadline = time.monotonic() + timeout
    while liveness.alive(pid, started):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_SECS)
    return True


async def stop(pid: int, started: float | None, grace: float) -> bool:
    """Stop an orphan as the pool stops its own agents: SIGINT, then SIGTERM to the
    agent (``grace`` seconds each), then SIGKILL to its whole session; its leftovers
    (processes still in its session) go too. True when it is gone."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Checked before every signal: the pid must still be the agent.
        if not liveness.alive(pid, started):
            break
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if await wait_gone(pid, started, grace):
            break
    else:
        if liveness.alive(pid, started):
            kill_session(pid, signal.SIGKILL)
    gone = await wait_gone(pid, started, max(grace, 5.0))
    if gone and session_members(pid):
        kill_session(pid, signal.SIGKILL)
    return gone
