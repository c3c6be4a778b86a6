"""Netns sandboxes made ahead for pool agents (issue 14): claimed once, none left behind."""

from __future__ import annotations

import os

import pytest

from helpers import wait_for

if os.geteuid() != 0:
    pytest.skip("netns sandboxes need root", allow_module_level=True)

from aegis_mcp.sandbox.errors import SandboxError
from aegis_mcp.sandbox.netns import AddressPool, create_sandbox, markers
from aegis_mcp.sandbox.warm import WarmPool

NETNS_DIR = "/var/run/netns"


def _make(name: str):
    return create_sandbox(os.getpid(), name, pool=AddressPool("10.213.0.0/16"))


def test_a_warm_namespace_is_claimed_once_and_the_rest_go_with_the_pool() -> None:
    pool = WarmPool(_make, size=1)
    claimed = None
    try:
        pool.fill()
        wait_for(lambda: pool.ready == 1, what="a namespace made ahead")
        claimed = pool.claim("a1b2c3d4")
        assert claimed is not None and claimed.name == f"aegis-{os.getpid()}-warm-1"
        marker = markers.read_marker(claimed.state_dir, claimed.name)
        assert marker is not None and marker["claimed_by"] == "a1b2c3d4"
        assert claimed.describe()["agent_id"] == "a1b2c3d4"
        with pytest.raises(SandboxError, match="claimed already, by agent a1b2c3d4"):
            claimed.claim("ffffffff")
        # The pool makes the next one in the background.
        wait_for(lambda: pool.ready == 1, what="the pool refilled")
        assert os.path.exists(f"{NETNS_DIR}/aegis-{os.getpid()}-warm-2")
    finally:
        assert pool.close() == []
        if claimed is not None:
            assert claimed.teardown() == []
    # The unclaimed one went with the pool: nothing of this test is left.
    assert not [n for n in os.listdir(NETNS_DIR) if n.startswith(f"aegis-{os.getpid()}-")]
    assert pool.claim("a1b2c3d4") is None  # a closed pool makes and gives nothing
    with pytest.raises(SandboxError, match="torn down"):
        claimed.claim("ffffffff")


def test_a_pool_that_cannot_make_sandboxes_says_why_and_gives_none() -> None:
    def refuse(name: str):
        raise SandboxError(f"no room for {name}")

    pool = WarmPool(refuse, size=1)
    pool.fill()
    wait_for(lambda: pool.failures, what="the failure")
    assert pool.failures == ["no room for warm-1"]
    assert pool.claim("a1b2c3d4") is None
    assert pool.close() == []
