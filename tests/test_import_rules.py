"""The import rules of the README's Architecture section, read from the package's source.

Every ``import`` and ``from ... import`` of every module counts: at the top, inside
functions, and under ``TYPE_CHECKING`` (a circle there is still a circle). Imports by
name at run time (``importlib``) are not read: the two places that use it choose
backends by kind and stand above what they load.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import REPO

PACKAGE = REPO / "runner" / "aegis_mcp"
ROOT = "aegis_mcp"
GROUND = {
    "",
    "files",
    "paths",
    "safe_paths",
    "processes",
    "privileges",
    "terminal",
    "owners",
    "leftovers",
    "dns_wire",
}
"""The ground floor (``""``: the package's own ``__init__``, its version): anyone may
import it; it imports nothing above it."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The project modules ``name`` imports (a package's ``__init__`` by its name)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            # ``from pkg import sub`` imports the module pkg.sub where there is one.
            targets = [
                f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in known else origin
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target == ROOT or target.startswith(ROOT + "."):
                while target not in known:
                    target = target.rsplit(".", 1)[0]
                if target != name:
                    yield target


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: set(imports_of(name, path, known)) for name, path in found.items()}


def area(module: str) -> str:
    """The first level under the package: ``runner``, ``pool``, ``files``, ..."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def offenders(graph: dict[str, set[str]], source, target) -> list[str]:
    return sorted(
        f"{a} -> {b}" for a, deps in graph.items() if source(a) for b in deps if target(b)
    )


def test_the_graph_is_read(graph: dict[str, set[str]]) -> None:
    # The rules below mean nothing if the parser misses imports.
    assert len(graph) > 100
    assert "aegis_mcp.runner.ops" in graph["aegis_mcp.runner.supervisor"]
    assert "aegis_mcp.control.snapshot" in graph["aegis_mcp.runner.status"]
    # relative, from a package's __init__, and inside a function body
    assert "aegis_mcp.sandbox.errors" in graph["aegis_mcp.sandbox"]
    assert "aegis_mcp.cleanup.sweep" in graph["aegis_mcp.runner.supervisor"]
    # under TYPE_CHECKING
    assert "aegis_mcp.pool.service" in graph["aegis_mcp.runner.status"]


def circle_in(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return exc.args[1]
    return None


def test_no_import_circles(graph: dict[str, set[str]]) -> None:
    assert circle_in(graph) is None
    # ... and one would be seen: the supervisor's ops going back to the supervisor.
    bent = {
        **graph,
        "aegis_mcp.runner.ops": {*graph["aegis_mcp.runner.ops"], "aegis_mcp.runner.supervisor"},
    }
    assert circle_in(bent) is not None


def test_the_runner_knows_no_front(graph: dict[str, set[str]]) -> None:
    fronts = {"cli", "mcp_server", "dashboard"}
    assert offenders(graph, lambda a: area(a) == "runner", lambda b: area(b) in fronts) == []


def test_fronts_reach_the_runner_only_through_control(graph: dict[str, set[str]]) -> None:
    fronts = {"mcp_server", "dashboard"}
    assert offenders(graph, lambda a: area(a) in fronts, lambda b: area(b) == "runner") == []


def test_netmon_and_sandbox_do_not_import_each_other(graph: dict[str, set[str]]) -> None:
    assert offenders(graph, lambda a: area(a) == "netmon", lambda b: area(b) == "sandbox") == []
    schema = "aegis_mcp.netmon.schema"
    sandbox_to_netmon = offenders(
        graph, lambda a: area(a) == "sandbox", lambda b: area(b) == "netmon" and b != schema
    )
    assert sandbox_to_netmon == []


def test_sources_and_backends_know_no_consumer(graph: dict[str, set[str]]) -> None:
    consumers = {"runner", "pool", "cli", "mcp_server", "dashboard", "demo", "cleanup"}
    assert (
        offenders(graph, lambda a: area(a) in ("netmon", "sandbox"), lambda b: area(b) in consumers)
        == []
    )


def test_control_imports_no_implementation(graph: dict[str, set[str]]) -> None:
    allowed = {"control", *GROUND}
    assert offenders(graph, lambda a: area(a) == "control", lambda b: area(b) not in allowed) == []


def test_the_ground_floor_imports_nothing_above_it(graph: dict[str, set[str]]) -> None:
    assert offenders(graph, lambda a: area(a) in GROUND, lambda b: area(b) not in GROUND) == []


def _readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"## {title}\n")
    return text[start : text.index("\n## ", start + 1)]


def test_the_readme_tree_names_real_paths() -> None:
    section = _readme_section("Architecture")
    tree = section.split("```\n", 2)[1]
    named: set[Path] = set()
    folder = PACKAGE
    for line in tree.splitlines()[1:]:
        entry = line.lstrip("│├└─ ")
        words = [w.strip(",") for w in entry.split()]
        depth = len(line) - len(line.lstrip("│├└─ "))
        for word in words:
            if not (word.endswith("/") or word.endswith(".py")):
                break
            base = PACKAGE if depth <= 4 else folder
            path = base / word.rstrip("/")
            assert path.exists(), f"the README names {word}, which is not in {base}"
            named.add(path)
            if word.endswith("/"):
                folder = path
    packages = {p for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages - named == set(), "a package folder is missing from the README's tree"


def test_the_readme_subscribe_example_parses() -> None:
    section = _readme_section("Files and environment")
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    tree = ast.parse(code)
    imported = {
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    for module, name in imported:
        assert hasattr(__import__(module, fromlist=[name]), name), (module, name)
