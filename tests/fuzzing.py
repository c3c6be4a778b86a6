"""Hypothesis strategies shared by the fuzz tests of the control socket and the MCP tools.

Values are what a confused or hostile client sends: every JSON type, deep
nesting, integers of thousands of digits, lone surrogates, NUL, names the
operation does not take. A few values are tamed so that a fuzz run cannot
end the run it is testing (a watchdog told to ``kill``) or wait for an hour
(``wait_secs``), and spawns name no agent that would really start.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from helpers import AEGIS

EXAMPLES = int(os.environ.get("AEGIS_FUZZ_EXAMPLES", "2000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Argument names each operation takes (the MCP tools take the same, minus holder/by).
KNOWN_ARGS = [
    "reason",
    "prompt",
    "by",
    "since",
    "limit",
    "enabled",
    "heartbeat_timeout_secs",
    "lockup_action",
    "max_memory_mb",
    "check_interval_secs",
    "duration_secs",
    "description",
    "agent_type",
    "working_directory",
    "max_iterations",
    "timeout_secs",
    "isolation",
    "sandbox",
    "agent_id",
    "path",
    "ttl_secs",
    "wait_secs",
    "holder",
    "holder_pid",
    "count",
    "max_agents",
    "max_spawn_depth",
]
# Values the operations give meaning to, so that valid calls are made too.
MEANINGFUL = [
    "warn",
    "notify_and_wait",
    "none",
    "worktree",
    "netns",
    "container",
    "primary",
    "nonesuch",
    ".",
    "/",
    "/proc/self",
    "/etc/passwd",
    "README.md",
    "",
    " ",
]
NASTY_CHARS = st.sampled_from(["\ud800", "\udfff", "\0", "a", " ", "é", "\n", "/", ".", "\u202e"])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.text(alphabet=NASTY_CHARS, max_size=10),
    st.sampled_from(MEANINGFUL),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
arg_names = st.one_of(st.sampled_from(KNOWN_ARGS), st.text(max_size=12))
arguments = st.dictionaries(arg_names, json_values, max_size=5)
# Who a request says it comes from: nobody (the user), or an agent id and token that
# this fuzzer cannot know (a forged claim), either part possibly missing or malformed.
claims = st.one_of(
    st.none(),
    st.tuples(
        st.one_of(st.none(), st.sampled_from(["primary", "nonesuch"]), st.text(max_size=12)),
        st.one_of(st.none(), st.text(max_size=40), st.text(alphabet=NASTY_CHARS, max_size=5)),
    ).filter(lambda claim: claim != (None, None)),
)


def tame(op: str, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` made safe for the live run under test (see the module docstring)."""
    args = dict(args)
    for name in ("wait_secs", "timeout_secs"):
        value = args.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0.05:
            args[name] = 0
    if args.get("lockup_action") == "kill":
        args["lockup_action"] = "warn"
    if op == "agent_spawn" and isinstance(args.get("agent_type", ""), str):
        # Only unknown agent types: no real agent starts (the spawn is refused).
        args["agent_type"] = "nonesuch-" + args.get("agent_type", "")[:10]
    if op == "netmon_namespace_cleanup" and not args:
        # With valid (no) arguments it would remove dead runners' namespaces: not ours.
        args["unwanted"] = 1
    return args


def start_runner(env: dict[str, str], cwd: Path, stderr: Path) -> subprocess.Popen:
    """A runner whose agent keeps printing (so that a watchdog a request enables stays
    calm), with its stderr in ``stderr`` for the traceback check."""
    agent = ["sh", "-c", "while :; do echo .; sleep 0.2; done"]
    with stderr.open("w") as err:
        return subprocess.Popen(
            [*AEGIS, "run", "--no-watchdog", "--", *agent],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
