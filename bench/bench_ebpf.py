"""eBPF netmon benchmarks: what monitoring costs the agent's traffic, and how many
records per second the runner keeps up with.

Rows (run by bench/run.py, which finds ``BENCHES`` here):
  ebpf-bulk      1 GiB over loopback (128 MiB with --quick) from a client in the monitored
                 cgroup, against the same transfer from outside it; throughput ratio
  ebpf-pingpong  64-byte request/response, 100k round trips (10k with --quick);
                 round-trip rate ratio, and the same under empty cgroup_skb programs only
                 (what any per-packet program costs, whatever it does)
  ebpf-events    connections opened and closed as fast as one process can: records per
                 second read by the runner's thread, and how many were lost

One EbpfMonitor is loaded per benchmark; "on" runs start the client in its cgroup (every
program applies), "off" runs start it outside (no cgroup program runs for it), in
alternation, so that both see the same machine state; the medians are compared. The server
runs outside the cgroup, as an agent's peers do (both ends inside would pay twice). The load
generator is C (compiled here with gcc) so that the interpreter does not hide the cost.
Needs root and a working BCC set-up (scripts/setup_bpf.sh); elsewhere each row says why not.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "runner"))

Row = tuple[str, str, str, str]

LOADGEN_C = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* loadgen serve bulk|pingpong|connects SIZE   prints its port, serves until killed
   loadgen bulk PORT BYTES | pingpong PORT COUNT SIZE | connects PORT COUNT [RATE]
   the client prints the seconds its work took */

static char buf[1 << 20];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        perror("connect");
        exit(1);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int full(int fd, char *p, size_t n, int rd)
{
    while (n > 0) {
        ssize_t r = rd ? read(fd, p, n) : write(fd, p, n);
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int serve(const char *mode, int size)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 4096)) {
        perror("listen");
        return 1;
    }
    getsockname(l, (struct sockaddr *)&a, &len);
    printf("%d\n", ntohs(a.sin_port));
    fflush(stdout);
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c < 0) continue;
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (strcmp(mode, "bulk") == 0) {
            while (read(c, buf, sizeof buf) > 0) {}
        } else if (strcmp(mode, "pingpong") == 0) {
            while (full(c, buf, size, 1) == 0 && full(c, buf, size, 0) == 0) {}
        }
        close(c);
    }
}

int main(int argc, char **argv)
{
    if (argc < 4) return 2;
    if (strcmp(argv[1], "serve") == 0) return serve(argv[2], atoi(argv[3]));
    int port = atoi(argv[2]);
    long long n = atoll(argv[3]);
    double t0 = now();
    if (strcmp(argv[1], "bulk") == 0) {
        int fd = dial(port);
        for (long long left = n; left > 0; left -= sizeof buf)
            full(fd, buf, left < (long long)sizeof buf ? (size_t)left : sizeof buf, 0);
        shutdown(fd, SHUT_WR);
        read(fd, buf, 1); /* EOF once the server has read everything */
    } else if (strcmp(argv[1], "pingpong") == 0) {
        int fd = dial(port);
        int size = argc > 4 ? atoi(argv[4]) : 64;
        for (long long i = 0; i < n; i++) {
            if (full(fd, buf, size, 0) || full(fd, buf, size, 1)) return 1;
        }
    } else {
        double rate = argc > 4 ? atof(argv[4]) : 0; /* connects per second, 0: flat out */
        for (long long i = 0; i < n; i++) {
            close(dial(port));
            double wait = rate > 0 ? t0 + (i + 1) / rate - now() : 0;
            if (wait > 0) {
                struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
                nanosleep(&ts, NULL);
            }
        }
    }
    printf("%.6f\n", now() - t0);
    return 0;
}
"""


def _unavailable() -> str | None:
    from aegis_mcp.netmon.ebpf import ebpf_available

    ok, reason = ebpf_available()
    if not ok:
        return reason
    if shutil.which("gcc") is None:
        return "gcc is needed to build the load generator"
    return None


def _skipped(name: str, reason: str) -> list[Row]:
    return [(name, "skipped", "-", reason)]


def _loadgen(tmp: Path) -> Path:
    src = tmp / "loadgen.c"
    src.write_text(LOADGEN_C)
    out = tmp / "loadgen"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(src)], check=True)
    return out


@contextlib.contextmanager
def _monitored(tmp: Path, name: str) -> Iterator[tuple[str, Any]]:
    """The load generator, built in ``tmp``, and an EbpfMonitor for one benchmark (closed
    after it)."""
    from aegis_mcp.netmon.ebpf import EbpfMonitor
    from aegis_mcp.netmon.stats import NetmonStats

    gen = str(_loadgen(tmp))
    monitor = EbpfMonitor(os.getpid(), f"bench-{name}", NetmonStats(mode="ebpf"))
    try:
        yield gen, monitor
    finally:
        monitor.close()


# Both ends of the load generator on one CPU: on this 2-core VM, shared with other work,
# a ping-pong spread over two CPUs varies by a factor of 5 from run to run; on one, by 10%.
CPU = max(os.sched_getaffinity(0))


def _run(argv: list[str], steps: tuple[Callable[[], None], ...] = ()) -> float:
    """Run the load generator (inside the cgroup when ``steps`` join it); its own timing."""

    def setup() -> None:
        os.sched_setaffinity(0, {CPU})
        for step in steps:
            step()

    out = subprocess.run(argv, preexec_fn=setup, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


@contextlib.contextmanager
def _server(gen: str, mode: str, size: int = 64) -> Iterator[str]:
    """The load generator's server, outside the agent's cgroup (the agent's peer is
    elsewhere in real life); yields its port."""
    proc = subprocess.Popen(
        [gen, "serve", mode, str(size)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {CPU}),
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.kill()
        proc.wait()


def _alternate(argv: list[str], monitor, runs: int) -> tuple[float, float]:
    """Median seconds with and without monitoring, runs alternating on/off."""
    on, off = [], []
    _run(argv)  # warm-up: page cache, first connections
    for i in range(runs):
        # Swap the order every run so neither side always goes first.
        pair = [("on", monitor.confine), ("off", ())]
        for label, steps in pair if i % 2 == 0 else reversed(pair):
            (on if label == "on" else off).append(_run(argv, steps))
    return statistics.median(on), statistics.median(off)


SKB_PROGRAMS = ("aegis_egress", "aegis_ingress")
PER_CONNECTION = ("aegis_sockops",)
"""Programs that run per TCP state change, not per packet: their time is spread over the
packets in the figure."""


def _program_cost(
    argv: list[str], monitor, names: tuple[str, ...] = (*SKB_PROGRAMS, *PER_CONNECTION)
) -> str:
    """The programs' (``names``) own run time per packet (per run of the skb programs among
    them), from the kernel's BPF statistics (kernel.bpf_stats_enabled, read with bpftool)
    over one more monitored run: a figure the noise of a shared machine does not move,
    unlike wall-clock ratios."""
    bpftool = shutil.which("bpftool")
    if bpftool is None:
        return "install bpftool for the programs' own cost"
    knob = Path("/proc/sys/kernel/bpf_stats_enabled")
    before = knob.read_text().strip()
    knob.write_text("1")
    try:
        _run(argv, monitor.confine)
        shown = subprocess.run([bpftool, "prog", "show", "-j"], capture_output=True, text=True)
    finally:
        knob.write_text(before)
    progs = [
        p for p in json.loads(shown.stdout or "[]") if p.get("name") in names and p.get("run_cnt")
    ]
    runs = sum(p["run_cnt"] for p in progs if p["name"] not in PER_CONNECTION) or sum(
        p["run_cnt"] for p in progs
    )
    if not runs:
        return "no program statistics"
    spent = sum(p["run_time_ns"] for p in progs)
    shown = "/".join(n for n in names if any(p["name"] == n for p in progs))
    return f"{shown} {spent / runs:.0f} ns/packet, {spent / 1e6:.1f} ms in {runs} packets"


def bench_bulk(tmp: Path, quick: bool) -> list[Row]:
    """1 GiB loopback transfer: throughput monitored / unmonitored."""
    name = "ebpf-bulk"
    reason = _unavailable()
    if reason:
        return _skipped(name, reason)
    size = (128 if quick else 1024) << 20
    runs = 3 if quick else 7
    with _monitored(tmp, "bulk") as (gen, monitor), _server(gen, "bulk") as port:
        argv = [gen, "bulk", port, str(size)]
        on, off = _alternate(argv, monitor, runs)
        # Every monitored run's bytes, counted exactly (payload only, not headers).
        counted = monitor.fresh_stats().status()["bytes_sent"] / (size * runs)
        cost = _program_cost(argv, monitor)
    gib = size / (1 << 30)
    return [
        (
            f"{name}: {size >> 20} MiB loopback TCP, monitored cgroup (median)",
            f"{gib / on:.2f} GiB/s",
            f"unmonitored: {gib / off:.2f} GiB/s",
            f"x{off / on:.3f} throughput (target >= 0.98); bytes counted: {counted:.4f} x sent",
        ),
        (f"{name}: programs' own cost (bpf_stats)", cost, f"run: {on:.3f} s", ""),
    ]


# mov r0, 1; exit: a cgroup_skb program that lets every packet through and does nothing else.
EMPTY_PROGRAM = bytes.fromhex("b7000000010000009500000000000000")
EMPTY_NAME = "aegis_bench_nop"


@contextlib.contextmanager
def _empty_skb_cgroup(tmp: Path) -> Iterator[Any]:
    """A cgroup of its own with an empty cgroup_skb program on ingress and egress: the floor
    any per-packet program pays (the kernel's run-filter path), whatever it does."""
    from aegis_mcp.netmon.ebpf.cgroup import AgentCgroup, cgroup2_mount
    from aegis_mcp.netmon.ebpf.loader import LoadedObject
    from aegis_mcp.netmon.ebpf.monitor import BPF_F_ALLOW_MULTI
    from aegis_mcp.netmon.ebpf.objects import CompiledObject, Program

    root = cgroup2_mount()
    assert root is not None  # _unavailable() checked it
    cgroup = AgentCgroup(root, os.getpid(), "bench-empty-skb")
    empty = CompiledObject(EMPTY_NAME, (), {EMPTY_NAME: Program(EMPTY_PROGRAM, ())})
    loaded = LoadedObject(empty)
    fd = cgroup.open_fd()
    try:
        for attach in ("CGROUP_INET_EGRESS", "CGROUP_INET_INGRESS"):
            loaded.attach_cgroup(EMPTY_NAME, "CGROUP_SKB", attach, fd, BPF_F_ALLOW_MULTI)
        yield cgroup
    finally:
        loaded.close()
        os.close(fd)
        cgroup.remove()


def bench_pingpong(tmp: Path, quick: bool) -> list[Row]:
    """64-byte ping-pong: round trips per second monitored / unmonitored, and under an empty
    cgroup_skb program (the floor of per-packet counting) in the same run."""
    name = "ebpf-pingpong"
    reason = _unavailable()
    if reason:
        return _skipped(name, reason)
    trips = 10_000 if quick else 100_000
    runs = 3 if quick else 7
    with _monitored(tmp, "pingpong") as (gen, monitor), _server(gen, "pingpong", 64) as port:
        argv = [gen, "pingpong", port, str(trips), "64"]
        on, off = _alternate(argv, monitor, runs)
        cost = _program_cost(argv, monitor)
        with _empty_skb_cgroup(tmp) as empty:
            nop = SimpleNamespace(confine=(empty.join_step(),))
            floor, floor_off = _alternate(argv, nop, runs)
            floor_cost = _program_cost(argv, nop, (EMPTY_NAME,))
    return [
        (
            f"{name}: 64 B round trips x{trips}, monitored cgroup (median)",
            f"{trips / on:,.0f} rt/s",
            f"unmonitored: {trips / off:,.0f} rt/s",
            f"x{off / on:.3f} rate (target >= 0.98)",
        ),
        (f"{name}: programs' own cost (bpf_stats)", cost, f"run: {on:.3f} s", ""),
        (
            f"{name}: empty cgroup_skb programs only (the floor, same run)",
            f"{trips / floor:,.0f} rt/s",
            f"unmonitored: {trips / floor_off:,.0f} rt/s",
            f"x{floor_off / floor:.3f} rate; {floor_cost}",
        ),
    ]


def _records_run(monitor, argv: list[str]) -> tuple[float, int, int, float]:
    """Run a connection generator in the cgroup and wait until the reader has caught up.

    Returns (records read per second, records read, records lost, the generator's seconds).
    """
    before, lost_before = monitor.records_read, monitor.lost_events
    t0 = time.perf_counter()
    generated = _run(argv, monitor.confine)
    last, settled = -1, time.perf_counter()
    while time.perf_counter() - settled < 1.0:
        time.sleep(0.05)
        now = monitor.records_read
        if now != last:
            last, settled = now, time.perf_counter()
    monitor.fresh_stats()  # reads the lost-record counters
    read = monitor.records_read - before
    return read / (settled - t0), read, monitor.lost_events - lost_before, generated


def bench_events(tmp: Path, quick: bool) -> list[Row]:
    """Records per second the reader keeps up with: flat out, then paced at half of that."""
    name = "ebpf-events"
    reason = _unavailable()
    if reason:
        return _skipped(name, reason)
    count = 5_000 if quick else 30_000
    with _monitored(tmp, "events") as (gen, monitor), _server(gen, "connects") as port:
        rate, read, lost, generated = _records_run(monitor, [gen, "connects", port, str(count)])
        per_connect = max(read + lost, 1) / count
        # Paced at half the rate the reader managed flat out: this one must lose nothing.
        paced = max(int(rate / per_connect / 2), 100)
        paced_count = paced * (2 if quick else 5)
        argv = [gen, "connects", port, str(paced_count), str(paced)]
        _, paced_read, paced_lost, _ = _records_run(monitor, argv)
        tier = monitor.tier
    return [
        (
            f"{name}: {count} connect/close flat out ({tier} tier)",
            f"{rate:,.0f} records/s read ({read} records, {per_connect:.1f}/connection)",
            f"generator: {count / generated:,.0f} connects/s",
            f"lost {lost} (counted and reported as `lost` events)",
        ),
        (
            f"{name}: paced at {paced:,} connects/s for {paced_count} connections",
            f"{paced_read / max(paced_count / paced, 1e-9):,.0f} records/s sustained",
            f"reader flat out: {rate:,.0f} records/s",
            f"lost {paced_lost}",
        ),
    ]


BENCHES: dict[str, Callable[[Path, bool], list[Row]]] = {
    "ebpf-bulk": bench_bulk,
    "ebpf-pingpong": bench_pingpong,
    "ebpf-events": bench_events,
}


if __name__ == "__main__":
    import tempfile

    for bench in BENCHES.values():
        with tempfile.TemporaryDirectory() as tmp:
            for row in bench(Path(tmp), "--quick" in sys.argv):
                print(" | ".join(row))
