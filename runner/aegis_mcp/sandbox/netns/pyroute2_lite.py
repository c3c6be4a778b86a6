"""pyroute2's modules without its package's ``__init__``.

The sandbox uses pyroute2's netlink message classes (over sockets of its own, :mod:`.rtnl`,
:mod:`.nfnetlink`) and its ``netns`` module; importing any of them first runs
``pyroute2/__init__.py``, which imports everything else pyroute2 has (IPRoute, NDB, the
IPDB compatibility layer, ...): about 100 ms of every sandboxed start for code that is never
used. :func:`install` puts the package in ``sys.modules`` as an empty module with pyroute2's
own path and spec, so that its submodules import as usual; the first use of a name that only
the real ``__init__`` defines (``pyroute2.IPRoute``) runs that ``__init__`` then, into the same
module, so that nothing that expects the whole package breaks.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types
from typing import Any

PACKAGE = "pyroute2"


def install() -> None:
    """Make pyroute2's submodules importable without its ``__init__`` (see the module
    docstring); nothing when pyroute2 is imported already or is not installed."""
    if PACKAGE in sys.modules:
        return
    spec = importlib.machinery.PathFinder.find_spec(PACKAGE)
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return  # the import that follows says what is missing
    package = types.ModuleType(PACKAGE)
    package.__spec__ = spec
    package.__loader__ = spec.loader
    package.__path__ = list(spec.submodule_search_locations)
    package.__file__ = spec.origin
    package.__package__ = PACKAGE
    locations = package.__path__

    def complete(name: str) -> Any:
        # Submodules and dunders are not the __init__'s: the import system finds them itself.
        if name.startswith("__") or any(
            os.path.exists(os.path.join(where, name))
            or os.path.exists(os.path.join(where, f"{name}.py"))
            for where in locations
        ):
            raise AttributeError(name)
        del package.__dict__["__getattr__"]
        spec.loader.exec_module(package)  # type: ignore[union-attr]
        return getattr(package, name)

    package.__getattr__ = complete  # type: ignore[attr-defined]
    sys.modules[PACKAGE] = package
