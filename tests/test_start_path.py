"""What an agent start does not pay for (issue 14): the mechanisms that keep the start path
short, each checked by its outcome."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import REPO


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
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO / "runner")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    assert out[0] == "False None None"
    assert out[1] == "OpenSSL"


def test_an_agent_run_imports_neither_the_sdk_nor_pyroute2(aegis_env: dict[str, str]) -> None:
    code = (
        "import sys\n"
        "from aegis_mcp.cli.main import main\n"
        "code = main(['run', '--no-watchdog', '--', 'true'])\n"
        "print(code, sorted(m for m in ('mcp', 'pydantic', 'pyroute2', 'typer', 'ssl')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=aegis_env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "0 []", out.stderr
