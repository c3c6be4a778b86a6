"""The stock-kernel test VM driven from the host: scripts/vm.sh builds the image (cached),
boots it with qemu, runs the in-VM tests (tests/vm/in_vm_tests.txt) there and reports.

The tests that boot the VM are marked ``vm`` (`make test-fast` leaves them out). They need
root, qemu and debootstrap (scripts/setup_vm.sh installs them) and skip, saying so,
without. The first run builds the image (a few minutes); later runs reuse it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from helpers import REPO, wait_for

VM_SH = REPO / "scripts" / "vm.sh"
SELECTION = REPO / "tests" / "vm" / "in_vm_tests.txt"
QEMU = shutil.which("qemu-system-x86_64")
MISSING = [
    what
    for what, ok in (
        ("root", os.geteuid() == 0),
        ("qemu-system-x86_64", QEMU is not None),
        ("debootstrap", shutil.which("debootstrap") is not None),
        ("to run outside the test VM itself", not os.environ.get("AEGIS_VM")),
    )
    if not ok
]
needs_vm = pytest.mark.skipif(
    bool(MISSING), reason=f"the test VM needs {', '.join(MISSING)} (scripts/setup_vm.sh)"
)
# A cold build plus the run, bounded twice: by scripts/vm.sh and here.
RUN_TIMEOUT = 1200
BUILD_TIMEOUT = 1500


def selected_ids() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in SELECTION.read_text().splitlines())
    return [line for line in lines if line]


def vm_sh(*args: str, timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VM_SH), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "AEGIS_VM_QUIET": "1", **env},
        stdin=subprocess.DEVNULL,
    )


def run_dir_of(output: str) -> Path:
    (found,) = re.findall(r"\[vm\] run directory: (\S+)", output)
    return Path(found)


def qemu_alive(run: Path) -> bool:
    pid_file = run / "qemu.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(run).encode() in cmdline  # the pid is still that qemu, not a reused one


def test_selection_names_tests_that_exist() -> None:
    """Every id in the in-VM list is collected here (a renamed test fails now, on the
    host, not minutes later in the VM)."""
    ids = selected_ids()
    python = REPO / ".venv" / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *ids],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    for node in ids:
        assert any(line == node or line.startswith(node + "::") for line in collected), node


def test_recipe_hash_follows_the_recipe_only(tmp_path: Path) -> None:
    recipe = tmp_path / "vm"
    shutil.copytree(REPO / "scripts" / "vm", recipe)

    def recipe_hash() -> str:
        result = vm_sh("recipe-hash", timeout=30, AEGIS_VM_RECIPE=str(recipe))
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    first = recipe_hash()
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    (recipe / "guest.sh").write_text("# what runs in the VM is no part of the image\n")
    assert recipe_hash() == first
    with (recipe / "packages").open("a") as packages:
        packages.write("strace\n")
    assert recipe_hash() != first


def test_missing_qemu_is_named_with_its_package() -> None:
    result = vm_sh("run", "--", "true", timeout=30, AEGIS_VM_QEMU="qemu-system-nowhere")
    assert result.returncode == 3
    assert "qemu-system-nowhere not found: install the qemu-system-x86 package" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_too_little_disk_space_is_said_before_building(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(small)], check=True)
    try:
        result = vm_sh("build", timeout=60, AEGIS_VM_CACHE=str(small / "vm"))
    finally:
        subprocess.run(["umount", str(small)], check=True)
    if "debootstrap not found" in result.stderr:
        pytest.skip("debootstrap is not installed (scripts/setup_vm.sh)")
    assert result.returncode == 4, result.stderr
    assert "not enough disk space for the VM image" in result.stderr
    assert not list(small.iterdir())  # nothing was left in the unmounted directory


@pytest.mark.vm
@needs_vm
# A cold image build plus a run under emulation is far past the suite's 300 s
# per test; vm.sh bounds both itself.
@pytest.mark.timeout(RUN_TIMEOUT + BUILD_TIMEOUT + 120)
def test_the_kprobe_tier_and_each_netmon_tier_pass_in_the_vm() -> None:
    """The whole in-VM set passes in the VM, nothing skipped: the kprobe tier for real."""
    result = vm_sh(
        "test",
        timeout=RUN_TIMEOUT + BUILD_TIMEOUT + 60,
        AEGIS_VM_TIMEOUT=str(RUN_TIMEOUT),
        AEGIS_VM_BUILD_TIMEOUT=str(BUILD_TIMEOUT),
    )
    run = run_dir_of(result.stderr)
    guest_log = (run / "guest.log").read_text() if (run / "guest.log").exists() else ""
    assert result.returncode == 0, result.stderr[-3000:] + guest_log[-6000:]
    assert not qemu_alive(run)
    assert (run / "console.log").stat().st_size > 0
    suite = ET.parse(run / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    assert counts["failures"] == counts["errors"] == counts["skipped"] == 0, counts
    ran = {f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")}
    kprobe_tests = [i for i in selected_ids() if "kprobe" in i]
    assert len(kprobe_tests) >= 5
    for node in kprobe_tests:
        name = node.split("::")[-1]
        assert any(r.endswith("::" + name) for r in ran), (node, sorted(ran))
    versions = dict(
        line.split("=", 1) for line in (run / "versions").read_text().splitlines() if "=" in line
    )
    assert versions["kprobe_pmu"] == "yes" and versions["headers"] == versions["kernel"]
    doctor = (run / "doctor.txt").read_text()
    assert re.search(r"\[ok  \]\s+kprobe tier\s+usable", doctor), doctor
    assert re.search(r"in-VM tests: =+ \d+ passed", result.stderr), result.stderr[-2000:]


@pytest.mark.vm
@needs_vm
def test_a_run_past_its_time_is_stopped_and_leaves_no_qemu() -> None:
    result = vm_sh("run", "--", "sleep", "600", timeout=300, AEGIS_VM_TIMEOUT="20")
    assert result.returncode == 124, result.stderr
    assert "timed out after 20 s" in result.stderr
    assert not qemu_alive(run_dir_of(result.stderr))


@pytest.mark.vm
@needs_vm
def test_ctrl_c_stops_the_vm_and_leaves_no_qemu() -> None:
    proc = subprocess.Popen(
        [str(VM_SH), "run", "--", "sleep", "600"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "AEGIS_VM_QUIET": "1", "AEGIS_VM_TIMEOUT": "300"},
        start_new_session=True,
    )
    assert proc.stderr is not None
    try:
        lines = []
        while not any("run directory:" in line for line in lines):
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        run = run_dir_of("".join(lines))
        wait_for(lambda: qemu_alive(run), 120, what="qemu to start")
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 130, rest
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "interrupted: stopping the VM" in rest
    assert not qemu_alive(run)


def test_the_readmes_make_targets_exist() -> None:
    """Each `make TARGET` of the README's command blocks is a Makefile target (dry run)."""
    readme = (REPO / "README.md").read_text()
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", readme, re.DOTALL))
    targets = set(re.findall(r"^make ([a-z][a-z-]*)", blocks, re.MULTILINE))
    assert {"vm-test", "vm-box", "test-fast"} <= targets
    for target in sorted(targets):
        result = subprocess.run(
            ["make", "-n", "-C", str(REPO), target], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, (target, result.stderr)
