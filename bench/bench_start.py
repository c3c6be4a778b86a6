"""Start costs of an agent run, each against its anchor measured in the same run (issue 14).

Rows (run by bench/run.py, which finds ``BENCHES`` here):
  start         `aegis-mcp run -- true` against Anthropic's sandbox-runtime `srt -c true`
                (target: at most 0.30 of it)
  start-netns   `aegis-mcp run --sandbox=netns -- true` against `srt -c true` (target 0.50)
  start-ebpf    `aegis-mcp run --netmon=ebpf -- true` against the plain run (target 2.0)

The two commands of a row run in turn (A B A B ...), each pair giving one ratio, so that a
machine whose speed drifts (this one is shared) moves both sides alike; the row gives the
median ratio and, as the noise, the middle half of the ratios. srt comes from
scripts/setup_bench.sh (`make bench` runs it); without it, or without root for the sandbox
rows, the row says why it is skipped.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "runner"))

Row = tuple[str, str, str, str]


def _env(tmp: Path) -> dict[str, str]:
    from run import _env as env_for

    return env_for(tmp)


def _srt() -> list[str] | None:
    """The srt command, or None."""
    path = subprocess.run(
        [str(REPO / "scripts" / "setup_bench.sh"), "--print"], capture_output=True, text=True
    ).stdout.strip()
    return [path] if path and os.access(path, os.X_OK) else None


def _aegis() -> list[str]:
    script = Path(sys.executable).parent / "aegis-mcp"
    return [str(script)] if script.exists() else [sys.executable, "-m", "aegis_mcp"]


def _once(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def alternate(a: list[str], b: list[str], env: dict[str, str], runs: int) -> dict[str, float]:
    """A and B in turn, ``runs`` pairs after one warm-up pair: medians, the median ratio of the
    pairs and its quartiles."""
    _once(a, env)
    _once(b, env)
    times_a, times_b = [], []
    for _ in range(runs):
        times_a.append(_once(a, env))
        times_b.append(_once(b, env))
    ratios = sorted(x / y for x, y in zip(times_a, times_b, strict=True))
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {
        "a": statistics.median(times_a),
        "b": statistics.median(times_b),
        "ratio": statistics.median(ratios),
        "q1": quartiles[0],
        "q3": quartiles[2],
    }


def _row(name: str, anchor: str, target: float, m: dict[str, float], runs: int) -> Row:
    verdict = "met" if m["ratio"] <= target else "NOT met"
    return (
        f"{name} (median of {runs} pairs)",
        f"{m['a'] * 1000:.1f} ms",
        f"{anchor}: {m['b'] * 1000:.1f} ms",
        f"x{m['ratio']:.3f} [middle half x{m['q1']:.3f}-x{m['q3']:.3f}] "
        f"(target <= x{target:.2f}: {verdict})",
    )


def _runs(quick: bool) -> int:
    return 6 if quick else 25


def bench_start(tmp: Path, quick: bool) -> list[Row]:
    """`aegis-mcp run -- true` against `srt -c true`."""
    name = "start: aegis-mcp run -- true"
    srt = _srt()
    if srt is None:
        return [(name, "skipped", "srt is not installed", "scripts/setup_bench.sh installs it")]
    runs = _runs(quick)
    m = alternate([*_aegis(), "run", "--", "true"], [*srt, "-c", "true"], _env(tmp), runs)
    return [_row(name, "srt -c true", 0.30, m, runs)]


def bench_start_netns(tmp: Path, quick: bool) -> list[Row]:
    """`aegis-mcp run --sandbox=netns -- true` against `srt -c true`."""
    name = "start-netns: aegis-mcp run --sandbox=netns -- true"
    if os.geteuid() != 0:
        return [(name, "skipped", "needs root", "run `sudo make bench`")]
    srt = _srt()
    if srt is None:
        return [(name, "skipped", "srt is not installed", "scripts/setup_bench.sh installs it")]
    runs = _runs(quick)
    wrapped = [*_aegis(), "run", "--sandbox=netns", "--", "true"]
    m = alternate(wrapped, [*srt, "-c", "true"], _env(tmp), runs)
    return [_row(name, "srt -c true", 0.50, m, runs)]


def bench_start_ebpf(tmp: Path, quick: bool) -> list[Row]:
    """`aegis-mcp run --netmon=ebpf -- true` against the plain run."""
    name = "start-ebpf: aegis-mcp run --netmon=ebpf -- true"
    from aegis_mcp.netmon.ebpf.availability import ebpf_available

    ok, reason = ebpf_available()
    if not ok:
        return [(name, "skipped", reason, "scripts/setup_bpf.sh")]
    runs = _runs(quick)
    aegis = _aegis()
    env = _env(tmp)
    # --netmon=ebpf falls back (and says so) where the programs cannot load: that would be
    # measuring the fallback, so the row checks that it did not.
    check = subprocess.run(
        [*aegis, "run", "--netmon=ebpf", "--", "true"], env=env, capture_output=True, text=True
    )
    if check.returncode != 0 or "eBPF unavailable" in check.stderr:
        return [(name, "skipped", "eBPF did not load", check.stderr.strip()[:80])]
    m = alternate(
        [*aegis, "run", "--netmon=ebpf", "--", "true"], [*aegis, "run", "--", "true"], env, runs
    )
    return [_row(name, "aegis-mcp run -- true", 2.0, m, runs)]


BENCHES: dict[str, Callable[[Path, bool], list[Row]]] = {
    "start": bench_start,
    "start-netns": bench_start_netns,
    "start-ebpf": bench_start_ebpf,
}
