"""Importing BCC, which lives outside the project's virtualenv.

Debian ships BCC as ``python3-bpfcc`` into the system's dist-packages, which
a virtualenv does not see (DESIGN.md fact 5). Only when a plain ``import
bcc`` fails is that directory appended to ``sys.path``, after the
virtualenv's own paths, so that nothing else installed there can shadow the
project's dependencies.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import re
import sys
from types import ModuleType

SYSTEM_DIST_PACKAGES = "/usr/lib/python3/dist-packages"
INSTALL_HINT = (
    "BCC is not installed (Debian/Ubuntu: apt-get install python3-bpfcc, "
    "or run scripts/setup_bpf.sh)"
)


class BccMissing(ImportError):
    """BCC cannot be imported; the message says how to get it."""


def _try_import() -> ModuleType:
    try:
        return importlib.import_module("bcc")
    except OSError as exc:
        # bcc/__init__ loads libbcc.so through ctypes: a broken install lands here.
        raise BccMissing(f"BCC is installed but libbcc cannot be loaded: {exc}") from None


def import_bcc() -> ModuleType:
    """The ``bcc`` module, from the virtualenv or the system's dist-packages.

    Raises :class:`BccMissing` with an install hint when neither has it.
    """
    try:
        return _try_import()
    except BccMissing:
        raise
    except ImportError as exc:
        if SYSTEM_DIST_PACKAGES in sys.path:
            raise BccMissing(f"{INSTALL_HINT}: {exc}") from None
    sys.path.append(SYSTEM_DIST_PACKAGES)
    try:
        return _try_import()
    except BccMissing:
        raise
    except ImportError as exc:
        raise BccMissing(f"{INSTALL_HINT}: {exc}") from None


def find_bcc() -> str | None:
    """BCC's version when its package is installed where :func:`import_bcc` finds it, without
    importing it (which loads LLVM: tens of milliseconds that a start from compiled programs
    does not need); None when it is not installed."""
    paths = [*sys.path, SYSTEM_DIST_PACKAGES]
    spec = importlib.machinery.PathFinder.find_spec("bcc", paths)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        try:
            with open(f"{location}/version.py") as file:
                text = file.read()
        except OSError:
            continue
        match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text)
        if match:
            return match[1]
    return "unknown"
