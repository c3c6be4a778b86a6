"""The pool inside real runners: history and orphans survive a runner killed with SIGKILL
(its primary agent does not)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from helpers import call, gone, runner_socket, start_aegis, wait_for, wait_reports

QUIET_DEMO = ["demo", "--no-watchdog", "--no-inject-mcp", "--scenario", "quiet"]


def test_runner_killed_then_restarted_reports_orphans(aegis_env, report, runtime_dir, tmp_path):
    first = start_aegis(QUIET_DEMO, aegis_env, tmp_path, output=False)
    orphan_pid = primary_pid = None
    try:
        sock = runner_socket(runtime_dir)
        primary_pid = wait_reports(report, 1)[0]["pid"]
        done = call(sock, "agent_spawn", description="/scenario say:finished", agent_type="demo")
        assert call(sock, "agent_await", agent_id=done["agent_id"], timeout_secs=60)["done"]
        slow = call(sock, "agent_spawn", description="/scenario quiet", agent_type="demo")
        orphan_pid = wait_for(lambda: call(sock, "agent_status", agent_id=slow["agent_id"])["pid"])
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        # The primary agent dies with its runner; the pool agent lives on, unsupervised.
        wait_for(lambda: gone(primary_pid), what="the primary agent to die with its runner")
        assert not gone(orphan_pid)

        second = start_aegis(QUIET_DEMO, aegis_env, tmp_path, output=False)
        try:
            sock2 = wait_for(
                lambda: next((s for s in runtime_dir.glob("runner-*.sock") if s != sock), None)
            )
            assert not sock.exists(), "the dead runner's files were not cleaned"
            agents = {a["agent_id"]: a for a in call(sock2, "agent_list")["agents"]}
            assert agents[done["agent_id"]]["status"] == "completed"
            assert agents[slow["agent_id"]]["status"] == "orphaned"
            stopped = call(sock2, "agent_stop", agent_id=slow["agent_id"])
            assert stopped["status"] in ("stopped", "lost")
            wait_for(lambda: not Path(f"/proc/{orphan_pid}").exists() or gone(orphan_pid))
        finally:
            second.terminate()
            second.wait(timeout=30)
    finally:
        for pid in (primary_pid, orphan_pid):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if first.poll() is None:
            first.kill()
