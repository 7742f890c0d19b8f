"""The package's layers, checked from the source: which package may import what, and no import
cycle between packages. Every import counts, at module level or inside a function (deferred
imports too: they load the module all the same when they run).

The layers, lowest first: model (the shared vocabulary) -> algorithms -> storage, config ->
core (the engine) -> observe, tools -> transports -> app (the composition root) ->
middleware (the in-app front door, built by app's build) -> cli.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ratelimitd"

# What each part of the package must not import: packages of ours (`ratelimitd.` + name) and
# third-party modules, by prefix.
PROTOBUF = ("ratelimitd.protos", "google.protobuf", "grpc")
REDIS_CLIENTS = ("redis", "hiredis")
FORBIDDEN: Mapping[str, tuple[str, ...]] = {
    "model": (
        "ratelimitd.algorithms",
        "ratelimitd.config",
        "ratelimitd.core",
        "ratelimitd.storage",
        "ratelimitd.observe",
        "ratelimitd.transports",
        "ratelimitd.tools",
        "ratelimitd.app",
        "ratelimitd.cli",
        *PROTOBUF,
        *REDIS_CLIENTS,
    ),
    "algorithms": (
        "ratelimitd.config",
        "ratelimitd.core",
        "ratelimitd.storage",
        "ratelimitd.transports",
        "ratelimitd.app",
        *PROTOBUF,
        *REDIS_CLIENTS,
    ),
    "core": (
        "ratelimitd.transports",
        "ratelimitd.observe.metrics",
        "ratelimitd.app",
        "ratelimitd.cli",
        "ratelimitd.tools",
        "prometheus_client",
        *PROTOBUF,
        *REDIS_CLIENTS,
    ),
    "config": (
        "ratelimitd.core",
        "ratelimitd.storage",
        "ratelimitd.transports",
        "ratelimitd.app",
        "ratelimitd.cli",
        *PROTOBUF,
    ),
    "storage": (
        "ratelimitd.app",
        "ratelimitd.core",
        "ratelimitd.config",
        "ratelimitd.transports",
        "ratelimitd.observe.metrics",
        "prometheus_client",
        *PROTOBUF,
    ),
    "tools": ("ratelimitd.app", "ratelimitd.transports", "ratelimitd.cli", *PROTOBUF),
    "transports": ("ratelimitd.app", "ratelimitd.cli"),
    # Runs inside the user's application: no gRPC server, no metrics registry of its own, no
    # protobuf (app.build, which it reuses, loads none).
    "middleware": (
        "ratelimitd.cli",
        "ratelimitd.transports.grpc",
        "ratelimitd.transports.asgi",
        "ratelimitd.app.server",
        "ratelimitd.app.service",
        "ratelimitd.app.workers",
        "ratelimitd.app.asgi_worker",
        "ratelimitd.observe.metrics",
        "prometheus_client",
        *PROTOBUF,
    ),
    "observe": ("ratelimitd.app", "ratelimitd.transports", "ratelimitd.cli", *PROTOBUF),
}


def imports_of(path: Path) -> Iterator[str]:
    """Every module `path` imports, by absolute name (`from ratelimitd import x` names
    `ratelimitd.x`)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def part_of(path: Path, root: Path) -> str:
    """The top-level part of the package a file belongs to (`core`, `cli`, ...)."""
    return path.relative_to(root).with_suffix("").parts[0]


def package_imports(root: Path) -> dict[str, dict[str, set[str]]]:
    """For each part of the package at `root`, the modules it imports, with the files that
    import each. Generated code (protos) is left out."""
    found: dict[str, dict[str, set[str]]] = {}
    for path in sorted(root.rglob("*.py")):
        part = part_of(path, root)
        if part == "protos":
            continue
        for name in imports_of(path):
            found.setdefault(part, {}).setdefault(name, set()).add(str(path.relative_to(root)))
    return found


def violations(root: Path, forbidden: Mapping[str, tuple[str, ...]]) -> list[str]:
    """`file imports module` for every import the rules forbid."""
    found = []
    for part, imported in package_imports(root).items():
        for name, files in imported.items():
            for prefix in forbidden.get(part, ()):
                if name == prefix or name.startswith(prefix + "."):
                    found += [f"{file} imports {name}" for file in sorted(files)]
    return sorted(set(found))


def cycles(root: Path) -> list[list[str]]:
    """The groups of parts of the package that import each other, directly or not."""
    parts = {part_of(path, root) for path in root.rglob("*.py")} - {"protos"}
    edges: dict[str, set[str]] = {part: set() for part in parts}
    for part, imported in package_imports(root).items():
        for name in imported:
            pieces = name.split(".")
            if pieces[0] == root.name and len(pieces) > 1 and pieces[1] in parts:
                edges[part].add(pieces[1])
    edges = {part: targets - {part} for part, targets in edges.items()}

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for target in edges[todo.pop()] - seen:
                seen.add(target)
                todo.append(target)
        return seen

    reach = {part: reachable(part) for part in parts}
    groups = {frozenset({p} | {q for q in reach[p] if p in reach[q]}) for p in parts}
    return sorted(sorted(group) for group in groups if len(group) > 1)


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_a_part_imports_only_what_its_layer_allows(part: str) -> None:
    assert violations(PACKAGE, {part: FORBIDDEN[part]}) == []


def test_no_import_cycle_between_parts_of_the_package() -> None:
    assert cycles(PACKAGE) == []


def test_every_part_of_the_package_is_placed_in_a_layer() -> None:
    # A new package must say what it may import; cli and app sit on top (anything goes).
    parts = {part_of(path, PACKAGE) for path in PACKAGE.rglob("*.py")}
    assert parts - set(FORBIDDEN) == {"__init__", "__main__", "app", "cli", "protos"}


def test_the_checks_find_a_forbidden_import_and_a_cycle(tmp_path: Path) -> None:
    root = tmp_path / "ratelimitd"
    for name, source in {
        "core/engine.py": "from ratelimitd.transports import rpc\n",
        "core/keys.py": "def f() -> None:\n    import google.protobuf.message\n",
        "transports/rpc.py": "from ratelimitd.core.engine import Engine\n",
        "model/rules.py": "import dataclasses\n",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(source)
    assert violations(root, FORBIDDEN) == [
        "core/engine.py imports ratelimitd.transports",
        "core/engine.py imports ratelimitd.transports.rpc",
        "core/keys.py imports google.protobuf.message",
    ]
    assert cycles(root) == [["core", "transports"]]
