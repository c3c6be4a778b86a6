"""Run a stand-in model server in this process until SIGTERM.

``python -m e2e.standin --script SCRIPT.json --record RECORD.jsonl --ready READY
[--host 127.0.0.1] [--port 0]``: serves the script (:meth:`Script.to_json`), appends
each finished request to the record, and writes the port it listens on to READY
once it accepts connections (for a server started in another network namespace).
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from .script import Script
from .server import StandInServer


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m e2e.standin")
    parser.add_argument("--script", type=Path, required=True)
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    opts = parser.parse_args()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    server = StandInServer(
        Script.from_json(opts.script.read_text()), opts.host, opts.port, opts.record
    )
    with server:
        tmp = opts.ready.with_suffix(".tmp")
        tmp.write_text(str(server.port))
        tmp.rename(opts.ready)
        done.wait()


if __name__ == "__main__":
    main()
