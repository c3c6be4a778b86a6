"""aegis-mcp benchmarks: each figure next to a baseline measured in the same run.

Usage: python bench/run.py [--quick] [--only NAME[,NAME...]]

Rows from bench/bench_*.py modules (their ``BENCHES``) are added to these.
Helpers shared with them: ``_env``, ``_start_runner``, ``_wait``, ``_median_time``,
``_ms``, ``_percentile``, ``Row``.

Rows (each a measurement, the baseline it is compared with, and their ratio
or difference):
  start...   (bench_start.py) agent run start costs against srt and the plain run
  restart    restart request -> new stand-in agent process running, vs the
             stand-in agent's own cold start
  mcp-init   `aegis-mcp --mcp-server` start to initialize reply, vs the bare
             `import mcp` of the same interpreter (alternating, median ratio)
  mcp-rtt    server_status round trips through MCP stdio and through the
             control socket (p50, p99)
  idle-cpu   the runner's CPU while watching one idle agent (percent of a core)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "runner"))

AEGIS = [sys.executable, "-m", "aegis_mcp"]
Row = tuple[str, str, str, str]


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AEGIS_", "SUDO_"))}
    env.update(
        AEGIS_MCP_RUNTIME_DIR=str(tmp / "run"),
        AEGIS_MCP_STATE_DIR=str(tmp / "state"),
        AEGIS_MCP_CONFIG=str(tmp / "config.toml"),
        # The bench's own caches, warmed by its first runs (as a user's are by theirs).
        AEGIS_MCP_CACHE_DIR=str(tmp / "cache"),
        AEGIS_DEMO_HOME=str(tmp / "demo"),
        PYTHONPATH=str(REPO / "runner"),
    )
    return env


def _median_time(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
        )
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _wait(predicate: Callable[[], object], timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.002)
    raise TimeoutError("benchmark condition not reached")


def _start_runner(argv: list[str], env: dict[str, str], tmp: Path) -> tuple[subprocess.Popen, Path]:
    """Start a runner in the background; returns it and its control socket."""
    runner = subprocess.Popen(
        [*AEGIS, *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sock = _wait(lambda: next(iter((tmp / "run").glob("runner-*.sock")), None))
    return runner, sock  # type: ignore[return-value]


def bench_restart(tmp: Path, quick: bool) -> list[Row]:
    """Restart latency (request -> new agent process running) vs the agent's cold start."""
    from aegis_mcp.control.client import ControlClient

    env = _env(tmp)
    report = tmp / "report.jsonl"
    env["AEGIS_DEMO_REPORT"] = str(report)
    runs = 5 if quick else 20
    # The cold start writes no report, so that the lines counted are the runner's agents.
    cold_env = {k: v for k, v in env.items() if k != "AEGIS_DEMO_REPORT"}
    cold = _median_time([*AEGIS[:1], "-m", "aegis_mcp.demo", "-p", "hi"], cold_env, runs)
    latencies = []
    runner, sock = _start_runner(
        ["demo", "--no-watchdog", "--no-inject-mcp", "--scenario", "quiet"], env, tmp
    )
    try:
        _wait(lambda: report.exists() and report.read_text().count("\n") >= 1)
        with ControlClient(sock) as client:
            for i in range(runs):
                t0 = time.perf_counter()
                client.call("restart", reason=f"bench {i}")
                # Running = the new agent process wrote its start-up report.
                _wait(lambda n=i + 2: report.read_text().count("\n") >= n)
                latencies.append(time.perf_counter() - t0)
                _wait(lambda: client.call("server_status")["agent"]["status"] == "running")
    finally:
        runner.terminate()
        runner.wait()
    med = statistics.median(latencies)
    return [
        (
            f"restart: request -> new agent running (median of {runs})",
            _ms(med),
            f"agent cold start (-p hi): {_ms(cold)}",
            f"x{med / cold:.2f} (socket request: no reply delay; MCP tool requests add 300 ms)",
        ),
    ]


INITIALIZE = (
    b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18",'
    b'"capabilities":{"roots":{"listChanged":true}},"clientInfo":{"name":"bench","version":"1"}}}\n'
)


def _mcp_initialize(env: dict[str, str]) -> float:
    """Start the server, send initialize as Codex and Gemini do, time the reply."""
    t0 = time.perf_counter()
    server = subprocess.Popen(
        [*AEGIS, "--mcp-server"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    server.stdin.write(INITIALIZE)  # type: ignore[union-attr]
    server.stdin.flush()  # type: ignore[union-attr]
    server.stdout.readline()  # type: ignore[union-attr]
    elapsed = time.perf_counter() - t0
    server.stdin.close()  # type: ignore[union-attr]
    server.wait()
    return elapsed


async def _mcp_round_trips(env: dict[str, str], n: int) -> list[float]:
    from mcp.client import Client
    from mcp.client.stdio import StdioServerParameters

    params = StdioServerParameters(command=AEGIS[0], args=[*AEGIS[1:], "--mcp-server"], env=env)
    async with Client(params) as client:
        # The first calls wait for the SDK's import: the steady state is what is measured.
        for _ in range(20):
            await client.call_tool("server_status", {})
        # The measuring client's own garbage collections (its SDK's objects) are not the
        # server's round trip: kept out of the figures, as the server keeps its own out.
        import gc

        gc.collect()
        gc.freeze()
        times = []
        for _ in range(n):
            t = time.perf_counter()
            result = await client.call_tool("server_status", {})
            times.append(time.perf_counter() - t)
            assert not result.is_error
    return times


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_mcp(tmp: Path, quick: bool) -> list[Row]:
    """MCP server start-to-initialize against a bare `import mcp`, and round trips through
    stdio and the socket."""
    from aegis_mcp.control.client import ControlClient

    env = _env(tmp)
    n = 200 if quick else 2000
    pairs = 5 if quick else 15
    runner, sock = _start_runner(["run", "--no-watchdog", "--", "sleep", "3600"], env, tmp)
    try:
        env["AEGIS_MCP_SOCKET"] = str(sock)
        _mcp_initialize(env)  # the first start records the SDK's replies (the cache is the bench's)
        time.sleep(1.5)
        inits, imports = [], []
        for _ in range(pairs):
            inits.append(_mcp_initialize(env))
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import mcp"], env=env, check=True)
            imports.append(time.perf_counter() - t0)
        stdio = asyncio.run(_mcp_round_trips(env, n))
        direct = []
        with ControlClient(sock) as client:
            for _ in range(n):
                t = time.perf_counter()
                client.call("server_status")
                direct.append(time.perf_counter() - t)
    finally:
        runner.terminate()
        runner.wait()
    ratios = sorted(a / b for a, b in zip(inits, imports, strict=True))
    ratio = statistics.median(ratios)
    p50, p99 = _percentile(stdio, 0.5), _percentile(stdio, 0.99)
    met = "met" if p50 <= 0.002 and p99 <= 0.010 else "NOT met"
    return [
        (
            f"mcp-init: start -> initialize reply (median of {pairs} pairs)",
            _ms(statistics.median(inits)),
            f"python -c 'import mcp': {_ms(statistics.median(imports))}",
            f"x{ratio:.3f} [x{ratios[0]:.3f}-x{ratios[-1]:.3f}] "
            f"(target <= x0.40: {'met' if ratio <= 0.4 else 'NOT met'})",
        ),
        (
            f"mcp-rtt: server_status via MCP stdio (n={n})",
            f"p50 {_ms(p50)}, p99 {_ms(p99)}",
            f"socket p50 {_ms(_percentile(direct, 0.5))}, p99 {_ms(_percentile(direct, 0.99))}",
            f"target p50 <= 2 ms, p99 <= 10 ms: {met}",
        ),
    ]


def bench_idle_cpu(tmp: Path, quick: bool) -> list[Row]:
    """The runner's CPU while it watches one idle agent, against the agent itself."""
    import psutil

    env = _env(tmp)
    seconds = 10 if quick else 60
    runner, _ = _start_runner(["run", "--", "sleep", "3600"], env, tmp)
    try:
        proc = psutil.Process(runner.pid)
        time.sleep(1)
        t0 = proc.cpu_times()
        w0 = time.perf_counter()
        time.sleep(seconds)
        t1 = proc.cpu_times()
        wall = time.perf_counter() - w0
    finally:
        runner.terminate()
        runner.wait()
    pct = 100 * ((t1.user + t1.system) - (t0.user + t0.system)) / wall
    return [
        (
            f"idle-cpu: runner watching one agent ({seconds}s)",
            f"{pct:.2f}% of a core",
            "agent: sleep",
            "watchdog checks every 5 s (default timeout 60 s)",
        )
    ]


BENCHES: dict[str, Callable[[Path, bool], list[Row]]] = {
    "restart": bench_restart,
    "mcp": bench_mcp,
    "idle-cpu": bench_idle_cpu,
}


def _discover() -> None:
    """Add the benchmarks of every bench/bench_*.py module (its ``BENCHES`` dict,
    name -> function(tmp_dir, quick) -> rows), so that each concern keeps its own file."""
    import importlib

    sys.path.insert(0, str(Path(__file__).parent))
    for path in sorted(Path(__file__).parent.glob("bench_*.py")):
        module = importlib.import_module(path.stem)
        BENCHES.update(module.BENCHES)


def main() -> int:
    """Run the selected benchmarks and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    _discover()
    args = parser.parse_args()
    selected = [name for name in (args.only.split(",") if args.only else BENCHES) if name]
    rows: list[Row] = []
    for name in selected:
        with tempfile.TemporaryDirectory(prefix=f"aegis-bench-{name}-") as tmp:
            rows.extend(BENCHES[name](Path(tmp), args.quick))
    headers = ("benchmark", "measured", "baseline (same run)", "ratio / delta")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    if args.json:
        args.json.write_text(
            json.dumps([dict(zip(headers, r, strict=True)) for r in rows], indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
