"""Pinned upstream MCP tools: an airline's MCP server is called only while its tools are the approved ones.

An airline's own MCP server can change what its tools say or take at any time (a redeployment, or a
compromised server rewriting a description: a "rug pull"). The tools a connector uses (name, description,
input schema) are hashed, SHA-256 over a canonical JSON (`tool_list_hash`), and the approved hash per airline
is kept with the tools themselves in a pins file (`DEFAULT_PINS_FILE`, committed, so an approval is a
reviewable diff). `jetbridge airlines approve <IATA>` writes it (onboarding is the first approval).

The connector checks every new MCP session against the pin before its first call, and a session again once
its last check is older than ``check_s`` or the pin changed (`PinCheck`). A mismatch quarantines the airline
in that worker: the call is answered `AirlineQuarantined` without calling the tool, and so is every call
after it, without any I/O, until the pins file holds what the server lists (an approval; the file is
re-read when it changes, so no restart is needed). While quarantined, one check every ``check_s`` looks
whether the server went back to the pinned tools. A check that finds the quarantine begun, ended or changed
calls the check's ``on_change`` (the worker publishes it on ``jb.airline-health.v1`` for list_airlines).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jetbridge.errors import AirlineQuarantined, ConfigurationError
from jetbridge.log import get_logger
from jetbridge.metrics import AIRLINE_QUARANTINED

__all__ = [
    "DEFAULT_PINS_FILE",
    "Pin",
    "PinBook",
    "PinCheck",
    "PinnedTool",
    "ToolChange",
    "diff_tools",
    "pin_check_of",
    "pinned_tools",
    "quarantine_refusal",
    "tool_list_hash",
]

log = get_logger(__name__)

# Next to the airline registry it belongs to: reviewed and shipped like it.
DEFAULT_PINS_FILE = Path(__file__).with_name("mcp_pins.toml")

_HEADER = """\
# Approved tools of the airlines' own MCP servers (README "Protecting airlines"). Written by
# `jetbridge airlines approve <IATA>`; do not edit by hand: review a change like code, and commit it.
#
# [<IATA>]      sha256        SHA-256 of the canonical JSON of the tools below (connectors/pins.py)
#               approved_at   when it was approved; endpoint: the server it was read from
# [[<IATA>.tools]]  name, description, input_schema (JSON): each tool the connector calls, as the server
#               listed it. A connector whose server lists anything else does not call it (airline_quarantined).
"""


@dataclass(frozen=True, slots=True)
class PinnedTool:
    """What is pinned of one MCP tool: its name, description and input schema."""

    name: str
    description: str
    input_schema: Mapping[str, Any]

    def canonical(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "inputSchema": self.input_schema}


@dataclass(frozen=True, slots=True)
class Pin:
    """One airline's approved tools and their hash."""

    airline: str
    sha256: str
    approved_at: str
    endpoint: str
    tools: tuple[PinnedTool, ...]


@dataclass(frozen=True, slots=True)
class ToolChange:
    """How one tool differs between the pin and the server: added, removed, changed or unchanged."""

    name: str
    change: Literal["added", "removed", "changed", "unchanged"]
    fields: tuple[str, ...] = ()  # for "changed": description and/or input schema


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def tool_list_hash(tools: Iterable[PinnedTool]) -> str:
    """SHA-256 (hex) of the tools' canonical JSON: sorted by name, keys sorted, no whitespace."""
    listed = sorted((tool.canonical() for tool in tools), key=lambda t: str(t["name"]))
    return hashlib.sha256(_canonical_json(listed).encode()).hexdigest()


def pinned_tools(listed: Iterable[Any], names: Sequence[str]) -> list[PinnedTool]:
    """The tools named ``names`` from a server's listing (SDK `Tool` objects), in what a pin keeps of them.

    A tool the server no longer lists is simply absent, so its hash differs from the pin's.
    """
    wanted = set(names)
    return [
        PinnedTool(name=tool.name, description=tool.description or "", input_schema=dict(tool.input_schema))
        for tool in listed
        if tool.name in wanted
    ]


def diff_tools(pinned: Iterable[PinnedTool], served: Iterable[PinnedTool]) -> list[ToolChange]:
    """Tool by tool, what the server lists against what is pinned, sorted by name."""
    old = {tool.name: tool for tool in pinned}
    new = {tool.name: tool for tool in served}
    changes: list[ToolChange] = []
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name), new.get(name)
        if before is None:
            changes.append(ToolChange(name, "added"))
        elif after is None:
            changes.append(ToolChange(name, "removed"))
        else:
            fields = tuple(
                label
                for label, differs in (
                    ("description", before.description != after.description),
                    ("input schema", _canonical_json(before.input_schema) != _canonical_json(after.input_schema)),
                )
                if differs
            )
            changes.append(ToolChange(name, "changed", fields) if fields else ToolChange(name, "unchanged"))
    return changes


# ---- the pins file ----
class _Tool(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(min_length=1)
    description: str
    input_schema: str


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    approved_at: str
    endpoint: str
    tools: list[_Tool] = Field(default_factory=list)


class PinBook:
    """The pins file, re-read whenever it changes on disk (an approval reaches running workers that way)."""

    def __init__(self, path: Path = DEFAULT_PINS_FILE) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._pins: dict[str, Pin] = {}
        # Counts the file's versions read: a new approval, even of the same tools, is a new version.
        self.version = 0

    def get(self, airline: str) -> Pin | None:
        """The airline's pin, or None when it has none. Raises ConfigurationError for a broken file."""
        return self.load().get(airline)

    def load(self) -> dict[str, Pin]:
        """Every pin, from the file as it is now (parsed again only when it changed)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            if self._seen is not None:
                self.version += 1
            self._seen, self._pins = None, {}
            return {}
        seen = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if seen != self._seen:
            self._seen, self._pins = seen, {}
            self.version += 1
            self._pins = _parse(self.path)
        return self._pins

    def approve(self, airline: str, tools: Sequence[PinnedTool], *, endpoint: str) -> Pin:
        """Pin ``tools`` as the airline's approved ones; the file is replaced atomically."""
        pin = Pin(
            airline=airline,
            sha256=tool_list_hash(tools),
            approved_at=datetime.now(UTC).isoformat(timespec="seconds"),
            endpoint=endpoint,
            tools=tuple(sorted(tools, key=lambda t: t.name)),
        )
        pins = dict(self.load()) | {airline: pin}
        text = _HEADER + "".join(_render(pins[code]) for code in sorted(pins))
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, self.path)
        return pin


def _parse(path: Path) -> dict[str, Pin]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: not a readable pins file ({exc})") from exc
    pins: dict[str, Pin] = {}
    for code, table in raw.items():
        try:
            entry = _Entry.model_validate(table)
            tools = tuple(PinnedTool(t.name, t.description, _schema(json.loads(t.input_schema))) for t in entry.tools)
        except (ValidationError, ValueError) as exc:
            raise ConfigurationError(f"{path}: [{code}] is not a valid pin ({exc})") from exc
        # A hand edit that does not match its hash would approve something nobody reviewed.
        if tool_list_hash(tools) != entry.sha256:
            raise ConfigurationError(f"{path}: [{code}] sha256 does not match its tools (edited by hand?)")
        pins[code] = Pin(code, entry.sha256, entry.approved_at, entry.endpoint, tools)
    return pins


def _schema(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("input_schema is not a JSON object")
    return value


def _toml_string(text: str) -> str:
    # A JSON string is a TOML basic string, but for DEL, which TOML wants escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_schema(schema: Mapping[str, Any]) -> str:
    # Indented in a multi-line literal string, so a change reviews as a diff of the lines that changed.
    text = json.dumps(schema, sort_keys=True, indent=2, ensure_ascii=False)
    if "'''" in text or "\x7f" in text:
        return _toml_string(_canonical_json(schema))
    return f"'''\n{text}'''"


def _render(pin: Pin) -> str:
    lines = [
        "",
        f"[{pin.airline}]",
        f"sha256 = {_toml_string(pin.sha256)}",
        f"approved_at = {_toml_string(pin.approved_at)}",
        f"endpoint = {_toml_string(pin.endpoint)}",
    ]
    for tool in pin.tools:
        lines += [
            "",
            f"[[{pin.airline}.tools]]",
            f"name = {_toml_string(tool.name)}",
            f"description = {_toml_string(tool.description)}",
            f"input_schema = {_toml_schema(tool.input_schema)}",
        ]
    return "\n".join(lines) + "\n"


# ---- the check a connector makes ----
class PinCheck:
    """One airline's quarantine in one connector: its sessions' tools checked against the pin."""

    def __init__(
        self,
        airline: str,
        tool_names: Sequence[str],
        book: PinBook,
        *,
        check_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.airline = airline
        self.tool_names = tuple(tool_names)
        self.book = book
        self.check_s = check_s
        self._clock = clock
        self.quarantined = False
        # Why, as the last check found it (the refusal's message); None: not quarantined, or never checked.
        self.reason: str | None = None
        self.checked = False  # whether a listing was ever compared with the pin
        # Called after a check that found the quarantine begun, ended or changed, and after the first check.
        self.on_change: Callable[[], None] | None = None
        self.served: str | None = None  # the hash the server listed last
        self._pin_at_quarantine: int | None = None  # the pins file's version when quarantined
        self._checked_at = -math.inf
        AIRLINE_QUARANTINED.labels(airline).set(0)

    def pinned(self) -> Pin | None:
        """The airline's pin now; a pins file that cannot be read counts as no pin (logged)."""
        try:
            return self.book.get(self.airline)
        except ConfigurationError as exc:
            log.error("mcp pins file unusable; airline not called", airline=self.airline, error=exc.message)
            return None

    def due(self, verified_pin: str | None, verified_at: float | None) -> bool:
        """Whether a session checked against ``verified_pin`` at ``verified_at`` must list its tools again."""
        pin = self.pinned()
        return (
            pin is None
            or verified_at is None
            or verified_pin != pin.sha256
            or self._clock() - verified_at >= self.check_s
        )

    def refusal(self) -> AirlineQuarantined | None:
        """The error a call gets at once, with no I/O, while the airline is quarantined; None: go on (a call
        that goes on checks the tools before calling one)."""
        if not self.quarantined:
            return None
        pin = self.pinned()
        sha = pin.sha256 if pin is not None else None
        if sha is not None and sha == self.served:
            self._lift(sha)
            return None
        if self.book.version != self._pin_at_quarantine or self._clock() - self._checked_at >= self.check_s:
            return None  # a new approval, or time to look again: this call checks
        return self._error(sha)

    def verify(self, tools: Sequence[PinnedTool]) -> str:
        """Compare a server's listing with the pin; returns the pin's hash, or raises AirlineQuarantined."""
        served = tool_list_hash(tools)
        pin = self.pinned()
        sha = pin.sha256 if pin is not None else None
        self.served = served
        if sha is not None and served == sha:
            if self.quarantined:
                self._lift(sha)
            elif not self.checked:
                self._found(None)
            return sha
        self._checked_at = self._clock()
        if not self.quarantined or self.book.version != self._pin_at_quarantine:
            changes = diff_tools(pin.tools if pin is not None else (), tools)
            log.error(
                "airline quarantined: its MCP tools differ from the approved pin",
                airline=self.airline,
                pinned_sha256=sha,
                served_sha256=served,
                changes=[_said(c) for c in changes if c.change != "unchanged"],
                approve=f"jetbridge airlines approve {self.airline}",
            )
        self.quarantined = True
        self._pin_at_quarantine = self.book.version
        AIRLINE_QUARANTINED.labels(self.airline).set(1)
        error = self._error(sha)
        self._found(error.message)
        raise error

    def _lift(self, sha: str) -> None:
        self.quarantined = False
        self._pin_at_quarantine = None
        AIRLINE_QUARANTINED.labels(self.airline).set(0)
        log.warning("airline quarantine lifted: its MCP tools match the pin", airline=self.airline, sha256=sha)
        self._found(None)

    def _found(self, reason: str | None) -> None:
        first, self.checked = not self.checked, True
        if reason == self.reason and not first:
            return
        self.reason = reason
        if self.on_change is not None:
            self.on_change()

    def _error(self, pinned: str | None) -> AirlineQuarantined:
        if pinned is None:
            return AirlineQuarantined(
                f"{self.airline}: no approved MCP tool list (run jetbridge airlines approve {self.airline})"
            )
        served = self.served[:12] if self.served else "?"
        return AirlineQuarantined(
            f"{self.airline}: MCP tools changed (pinned {pinned[:12]}, served {served}); "
            f"not called until approved (jetbridge airlines approve {self.airline})"
        )


def _said(change: ToolChange) -> str:
    return f"{change.name}: {change.change} {' and '.join(change.fields)}".strip()


def pin_check_of(connector: object) -> PinCheck | None:
    """The pin check of a connector that pins its airline's tools; None for every other connector."""
    check = getattr(connector, "pin_check", None)
    return check if isinstance(check, PinCheck) else None


def quarantine_refusal(connector: object) -> AirlineQuarantined | None:
    """For the worker: the refusal of a connector that pins its airline's tools, before any token or breaker
    permit is spent on the call; None for every other connector."""
    check = pin_check_of(connector)
    return check.refusal() if check is not None else None
