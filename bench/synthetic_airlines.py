"""Synthetic airlines for ``jetbridge bench --airline-counts``: N simulated airlines that all fly one route.

The registry is written in the format of ``connectors/airlines.toml`` (its ``[defaults]`` copied), so the
stack, the simulators and the baseline read it like the shipped one; the simulators' host (127.0.0.1 unless
told otherwise) is in its ``private_endpoints_allowed``, as in the shipped one. The connector kinds take
turns (NDC, REST, MCP; REST alternates between the two REST dialects the simulators speak), each airline gets
a port of its own and a fixed latency from a short cycle, and codes are two letters that no registry airline
and no OpenFlights route uses; each airline serves exactly the benchmark's route.
"""

from __future__ import annotations

import socket
import string
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from connectors.pins import DEFAULT_PINS_FILE, PinBook
from jetbridge.airlines import AirlineRegistry, load_registry
from jetbridge.errors import ConfigurationError
from jetbridge.reference import routes_by_airline

__all__ = [
    "MAX_AIRLINES",
    "ROUTE",
    "FleetAirline",
    "SyntheticAirline",
    "free_ports",
    "synthetic_fleet",
    "write_registry",
]

ROUTE = ("LHR", "JFK")
# One uvicorn server, one calls topic and one consumer per airline, on the one machine: keep it sane.
MAX_AIRLINES = 60
_KINDS = ("ndc", "rest", "mcp")
_REST_MAPPINGS = ("virgin_atlantic", "delta")
# X, Y and Z first letters: recognisably made up, and none of the five simulated airlines.
_FIRST_LETTERS = "XYZ"


class FleetAirline(Protocol):
    """What a registry entry of a benchmark fleet is written from."""

    @property
    def code(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def mapping(self) -> str | None: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def routes(self) -> frozenset[tuple[str, str]]: ...


@dataclass(frozen=True, slots=True)
class SyntheticAirline:
    code: str
    kind: str
    mapping: str | None
    endpoint: str
    latency_ms: int

    @property
    def name(self) -> str:
        dialect = f"/{self.mapping}" if self.kind == "rest" else ""
        return f"Synthetic {self.code} ({self.kind}{dialect})"

    @property
    def routes(self) -> frozenset[tuple[str, str]]:
        return frozenset({ROUTE})


def _codes(count: int, taken: Iterable[str]) -> list[str]:
    reserved = set(taken) | set(routes_by_airline())
    free = [f"{a}{b}" for a in _FIRST_LETTERS for b in string.ascii_uppercase if f"{a}{b}" not in reserved]
    if count > len(free):
        raise ConfigurationError(f"only {len(free)} synthetic airline codes are free, {count} asked for")
    return free[:count]


def free_ports(count: int, host: str) -> list[int]:
    """Ports the OS says are free now (all held open together, so they differ)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def synthetic_fleet(
    count: int, *, taken: Iterable[str], latencies_ms: Sequence[int], host: str = "127.0.0.1"
) -> list[SyntheticAirline]:
    """``count`` airlines, kinds in turn, on free ports of ``host``, latencies from ``latencies_ms`` in turn."""
    if not 1 <= count <= MAX_AIRLINES:
        raise ConfigurationError(f"between 1 and {MAX_AIRLINES} synthetic airlines, not {count}")
    if not latencies_ms:
        raise ConfigurationError("synthetic airlines need at least one latency")
    fleet: list[SyntheticAirline] = []
    for i, (code, port) in enumerate(zip(_codes(count, taken), free_ports(count, host), strict=True)):
        kind = _KINDS[i % len(_KINDS)]
        mapping = {"ndc": None, "rest": _REST_MAPPINGS[i // len(_KINDS) % 2], "mcp": "finnair"}[kind]
        path = "/mcp" if kind == "mcp" else ""
        latency = latencies_ms[i % len(latencies_ms)]
        fleet.append(SyntheticAirline(code, kind, mapping, f"http://{host}:{port}{path}", latency))
    return fleet


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigurationError(f"cannot write {value!r} to the synthetic registry")


def _toml_tables(prefix: str, table: dict[str, Any]) -> list[str]:
    """A parsed TOML table back as text: its values under ``[prefix]``, then its sub-tables."""
    values = [f"{k} = {_toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    lines = [f"[{prefix}]", *values, ""] if values else []
    for key, sub in table.items():
        if isinstance(sub, dict):
            lines += _toml_tables(f"{prefix}.{key}", sub)
    return lines


def _pin_mcp_airlines(pins_file: Path, fleet: Sequence[FleetAirline], real: AirlineRegistry) -> None:
    """Pin each synthetic MCP airline to the tools already approved for the real airline its simulator
    stands in for (same mapping, same simulated server): otherwise every one would be quarantined."""
    book = PinBook(pins_file)
    if pins_file.exists():
        pins_file.unlink()
    for airline in fleet:
        if airline.kind != "mcp":
            continue
        model = next((a for a in real if a.kind == "mcp" and a.mapping == airline.mapping), None)
        pin = PinBook(model.mcp_pins or DEFAULT_PINS_FILE).get(model.code) if model is not None else None
        if pin is None:
            raise ConfigurationError(
                f"no approved MCP pin to copy for synthetic airline {airline.code} (mapping {airline.mapping}): "
                "approve the real one first with `jetbridge airlines approve <IATA>`"
            )
        book.approve(airline.code, list(pin.tools), endpoint=airline.endpoint)


def write_registry(
    path: Path, fleet: Sequence[FleetAirline], *, defaults_from: Path, header: str | None = None
) -> Path:
    """Write the fleet as an airline registry with ``defaults_from``'s ``[defaults]``, each airline flying its
    ``routes`` and nothing else; checks it reads back."""
    try:
        defaults = tomllib.loads(defaults_from.read_text(encoding="utf-8")).get("defaults", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"airline registry {defaults_from}: {exc}") from exc
    route = f"{ROUTE[0]}-{ROUTE[1]}"
    pins_file = path.with_name(f"{path.stem}-mcp-pins.toml")
    # Every synthetic airline is a simulator on this machine: its host is listed, or the registry refuses it.
    hosts = sorted({httpx.URL(airline.endpoint).host for airline in fleet})
    lines = [
        header
        or f"# Written by `jetbridge bench --airline-counts`: {len(fleet)} synthetic airlines, all flying {route}.",
        f"# [defaults] copied from {defaults_from}. Format: connectors/airlines.toml.",
        "",
        f"mcp_pins = {_toml_value(pins_file.name)}",
        f"private_endpoints_allowed = {_toml_value(hosts)}",
        "",
        *_toml_tables("defaults", defaults),
    ]
    for airline in fleet:
        entry: dict[str, Any] = {
            "name": airline.name,
            "kind": airline.kind,
            "endpoint": airline.endpoint,
            "credential": f"JB_CREDENTIAL_{airline.code}",
        }
        if airline.mapping is not None:
            entry["mapping"] = airline.mapping
        # Not the shipped OpenFlights subset: the fleet's own routes are all they fly.
        extra = [f"{origin}-{destination}" for origin, destination in sorted(airline.routes)]
        entry |= {"routes": "none", "extra_routes": extra, "timeout_ms": 2500, "concurrency": 16}
        lines += _toml_tables(f"airlines.{airline.code}", entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    _pin_mcp_airlines(pins_file, fleet, load_registry(defaults_from))
    registry = load_registry(path)
    written = {airline.code: airline.routes for airline in fleet}
    wrong = [a.code for a in registry if a.routes != written.get(a.code)]
    if len(registry) != len(fleet) or wrong:
        raise ConfigurationError(f"synthetic registry {path} does not read back as written (routes of {wrong})")
    return path
