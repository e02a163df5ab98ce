"""Whether a new version of an Avro schema may follow the old ones under a subject, and if not, which field breaks.

Avro schema resolution decides: a *reader* schema reads data written with a *writer* schema when every reader
field is in the writer (by name or alias) or has a default, every type is the same or one Avro promotes
(int -> long -> float -> double, string <-> bytes), named types keep their names, an enum reader knows every
symbol written (or has a default) and a fixed keeps its size. A subject's compatibility level says who reads whom,
in Confluent's terms:

    BACKWARD  the new schema reads data written with the previous one   (consumers upgrade first)
    FORWARD   the previous schema reads data written with the new one   (producers upgrade first)
    FULL      both
    *_TRANSITIVE  the same against every version registered, not only the latest
    NONE      anything goes

The local registry (infra/registry/local_registry.py) judges registrations with this module, and `jetbridge schemas
check` names the fields it finds, so the two never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "BACKWARD",
    "FULL_TRANSITIVE",
    "LEVELS",
    "Breaking",
    "breaking_changes",
    "is_backward_compatible",
    "is_compatible",
]

BACKWARD = "BACKWARD"
FULL_TRANSITIVE = "FULL_TRANSITIVE"
LEVELS = frozenset(
    {"NONE", "BACKWARD", "FORWARD", "FULL", "BACKWARD_TRANSITIVE", "FORWARD_TRANSITIVE", "FULL_TRANSITIVE"}
)
_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}
_NAMED = ("record", "enum", "fixed", "error")

Direction = Literal["backward", "forward"]


@dataclass(frozen=True, slots=True)
class Breaking:
    """One reason a new schema may not follow an old one: the field (a dotted path from the top record) and why."""

    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Problem:
    kind: Literal["missing", "type", "symbols", "name", "size"]
    path: str
    reader: str = ""
    writer: str = ""
    symbols: tuple[str, ...] = ()


def _named(schema: Any, names: dict[str, Any], namespace: str = "") -> dict[str, Any]:
    """Every named type in ``schema`` by full and short name, so references by name resolve."""
    if isinstance(schema, dict) and schema.get("type") in _NAMED:
        name = str(schema["name"])
        ns = str(schema.get("namespace", namespace))
        names[name if "." in name or not ns else f"{ns}.{name}"] = schema
        names.setdefault(name.rpartition(".")[2], schema)
        for field in schema.get("fields", []):
            _named(field["type"], names, ns)
    elif isinstance(schema, dict) and schema.get("type") == "array":
        _named(schema["items"], names, namespace)
    elif isinstance(schema, dict) and schema.get("type") == "map":
        _named(schema["values"], names, namespace)
    elif isinstance(schema, dict) and isinstance(schema.get("type"), (dict, list)):
        _named(schema["type"], names, namespace)
    elif isinstance(schema, list):
        for branch in schema:
            _named(branch, names, namespace)
    return names


def _resolve(schema: Any, names: dict[str, Any]) -> Any:
    if isinstance(schema, str) and schema in names:
        return names[schema]
    if isinstance(schema, dict) and isinstance(schema.get("type"), (dict, list)):
        return _resolve(schema["type"], names)
    if isinstance(schema, dict) and schema.get("type") in names and schema.get("logicalType") is None:
        return names[schema["type"]]
    return schema


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return str(schema["type"])
    return str(schema)


def _short(name: str) -> str:
    return name.rpartition(".")[2]


def _describe(schema: Any) -> str:
    """A type as a person reads it: ``string``, ``Cabin``, ``array<string>``, ``null|string``."""
    if isinstance(schema, list):
        return "|".join(_describe(branch) for branch in schema)
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind in _NAMED:
            return _short(str(schema["name"]))
        if kind == "array":
            return f"array<{_describe(schema['items'])}>"
        if kind == "map":
            return f"map<{_describe(schema['values'])}>"
        return _describe(kind)
    return _short(str(schema))


class _Resolution:
    """Avro's resolution of one writer schema by one reader schema, collecting every problem on the way."""

    def __init__(self, reader: Any, writer: Any) -> None:
        self.rnames = _named(reader, {})
        self.wnames = _named(writer, {})
        self.problems: list[_Problem] = []
        self._seen: set[tuple[str, str, str]] = set()  # named pairs already compared: recursive types end

    def run(self, reader: Any, writer: Any) -> list[_Problem]:
        self._compare(reader, writer, _describe(_resolve(reader, self.rnames)))
        return self.problems

    def _readable(self, reader: Any, writer: Any, path: str) -> bool:
        """Whether ``reader`` reads ``writer`` (as a union branch candidate: problems are not kept)."""
        trial = _Resolution.__new__(_Resolution)
        trial.rnames, trial.wnames, trial.problems, trial._seen = self.rnames, self.wnames, [], set(self._seen)
        trial._compare(reader, writer, path)
        return not trial.problems

    def _compare(self, reader: Any, writer: Any, path: str) -> None:
        reader, writer = _resolve(reader, self.rnames), _resolve(writer, self.wnames)
        rk, wk = _kind(reader), _kind(writer)
        if wk == "union":
            for branch in writer:
                self._compare(reader, branch, path)
            return
        if rk == "union":
            if any(self._readable(branch, writer, path) for branch in reader):
                return
            # The branch meant for it (same kind, same name) says which field breaks; else the type changed.
            same = [b for b in reader if _describe(_resolve(b, self.rnames)) == _describe(writer)]
            if same:
                self._compare(same[0], writer, path)
            else:
                self.problems.append(_Problem("type", path, _describe(reader), _describe(writer)))
            return
        if rk != wk:
            if rk not in _PROMOTIONS.get(wk, set()):
                self.problems.append(_Problem("type", path, _describe(reader), _describe(writer)))
            return
        if rk in _NAMED:
            rname, wname = _short(str(reader["name"])), _short(str(writer["name"]))
            if wname != rname and wname not in {_short(str(a)) for a in reader.get("aliases", [])}:
                self.problems.append(_Problem("name", path, rname, wname))
                return
            key = (path, rname, wname)
            if key in self._seen:
                return
            self._seen.add(key)
        if rk in ("record", "error"):
            self._record(reader, writer, path)
        elif rk == "enum":
            unknown = tuple(s for s in writer["symbols"] if s not in set(reader["symbols"]))
            if unknown and "default" not in reader:
                self.problems.append(_Problem("symbols", path, symbols=unknown))
        elif rk == "array":
            self._compare(reader["items"], writer["items"], f"{path}[]")
        elif rk == "map":
            self._compare(reader["values"], writer["values"], f"{path}{{}}")
        elif rk == "fixed" and reader["size"] != writer["size"]:
            self.problems.append(_Problem("size", path, str(reader["size"]), str(writer["size"])))

    def _record(self, reader: Any, writer: Any, path: str) -> None:
        wfields = {str(f["name"]): f for f in writer.get("fields", [])}
        for field in reader.get("fields", []):
            names = [str(field["name"]), *(str(a) for a in field.get("aliases", []))]
            wfield = next((wfields[n] for n in names if n in wfields), None)
            where = f"{path}.{field['name']}"
            if wfield is None:
                if "default" not in field:
                    self.problems.append(_Problem("missing", where))
            else:
                self._compare(field["type"], wfield["type"], where)


def _reason(problem: _Problem, direction: Direction) -> str:
    """Why, in words: ``backward`` is the new schema reading old data, ``forward`` the previous reading new data."""
    old, new = (problem.writer, problem.reader) if direction == "backward" else (problem.reader, problem.writer)
    if problem.kind == "missing":
        if direction == "backward":
            return "added without a default: consumers on the new schema cannot read records written before it"
        return "removed, and the previous schema has no default for it: consumers not yet upgraded cannot read it"
    if problem.kind == "type":
        if direction == "backward":
            return f"type changed from {old} to {new}: the new schema cannot read {old} values (no Avro promotion)"
        return f"type changed from {old} to {new}: consumers not yet upgraded cannot read {new} values"
    if problem.kind == "symbols":
        listed = ", ".join(problem.symbols)
        if direction == "backward":
            return f"enum symbol {listed} removed, and the enum has no default: records holding it cannot be read"
        return f"enum symbol {listed} added, and the previous enum has no default: consumers not yet upgraded fail"
    if problem.kind == "name":
        return f"named type renamed from {old} to {new} without an alias: Avro matches named types by name"
    return f"fixed size changed from {old} to {new}"


def _problems(reader: Any, writer: Any) -> list[_Problem]:
    return _Resolution(reader, writer).run(reader, writer)


def breaking_changes(level: str, new: str, versions: Sequence[str]) -> list[Breaking]:
    """What keeps ``new`` from following ``versions`` (oldest first) under ``level``; empty when it may."""
    if level not in LEVELS:
        raise ValueError(f"unknown compatibility level {level!r} (one of {', '.join(sorted(LEVELS))})")
    if level == "NONE" or not versions:
        return []
    reader = json.loads(new)
    found: dict[Breaking, None] = {}  # ordered, without repeats across versions
    for old in versions if level.endswith("_TRANSITIVE") else versions[-1:]:
        writer = json.loads(old)
        if level.startswith(("BACKWARD", "FULL")):
            for problem in _problems(reader, writer):
                found[Breaking(problem.path, _reason(problem, "backward"))] = None
        if level.startswith(("FORWARD", "FULL")):
            for problem in _problems(writer, reader):
                found[Breaking(problem.path, _reason(problem, "forward"))] = None
    return list(found)


def is_compatible(level: str, new: str, versions: Sequence[str]) -> bool:
    """Whether ``new`` may be registered after ``versions`` (oldest first) under ``level``."""
    return not breaking_changes(level, new, versions)


def is_backward_compatible(new: str, old: str) -> bool:
    """Whether consumers using ``new`` can read data written with ``old``."""
    return not _problems(json.loads(new), json.loads(old))
