"""The MCP tools' version rule: a tool changes only by adding; a breaking change is a new tool name.

Agents keep calling a tool the way they learned it, often from a cached ``tools/list``. So a tool may gain an
optional argument, an argument may accept more, and new tools may appear; nothing else. ``tools_contract.json``
beside this module is the committed snapshot of every tool's input schema (descriptions and titles left out: words
may change, shapes may not), and `jetbridge schemas check` compares the bridge's tools with it. Breaking:

    a tool disappears                 an argument is removed or renamed
    a new argument is required        an optional argument becomes required
    a type narrows                    fewer types, fewer enum values, tighter bounds or lengths, a new or other
                                      pattern or format, unknown fields refused where they were accepted

The way out is a new tool beside the old one (``search_offers_v2``), the old one kept until its agents moved.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from jetbridge.airlines import AirlineRegistry
from jetbridge.errors import JetbridgeError
from jetbridge.settings import Settings

__all__ = ["SNAPSHOT", "ToolChange", "compare_tools", "current_tools", "read_snapshot", "write_snapshot"]

SNAPSHOT = Path(__file__).resolve().parent / "tools_contract.json"
_RULE = (
    "MCP tools change only by adding (a tool, an optional argument, a wider type); a breaking change is a new tool "
    "name. Checked by `jetbridge schemas check`; `jetbridge schemas check --update` records additions."
)
_WORDS = frozenset({"description", "title"})
# Bounds that narrow when they rise (the lower ones) or fall (the upper ones).
_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")


@dataclass(frozen=True, slots=True)
class ToolChange:
    """One difference between the snapshot and the tools: ``breaking`` ones fail the check."""

    tool: str
    argument: str  # a dotted path (``passengers[].document.number``); empty for the tool itself
    what: str
    breaking: bool


class _Backend:
    """Enough of a SearchBackend to build the server and list its tools; nothing is ever called."""

    def __init__(self) -> None:
        from mcp_bridge.validation import SearchRules

        # The documented defaults, not this process's environment: the snapshot is the same on every machine.
        self.rules = SearchRules.from_settings(Settings.model_construct(), AirlineRegistry([]))

    async def search(self, arguments: object, *, client_id: str) -> object:
        raise AssertionError("the contract's server is never called")

    def refused(
        self, error: JetbridgeError, arguments: Mapping[str, object], *, client_id: str, started: float, tool: str
    ) -> None:
        raise AssertionError("the contract's server is never called")

    def airlines(self, *, client_id: str) -> list[object]:
        raise AssertionError("the contract's server is never called")

    def health(self) -> dict[str, Any]:
        raise AssertionError("the contract's server is never called")


def _shape(schema: Any) -> Any:
    """``schema`` without its words: what an agent's arguments are checked against."""
    if isinstance(schema, dict):
        return {k: _shape(v) for k, v in schema.items() if k not in _WORDS or isinstance(v, dict)}
    if isinstance(schema, list):
        return [_shape(v) for v in schema]
    return schema


async def current_tools() -> dict[str, Any]:
    """Every tool the bridge offers, by name: its input schema as ``tools/list`` shows it (less the words)."""
    from mcp_bridge.order_tools import add_order_tools
    from mcp_bridge.server import SearchBackend, build_server

    server = build_server(cast(SearchBackend, _Backend()))
    # The order tools only register here: their service and audit trail are never reached.
    orders = SimpleNamespace(book=SimpleNamespace(subscribe=lambda _listener: None))
    add_order_tools(server, cast(Any, orders), cast(Any, None))
    return {tool.name: _shape(tool.input_schema) for tool in sorted(await server.list_tools(), key=lambda t: t.name)}


def read_snapshot(path: Path = SNAPSHOT) -> dict[str, Any]:
    """The tools as last recorded; empty when there is no snapshot yet."""
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8"))["tools"])


def write_snapshot(tools: Mapping[str, Any], path: Path = SNAPSHOT) -> None:
    body = {"rule": _RULE, "tools": dict(sorted(tools.items()))}
    path.write_text(json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _deref(schema: Any, root: Mapping[str, Any]) -> Any:
    """``schema`` with a local ``$ref`` (``#/$defs/X``) followed."""
    seen = 0
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < 32:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        schema, seen = target, seen + 1
    return schema


def _types(schema: Mapping[str, Any]) -> set[str] | None:
    """The JSON types a (branch of a) schema accepts; None: any."""
    kind = schema.get("type")
    if kind is None:
        return None
    kinds = {kind} if isinstance(kind, str) else set(kind)
    return kinds | {"integer"} if "number" in kinds else kinds


def _branches(schema: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return [b for b in schema[key] if isinstance(b, dict)]
    return [schema]


def _describe(schema: Mapping[str, Any]) -> str:
    kinds = _types(schema)
    if kinds is None:
        return "anything"
    return "|".join(sorted(kinds - {"integer"} if "number" in kinds else kinds))


class _Narrowing:
    """Where the new schema of a tool accepts less than the old one did."""

    def __init__(self, old_root: Mapping[str, Any], new_root: Mapping[str, Any]) -> None:
        self.old_root, self.new_root = old_root, new_root

    def value(self, old: Any, new: Any, path: str) -> Iterator[str]:
        old, new = _deref(old, self.old_root), _deref(new, self.new_root)
        if not isinstance(old, dict) or not isinstance(new, dict):
            return
        new_branches = _branches(new)
        for branch in _branches(old):
            kinds = _types(branch)
            match = next(
                (b for b in new_branches if (t := _types(b)) is None or (kinds is not None and kinds & t)), None
            )
            if match is None:
                yield f"{path}\0no longer accepts {_describe(branch)} (now {' or '.join(map(_describe, new_branches))})"
                continue
            yield from self.branch(branch, match, path)

    def branch(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> Iterator[str]:
        old_kinds, new_kinds = _types(old), _types(new)
        if new_kinds is not None and (old_kinds is None or not old_kinds <= new_kinds):
            yield f"{path}\0type narrowed from {_describe(old)} to {_describe(new)}"
        if "enum" in new:
            dropped = [v for v in old.get("enum", []) if v not in new["enum"]] if "enum" in old else None
            if dropped is None:
                yield f"{path}\0now limited to {', '.join(map(str, new['enum']))}"
            elif dropped:
                yield f"{path}\0no longer accepts {', '.join(map(str, dropped))}"
        for key in _LOWER:
            if key in new and (key not in old or new[key] > old[key]):
                yield f"{path}\0{key} raised from {old.get(key, 'none')} to {new[key]}"
        for key in _UPPER:
            if key in new and (key not in old or new[key] < old[key]):
                yield f"{path}\0{key} lowered from {old.get(key, 'none')} to {new[key]}"
        for key in ("pattern", "format", "const"):
            if key in new and new[key] != old.get(key):
                yield f"{path}\0{key} changed from {old.get(key, 'none')!r} to {new[key]!r}"
        yield from self.members(old, new, path)

    def members(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> Iterator[str]:
        prefix = f"{path}." if path else ""
        old_props, new_props = old.get("properties", {}), new.get("properties", {})
        for name, schema in old_props.items():
            if name not in new_props:
                yield f"{prefix}{name}\0removed (or renamed): agents that send it are refused"
            else:
                yield from self.value(schema, new_props[name], f"{prefix}{name}")
        old_required = set(old.get("required", ()))
        for name in new.get("required", ()):
            if name not in old_required:
                was = "optional argument is now required" if name in old_props else "new argument is required"
                yield f"{prefix}{name}\0{was}: agents that leave it out are refused"
        if new.get("additionalProperties") is False and old.get("additionalProperties", True) is not False:
            yield f"{path}\0unknown fields are now refused"
        if "items" in old and "items" in new:
            yield from self.value(old["items"], new["items"], f"{path}[]")


def compare_tools(snapshot: Mapping[str, Any], tools: Mapping[str, Any]) -> list[ToolChange]:
    """Every difference of ``tools`` from ``snapshot`` that matters: breaking ones, then additions."""
    changes: list[ToolChange] = []
    for name, old in snapshot.items():
        if name not in tools:
            changes.append(ToolChange(name, "", "tool removed (or renamed): agents that call it fail", True))
            continue
        for found in dict.fromkeys(_Narrowing(old, tools[name]).members(old, tools[name], "")):
            argument, _, what = found.partition("\0")
            changes.append(ToolChange(name, argument, what, True))
    for name, new in tools.items():
        old = snapshot.get(name)
        if old is None:
            changes.append(ToolChange(name, "", "new tool", False))
            continue
        required = set(new.get("required", ()))
        for argument in new.get("properties", {}):
            if argument not in old.get("properties", {}) and argument not in required:
                changes.append(ToolChange(name, argument, "new optional argument", False))
    return changes
