"""Watchdog benchmarks (picked up by bench/run.py).

watchdog-cpu    the runner's CPU while the stand-in agent redraws Claude Code's
                spinner at 10 Hz in a PTY, with the watchdog on (default 60 s
                timeout, and 5 s: a check every 1.25 s), against the same run
                with --no-watchdog (the output pump alone); the difference is
                the watchdog's cost (target <= 1 % of a core)
watchdog-cpu-real  the same with the real CLIs (installed by the e2e set-up) behind a
                stalled stand-in model server: Claude Code's spinner (about 8 Hz,
                a glyph and a shimmer), Gemini CLI's (its whole frame rewritten 12
                times a second, ~20 KB/s through the emulator); skipped for a CLI
                that is not installed
watchdog-stall  the time from the start of a stall (the stand-in model server
                reads the request and never answers, the agent shows its
                spinner) to the watchdog's action, for several timeouts
                (target <= 3 x timeout + 1 s)
watchdog-stall-real  the same with the real Claude Code, Codex and Gemini CLI TUIs
                (skipped for a CLI that is not installed)
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import threading
import time
from pathlib import Path

from run import AEGIS, Row, _env, _wait


class _PtyRunner:
    """``aegis-mcp ARGV`` with a PTY as its terminal, its output drained in a thread."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        import fcntl
        import struct
        import termios

        self.master, slave = os.openpty()
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))

        def setup() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            [*AEGIS, *argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=setup,
        )
        os.close(slave)
        self.output = bytearray()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.output += chunk

    def close(self) -> None:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(OSError):
            os.close(self.master)


def _cpu_over(pid: int, seconds: float) -> float:
    """Percent of a core process ``pid`` itself used over the next ``seconds``."""
    import psutil

    proc = psutil.Process(pid)
    t0, w0 = proc.cpu_times(), time.perf_counter()
    time.sleep(seconds)
    t1, wall = proc.cpu_times(), time.perf_counter() - w0
    return 100 * ((t1.user + t1.system) - (t0.user + t0.system)) / wall


def _runner_cpu(tmp: Path, extra: list[str], config: str, seconds: float) -> float:
    """Percent of a core the runner process itself used over ``seconds`` of spinner."""
    env = _env(tmp)
    (tmp / "config.toml").write_text(config)
    runner = _PtyRunner(["demo", "--no-inject-mcp", *extra, "--scenario", "spinner"], env)
    try:
        _wait(lambda: b"Thinking" in runner.output, timeout=30)
        time.sleep(1)
        return _cpu_over(runner.proc.pid, seconds)
    finally:
        runner.close()


def bench_watchdog_cpu(tmp: Path, quick: bool) -> list[Row]:
    """The watchdog's CPU while it watches a 10 Hz spinner, over the pump alone."""
    seconds = 5 if quick else 30
    # Warn, not restart: the spinner is a stall, and the run must last the measurement.
    warn = '[watchdog]\nlockup_action = "warn"\n'
    rows: list[Row] = []
    (tmp / "off").mkdir()
    base = _runner_cpu(tmp / "off", ["--no-watchdog"], "", seconds)
    for timeout in (60, 5):
        (tmp / str(timeout)).mkdir()
        on = _runner_cpu(
            tmp / str(timeout), [], warn + f"heartbeat_timeout_secs = {timeout}\n", seconds
        )
        rows.append(
            (
                f"watchdog-cpu: 10 Hz spinner, timeout {timeout}s ({seconds}s)",
                f"{on:.2f}% of a core",
                f"--no-watchdog: {base:.2f}%",
                f"+{on - base:.2f}% for the watchdog (target <= 1%)",
            )
        )
    return rows


STALL = "STALL-3"
PROMPTS = {"claude": "\u276f".encode(), "codex": "\u203a".encode(), "gemini": b"Type your message"}


@contextlib.contextmanager
def _real_agent_stalled(tmp: Path, name: str, extra: list[str], config: str):
    """The real CLI ``name`` under the runner in a PTY, behind a stand-in model that took
    its request and sends nothing: yields the runner and the time the request was read."""
    bin_dir = _agents_bin()
    from e2e.agents import git_workdir, interactive_setup, model_env
    from e2e.standin import Match, Script, Stall, StandInServer

    env = _env(tmp)
    (tmp / "config.toml").write_text(config)
    work = git_workdir(tmp / "work")
    with StandInServer(Script().on(Match(user_says=STALL), Stall(), name="stall")) as server:
        env["PATH"] = f"{bin_dir}:{env['PATH']}"
        env.update(model_env(name, server.url, tmp / "home"))
        interactive_setup(name, tmp / "home", work)
        runner = _PtyRunner([name, *extra], env, cwd=work)
        try:
            _wait(lambda: PROMPTS[name] in runner.output, timeout=120)
            # Keys typed while a TUI starts may be lost: typed again until it asks.
            deadline = time.monotonic() + 120
            while not server.requests or server.requests[-1].rule != "stall":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} never sent the request")
                os.write(runner.master, STALL.encode())
                time.sleep(0.5)
                os.write(runner.master, b"\r")
                time.sleep(3)
            yield runner, server.requests[-1].received_at
        finally:
            runner.close()


def _agents_bin() -> Path:
    """Where the e2e set-up installs the real CLIs (tests/ put on the path for it)."""
    import sys

    tests = str(Path(__file__).resolve().parents[1] / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from e2e.agents import agents_bin

    return agents_bin()


def _real_agent_cpu(tmp: Path, name: str, extra: list[str], seconds: float) -> float:
    """The runner's CPU while the real CLI ``name`` spins behind a stalled model."""
    config = '[watchdog]\nlockup_action = "warn"\n'
    with _real_agent_stalled(tmp, name, extra, config) as (runner, _):
        return _cpu_over(runner.proc.pid, seconds)


def bench_watchdog_cpu_real(tmp: Path, quick: bool) -> list[Row]:
    """The watchdog's CPU behind the real CLIs' spinners, over the pump alone."""
    seconds = 5 if quick else 20
    rows: list[Row] = []
    for name in ("claude", "gemini"):
        if not os.access(_agents_bin() / name, os.X_OK):
            rows.append((f"watchdog-cpu-real: {name}", "skipped", "CLI not installed", ""))
            continue
        (tmp / f"{name}-off").mkdir()
        (tmp / f"{name}-on").mkdir()
        base = _real_agent_cpu(tmp / f"{name}-off", name, ["--no-watchdog"], seconds)
        on = _real_agent_cpu(tmp / f"{name}-on", name, [], seconds)
        rows.append(
            (
                f"watchdog-cpu-real: {name}'s spinner, stalled model, timeout 60s ({seconds}s)",
                f"{on:.2f}% of a core",
                f"--no-watchdog: {base:.2f}%",
                f"+{on - base:.2f}% for the watchdog (target <= 1%)",
            )
        )
    return rows


def _stall_to_action(tmp: Path, timeout: float) -> float:
    """Seconds from the model server reading the request to the watchdog's action."""
    from aegis_mcp.control.client import ControlClient
    from aegis_mcp.demo.model import StandInModel

    env = _env(tmp)
    (tmp / "config.toml").write_text(
        f"[runner]\nstop_grace_secs = 0.5\n[watchdog]\nheartbeat_timeout_secs = {timeout}\n"
    )
    with StandInModel(stall_after=0) as model:
        runner = _PtyRunner(
            ["demo", "--no-inject-mcp", "--scenario", f"ask:127.0.0.1:{model.port}"], env
        )
        try:
            sock = _wait(lambda: next(iter((tmp / "run").glob("runner-*.sock")), None))
            _wait(lambda: model.requests, timeout=30)
            stalled_at = model.requests[0][0]
            with ControlClient(sock) as client:  # type: ignore[arg-type]
                actions = _wait(
                    lambda: client.call("watchdog_status")["recent_actions"],
                    timeout=3 * timeout + 30,
                )
        finally:
            runner.close()
    return actions[0]["ts"] - stalled_at  # type: ignore[index]


def bench_watchdog_stall(tmp: Path, quick: bool) -> list[Row]:
    """Stall start to action, against the target of 3 x timeout + 1 s."""
    rows: list[Row] = []
    runs = 1 if quick else 3
    for timeout in (2.0,) if quick else (1.0, 2.0, 5.0):
        times = []
        for i in range(runs):
            where = tmp / f"{timeout:g}-{i}"
            where.mkdir()
            times.append(_stall_to_action(where, timeout))
        med = statistics.median(times)
        target = 3 * timeout + 1
        rows.append(
            (
                f"watchdog-stall: model accepts, never answers (timeout {timeout:g}s, n={runs})",
                f"{med:.2f}s to the action",
                f"target 3 x {timeout:g} + 1 = {target:g}s",
                f"x{med / timeout:.2f} of the timeout ({'ok' if med <= target else 'OVER'})",
            )
        )
    return rows


def _real_stall_to_action(tmp: Path, name: str, timeout: float) -> float:
    """Seconds from the stand-in reading the real CLI's request to the watchdog's action."""
    from aegis_mcp.control.client import ControlClient

    config = (
        "[runner]\nstop_grace_secs = 1.0\n"
        f'[watchdog]\nheartbeat_timeout_secs = {timeout}\nlockup_action = "warn"\n'
    )
    with _real_agent_stalled(tmp, name, [], config) as (_, stalled_at):
        sock = next((tmp / "run").glob("runner-*.sock"))
        with ControlClient(sock) as client:  # type: ignore[arg-type]
            actions = _wait(
                lambda: client.call("watchdog_status")["recent_actions"],
                timeout=3 * timeout + 60,
            )
    return actions[0]["ts"] - stalled_at  # type: ignore[index]


def bench_watchdog_stall_real(tmp: Path, quick: bool) -> list[Row]:
    """Stall start to action with the real CLIs' TUIs, against 3 x timeout + 1 s."""
    rows: list[Row] = []
    for name in ("claude",) if quick else ("claude", "codex", "gemini"):
        if not os.access(_agents_bin() / name, os.X_OK):
            rows.append((f"watchdog-stall-real: {name}", "skipped", "CLI not installed", ""))
            continue
        for timeout in (2.0,) if quick else (2.0, 5.0):
            where = tmp / f"{name}-{timeout:g}"
            where.mkdir()
            took = _real_stall_to_action(where, name, timeout)
            target = 3 * timeout + 1
            rows.append(
                (
                    f"watchdog-stall-real: {name}, model never answers (timeout {timeout:g}s)",
                    f"{took:.2f}s to the action",
                    f"target 3 x {timeout:g} + 1 = {target:g}s",
                    f"x{took / timeout:.2f} of the timeout ({'ok' if took <= target else 'OVER'})",
                )
            )
    return rows


BENCHES = {
    "watchdog-cpu": bench_watchdog_cpu,
    "watchdog-cpu-real": bench_watchdog_cpu_real,
    "watchdog-stall": bench_watchdog_stall,
    "watchdog-stall-real": bench_watchdog_stall_real,
}
