"""What an agent start does not pay for (issue 14): the mechanisms that keep the start path
short, each checked by its outcome."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import REPO


def _python_lines(code: str) -> list[str]:
    """What ``code`` prints, run by a fresh interpreter on this package."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO / "runner")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")


def test_the_runner_imports_asyncio_without_openssl() -> None:
    """asyncio's TLS support is left out of the runner; ssl can still be imported later."""
    code = (
        "import sys\n"
        "from aegis_mcp.cli.main import import_asyncio_without_tls\n"
        "import_asyncio_without_tls()\n"
        "import asyncio.base_events, asyncio.sslproto\n"
        "print('ssl' in sys.modules, asyncio.base_events.ssl, asyncio.sslproto.ssl)\n"
        "import ssl\n"
        "print(ssl.OPENSSL_VERSION.split()[0])\n"
    )
    out = _python_lines(code)
    assert out[0] == "False None None"
    assert out[1] == "OpenSSL"


def test_an_agent_run_imports_none_of_the_heavy_libraries(aegis_env: dict[str, str]) -> None:
    """Not the SDK, pyroute2, typer or OpenSSL; nor psutil, which the state's resource
    section needs only from the run's second second on (a loaded machine may take longer
    than that to run `true`: the first sample is put off further here, so that what is
    checked is that nothing else on the start path imports it)."""
    heavy = ("mcp", "pydantic", "pyroute2.netlink", "typer", "ssl", "psutil")
    code = (
        "import sys\n"
        "from aegis_mcp.runner import resources\n"
        "resources.FIRST_SAMPLE_SECS = 3600\n"
        "from aegis_mcp.cli.main import main\n"
        "code = main(['run', '--no-watchdog', '--', 'true'])\n"
        f"print(code, sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=aegis_env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "0 []", out.stderr


def test_host_resolvers_are_read_as_dnspython_reads_them(tmp_path: Path) -> None:
    """The sandbox's DNS forwarder asks the host's resolvers; reading them costs no
    dns.resolver import (150 ms), and gives what dnspython's own reader gives."""
    import dns.resolver

    from aegis_mcp.dns_wire import host_upstreams

    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# nameserver 1.1.1.1\n"
        "nameserver 10.0.0.1\n"
        "nameserver 10.0.0.1\n"
        "options ndots:2 timeout:1\n"
        "nameserver fe80::1%eth0\n"
        "search example.org\n"
        "nameserver 8.8.8.8 # trailing comment\n"
        "; nameserver 9.9.9.8\n"
        " nameserver 9.9.9.9\n"
    )
    expected = list(dict.fromkeys(str(ns) for ns in dns.resolver.Resolver(str(conf)).nameservers))
    assert [address for address, _ in host_upstreams(conf)] == expected
    assert {port for _, port in host_upstreams(conf)} == {53}
    conf.write_text("nameserver not-an-address\nnameserver 192.0.2.1\n")  # dnspython raises
    assert host_upstreams(conf) == [("192.0.2.1", 53)]
    assert host_upstreams(tmp_path / "missing") == []


def test_pyroute2_modules_import_without_its_package_init() -> None:
    """The sandbox's pyroute2 modules load without pyroute2's __init__ (which imports all of
    pyroute2); a name only that __init__ defines still works, by running it then."""
    code = (
        "import sys\n"
        "from aegis_mcp.sandbox.netns import rtnl, nfnetlink\n"
        "from pyroute2 import netns\n"
        "print('pyroute2.iproute' in sys.modules, callable(netns.create))\n"
        "import pyroute2\n"
        "print(pyroute2.IPRoute.__name__, 'pyroute2.iproute' in sys.modules)\n"
    )
    out = _python_lines(code)
    assert out[0] == "False True"
    assert out[1] == "IPRoute True"


def test_collection_resumes_after_the_start_with_the_loaded_modules_frozen(
    aegis_env: dict[str, str],
) -> None:
    """Held off while the runner loads, then on again, on the usage-error path too; what
    was loaded is out of later collections."""
    code = (
        "import gc\n"
        "from aegis_mcp.cli.main import main\n"
        "bad = main(['run', '--bogus', '--', 'true'])\n"
        "print(bad, gc.isenabled(), gc.get_freeze_count() > 1000)\n"
        "gc.unfreeze()\n"
        "ok = main(['run', '--no-watchdog', '--', 'true'])\n"
        "print(ok, gc.isenabled(), gc.get_freeze_count() > 1000)\n"
        "gc.disable()\n"
        "main(['run', '--no-watchdog', '--', 'true'])\n"
        "print('still off', not gc.isenabled())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=aegis_env, capture_output=True, text=True, check=True
    )
    assert out.stdout.splitlines() == ["2 True True", "0 True True", "still off True"], out.stderr
