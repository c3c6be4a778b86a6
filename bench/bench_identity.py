"""What telling the callers apart costs (picked up by bench/run.py).

identity-rtt      hello round trips on one connection as the primary agent (its
                  token checked in constant time) vs as the user (no token)
identity-connect  a new connection and its first request: the user's (the runner
                  looks at the peer's ancestry and pid namespace once per
                  connection) vs the agent's (a token, nothing to look up)
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from run import Row, _env, _ms, _percentile, _start_runner


def _token_of(pid: int) -> str:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = dict(item.split(b"=", 1) for item in environ if b"=" in item)
    return pairs[b"AEGIS_MCP_AGENT_TOKEN"].decode()


def bench_identity(tmp: Path, quick: bool) -> list[Row]:
    """Round trips and first requests, as an agent and as the user."""
    from aegis_mcp.control.client import ControlClient

    env = _env(tmp)
    n = 200 if quick else 2000
    connects = 20 if quick else 200
    runner, sock = _start_runner(["run", "--no-watchdog", "--", "sleep", "3600"], env, tmp)
    try:
        with ControlClient(sock) as client:
            agent_pid = None
            while agent_pid is None:
                agent_pid = client.call("server_status")["agent"]["pid"]
        identity = ("primary", _token_of(agent_pid))
        rtt: dict[str, list[float]] = {"user": [], "agent": []}
        first: dict[str, list[float]] = {"user": [], "agent": []}
        for who, claim in (("user", None), ("agent", identity)):
            with ControlClient(sock, identity=claim) as client:
                for _ in range(n):
                    t = time.perf_counter()
                    client.call("hello")
                    rtt[who].append(time.perf_counter() - t)
            for _ in range(connects):
                t = time.perf_counter()
                with ControlClient(sock, identity=claim) as client:
                    client.call("hello")
                first[who].append(time.perf_counter() - t)
    finally:
        runner.terminate()
        runner.wait()
    p50 = {who: _percentile(times, 0.5) for who, times in rtt.items()}
    connect = {who: statistics.median(times) for who, times in first.items()}
    return [
        (
            f"identity-rtt: hello as the primary agent, token checked (n={n})",
            f"p50 {_ms(p50['agent'])}",
            f"as the user: p50 {_ms(p50['user'])}",
            f"x{p50['agent'] / p50['user']:.2f}",
        ),
        (
            f"identity-connect: new connection + hello as the user (n={connects})",
            f"median {_ms(connect['user'])}",
            f"as the agent: median {_ms(connect['agent'])}",
            f"+{_ms(connect['user'] - connect['agent'])} (the ancestry look, once per connection)",
        ),
    ]


BENCHES = {"identity": bench_identity}
