"""A podman container's exit code as soon as conmon knows it, not 40-150 ms later.

podman's ``wait`` answers once the engine has synced the container's state,
and that sync waits for the ``podman container cleanup`` process conmon
starts at the exit (it holds the container's lock while it unmounts): 40-150
ms after the process ended, on the path of every agent's end. conmon itself
writes the exit code (128+N after signal N) to ``<exit dir>/<container id>``
within a millisecond of the exit, before it starts the clean-up; the exit
directory is on conmon's command line (``--exit-dir``) and the same for every
container of an engine, so it is learnt once per engine from a live
container's conmon (:func:`exit_dir_of`).

The file is read only once the container's output has ended (the relay says
so): an agent runs for hours, and polling a file all that time would cost
more than it saves. The engine's own ``wait`` runs alongside and stays the
answer whenever the file does not come (output closed by a process that
lives on, an unreadable directory): this is a shortcut, never the only way.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

READ_SECS = 0.5
"""How long after the output ended the file is looked for (it comes within ~1 ms)."""
_FIRST_POLL = 0.0005
_LAST_POLL = 0.01


def exit_dir_of(conmon_pid: int) -> Path | None:
    """The ``--exit-dir`` of conmon ``conmon_pid`` (None if it is not a readable conmon)."""
    try:
        argv = Path(f"/proc/{conmon_pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if not argv or not os.path.basename(argv[0]).startswith(b"conmon"):
        return None
    with contextlib.suppress(ValueError, IndexError):
        found = os.fsdecode(argv[argv.index(b"--exit-dir") + 1])
        if os.path.isabs(found):
            return Path(found)
    return None


def read_exit_code(path: Path, seconds: float = READ_SECS) -> int | None:
    """The exit code conmon writes at ``path``, waiting up to ``seconds`` for it; None if
    it does not come (the container still runs, or the file cannot be read)."""
    deadline = time.monotonic() + seconds
    pause = _FIRST_POLL
    while True:
        with contextlib.suppress(OSError, ValueError):
            # An empty file is one still being written.
            text = path.read_text().strip()
            if text:
                return int(text)
        if time.monotonic() >= deadline:
            return None
        time.sleep(pause)
        pause = min(pause * 2, _LAST_POLL)
