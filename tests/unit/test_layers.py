"""The floors of the code, drawn in jetbridge/__init__.py, hold: every import reaches down, never up.

    ground floor   jetbridge.errors, jetbridge.settings, jetbridge.log: nothing of ours but each other
    schemas/       from jetbridge, only the ground floor
    jetbridge/     never streams/, connectors/, mcp_bridge/, infra/ or bench/ (the processes built on it)

Each module's imports are read with ``ast``: those inside functions and under ``TYPE_CHECKING`` count too,
since they tie the modules together all the same. ``importlib.import_module`` with a computed name is not seen.

One exemption: ``jetbridge.cli``, the command-line entry point, whose commands start the local stack
(``infra``) and the benchmark (``bench``); it imports them inside those commands.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from jetbridge.settings import REPO_ROOT

GROUND_FLOOR = frozenset({"jetbridge.errors", "jetbridge.settings", "jetbridge.log"})
ABOVE_JETBRIDGE = ("streams", "connectors", "mcp_bridge", "infra", "bench")
OURS = ("jetbridge", "schemas", *ABOVE_JETBRIDGE)
ENTRY_POINT = "jetbridge.cli"


@dataclass(frozen=True, slots=True)
class Import:
    importer: str
    imported: str
    line: int

    def __str__(self) -> str:
        return f"{self.importer} imports {self.imported} (line {self.line})"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = REPO_ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(source: str, module: str, *, is_package: bool = False) -> Iterator[Import]:
    """Every module of ours that ``source`` (the text of ``module``) imports, wherever the import is."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from jetbridge import errors`` imports the module jetbridge.errors.
            names = [f"{base}.{a.name}" if is_module(f"{base}.{a.name}") else base for a in node.names]
        else:
            continue
        for name in dict.fromkeys(names):
            if name.split(".")[0] in OURS:
                yield Import(module, name, node.lineno)


def imports_in(package: str) -> list[Import]:
    found: list[Import] = []
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        found += imports_of(path.read_text(encoding="utf-8"), module_name(path), is_package=path.name == "__init__.py")
    return found


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


def test_the_layers_named_here_exist() -> None:
    assert all(is_module(name) for name in (*GROUND_FLOOR, *OURS, ENTRY_POINT))


def test_the_ground_floor_imports_nothing_of_ours_but_the_ground_floor() -> None:
    # jetbridge/__init__.py runs before any ground-floor module, so it is held to the same rule.
    wrong = [
        i
        for i in imports_in("jetbridge")
        if i.importer in GROUND_FLOOR | {"jetbridge"} and i.imported not in GROUND_FLOOR
    ]
    assert not wrong, "the ground floor reaches up:\n" + "\n".join(map(str, wrong))


def test_schemas_import_only_the_ground_floor_of_jetbridge() -> None:
    wrong = [i for i in imports_in("schemas") if not under(i.imported, "schemas") and i.imported not in GROUND_FLOOR]
    assert not wrong, "schemas/ builds on the ground floor only:\n" + "\n".join(map(str, wrong))


def test_jetbridge_never_imports_the_processes_built_on_it() -> None:
    wrong = [
        i
        for i in imports_in("jetbridge")
        if i.importer != ENTRY_POINT and any(under(i.imported, above) for above in ABOVE_JETBRIDGE)
    ]
    assert not wrong, "jetbridge/ reaches up:\n" + "\n".join(map(str, wrong))


def test_the_reader_sees_imports_inside_functions_relative_ones_and_submodules_imported_by_name() -> None:
    source = """
from typing import TYPE_CHECKING
from . import topics
from .errors import KafkaError

if TYPE_CHECKING:
    from streams.router import Router

def later() -> None:
    import connectors.base
    from jetbridge import settings
"""
    found = {(i.imported, i.line) for i in imports_of(source, "jetbridge.kafka")}
    assert found == {
        ("jetbridge.topics", 3),
        ("jetbridge.errors", 4),
        ("streams.router", 7),
        ("connectors.base", 10),
        ("jetbridge.settings", 11),
    }
