"""The airline registry: which airlines exist, how to reach them, which routes they serve.

One TOML file (`connectors/airlines.toml` by default) is the whole registry; see its header for fields.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from jetbridge.errors import ConfigurationError
from jetbridge.reference import airports, routes_by_airline

__all__ = ["DEFAULT_REGISTRY", "Airline", "AirlineRegistry", "load_registry"]

DEFAULT_REGISTRY = Path(__file__).resolve().parent.parent / "connectors" / "airlines.toml"
_KINDS = frozenset({"ndc", "rest", "mcp"})


@dataclass(frozen=True, slots=True)
class Airline:
    code: str
    name: str
    kind: str
    endpoint: str
    credential: str | None = None
    mapping: str | None = None
    timeout_ms: int = 2500
    concurrency: int = 16
    enabled: bool = True
    routes: frozenset[tuple[str, str]] = field(default_factory=frozenset, repr=False)

    def serves(self, origin: str, destination: str) -> bool:
        return (origin, destination) in self.routes

    def api_key(self) -> SecretStr | None:
        """The credential's value from the environment; only connector processes ask for it."""
        if self.credential is None:
            return None
        value = os.environ.get(self.credential)
        return SecretStr(value) if value else None

    @property
    def calls_topic(self) -> str:
        return f"jb.airline.{self.code}.calls.v1"


class AirlineRegistry:
    """Airlines by IATA code, in registry order."""

    def __init__(self, airlines: list[Airline]) -> None:
        self._by_code = {a.code: a for a in airlines}

    def __iter__(self) -> Any:
        return iter(self._by_code.values())

    def __len__(self) -> int:
        return len(self._by_code)

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def get(self, code: str) -> Airline | None:
        return self._by_code.get(code)

    def __getitem__(self, code: str) -> Airline:
        return self._by_code[code]

    def codes(self) -> list[str]:
        return list(self._by_code)

    def serving(self, origin: str, destination: str) -> list[Airline]:
        """Enabled airlines that fly origin→destination non-stop."""
        return [a for a in self._by_code.values() if a.enabled and a.serves(origin, destination)]


def _routes_for(code: str, entry: dict[str, Any]) -> frozenset[tuple[str, str]]:
    pairs: set[tuple[str, str]] = set()
    if entry.get("routes", "openflights") == "openflights":
        pairs |= routes_by_airline().get(code, frozenset())
    known = airports()
    for item in entry.get("extra_routes", []):
        origin, _, destination = str(item).partition("-")
        if origin not in known or destination not in known:
            raise ConfigurationError(f"airline {code}: extra route {item!r} names an unknown airport")
        pairs.add((origin, destination))
    return frozenset(pairs)


def load_registry(path: Path | None = None) -> AirlineRegistry:
    """Read and check the registry file."""
    path = path or DEFAULT_REGISTRY
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"airline registry {path}: {exc}") from exc
    airlines: list[Airline] = []
    for code, entry in data.get("airlines", {}).items():
        if len(code) != 2 or not code.isalnum() or code.upper() != code:
            raise ConfigurationError(f"airline registry {path}: {code!r} is not an IATA airline code")
        kind = entry.get("kind")
        if kind not in _KINDS:
            raise ConfigurationError(f"airline {code}: kind must be one of {sorted(_KINDS)}, got {kind!r}")
        if kind == "rest" and not entry.get("mapping"):
            raise ConfigurationError(f"airline {code}: a rest airline needs a mapping module")
        try:
            airlines.append(
                Airline(
                    code=code,
                    name=str(entry["name"]),
                    kind=kind,
                    endpoint=str(entry["endpoint"]),
                    credential=entry.get("credential"),
                    mapping=entry.get("mapping"),
                    timeout_ms=int(entry.get("timeout_ms", 2500)),
                    concurrency=int(entry.get("concurrency", 16)),
                    enabled=bool(entry.get("enabled", True)),
                    routes=_routes_for(code, entry),
                )
            )
        except KeyError as exc:
            raise ConfigurationError(f"airline {code}: missing field {exc}") from exc
    return AirlineRegistry(airlines)
