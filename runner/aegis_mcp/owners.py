"""Whether the aegis-mcp runner that a leftover names by its pid still runs.

Runners name what they create after their pid (network namespaces
``aegis-<pid>``, cgroups ``aegis-<pid>-<agent>``), so that a runner that
crashed can be recognised from the name alone. Clean-up of namespaces
(sandbox) and of cgroups (eBPF netmon) both ask this before removing
anything; where a leftover also has a marker with the owner's start time,
that marker decides instead (:mod:`aegis_mcp.sandbox.netns.markers`).
"""

from __future__ import annotations

import os
from pathlib import Path


def owner_alive(pid: int) -> bool:
    """True if ``pid`` runs and its command line mentions aegis (a runner, not a reused pid)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        # The process exists but hides its command line (hidepid, another
        # user): treat it as alive; a namespace kept too long is harmless, one
        # pulled from under a running agent is not.
        return os.path.exists(f"/proc/{pid}")
    # A zombie (or a kernel thread) has an empty command line: not a runner.
    return b"aegis" in raw.lower()
