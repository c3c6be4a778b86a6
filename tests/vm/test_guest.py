"""Inside the stock-kernel VM (`make vm-test`): the machine offers every netmon tier.

These run wherever the kernel has kprobes and its own headers (elsewhere they skip with
the reason); on the development machines that is the VM scripts/vm.sh boots.
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys

import pytest

from aegis_mcp.netmon.ebpf.availability import headers_release, kernel_headers_dir, kprobe_problem

PROBLEM = kprobe_problem()
pytestmark = pytest.mark.skipif(
    PROBLEM is not None, reason=f"no kprobe tier here: {PROBLEM} (make vm-test runs these)"
)


def test_doctor_shows_all_three_tiers_ok() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aegis_mcp", "doctor"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for tier in ("cgroup", "tracepoint", "kprobe"):
        assert re.search(rf"\[ok  \]\s+{tier} tier\s+usable", result.stdout), result.stdout
    assert re.search(r"\[ok  \] eBPF netmon\s+ready", result.stdout), result.stdout


def test_headers_are_the_running_kernels_own() -> None:
    assert headers_release(kernel_headers_dir()) == platform.release()
