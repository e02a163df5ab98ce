"""The airline registry: which airlines exist, how to reach them, which routes they serve, and how they are
protected from us (retry policy per operation, circuit breaker, rate limit).

One TOML file (`connectors/airlines.toml` by default) is the whole registry; see its header for fields. Its
``[defaults]`` table gives every airline's protection; an airline's own tables override it field by field.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr

from jetbridge.errors import ConfigurationError, JetbridgeError
from jetbridge.reference import airports, routes_by_airline

__all__ = [
    "DEFAULT_REGISTRY",
    "Airline",
    "AirlineRegistry",
    "BreakerPolicy",
    "RateLimit",
    "RetryPolicy",
    "load_registry",
]

DEFAULT_REGISTRY = Path(__file__).resolve().parent.parent / "connectors" / "airlines.toml"
_KINDS = frozenset({"ndc", "rest", "mcp"})
# Operations an airline call can be; each has its own retry policy (order operations come with booking).
OPERATIONS = frozenset({"search"})


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise ConfigurationError(what)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one operation is retried (the Retry pattern's policy, as data): exponential backoff with jitter,
    a cap on attempts, and codes never retried even when the error tree calls them retriable."""

    initial_interval_ms: int = 100
    multiplier: float = 2.0
    max_interval_ms: int = 1000
    max_attempts: int = 2
    # Each wait is the backoff times a random factor in [1 - jitter, 1 + jitter], so retries of many calls
    # that failed together do not reach the airline together.
    jitter: float = 0.2
    # An attempt starts only with at least this much of the request's budget left: one that cannot get an
    # answer back in time only loads the airline.
    min_attempt_ms: int = 150
    non_retriable: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        _check(self.initial_interval_ms >= 0, "retry: initial_interval_ms must be >= 0")
        _check(self.multiplier >= 1.0, "retry: multiplier must be >= 1")
        _check(self.max_interval_ms >= self.initial_interval_ms, "retry: max_interval_ms must be >= initial")
        _check(self.max_attempts >= 1, "retry: max_attempts must be >= 1")
        _check(0.0 <= self.jitter <= 1.0, "retry: jitter must be between 0 and 1")
        _check(self.min_attempt_ms >= 0, "retry: min_attempt_ms must be >= 0")

    def retries(self, error: JetbridgeError) -> bool:
        """Whether ``error`` may be tried again: the error tree says retriable and the policy does not object."""
        return error.retriable and error.code not in self.non_retriable

    def backoff_s(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1 = the second attempt), before jitter."""
        wait_ms = self.initial_interval_ms * self.multiplier ** max(0, retry - 1)
        return min(wait_ms, self.max_interval_ms) / 1000


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When an airline's Circuit Breaker opens and how it closes again.

    Over the calls of the last ``window_s`` (at least ``min_calls`` of them), a failure rate or a slow-call
    rate at or over its threshold opens it for ``open_s``; then ``half_open_calls`` probes decide: all good
    closes it, one bad opens it again. Codes in ``ignored_codes`` are answers, not failures.
    """

    window_s: float = 10.0
    min_calls: int = 8
    failure_rate: float = 0.5
    slow_call_ms: int = 2000
    slow_call_rate: float = 0.5
    open_s: float = 10.0
    half_open_calls: int = 2
    ignored_codes: frozenset[str] = frozenset({"airline_rejected", "airline_throttled"})

    def __post_init__(self) -> None:
        _check(self.window_s > 0, "breaker: window_s must be > 0")
        _check(self.min_calls >= 1, "breaker: min_calls must be >= 1")
        _check(0.0 < self.failure_rate <= 1.0, "breaker: failure_rate must be in (0, 1]")
        _check(self.slow_call_ms > 0, "breaker: slow_call_ms must be > 0")
        _check(0.0 < self.slow_call_rate <= 1.0, "breaker: slow_call_rate must be in (0, 1]")
        _check(self.open_s > 0, "breaker: open_s must be > 0")
        _check(self.half_open_calls >= 1, "breaker: half_open_calls must be >= 1")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The Throttler of one airline credential: a token bucket refilled at ``rate_per_s``, holding ``burst``."""

    rate_per_s: float = 100.0
    burst: int = 50

    def __post_init__(self) -> None:
        _check(self.rate_per_s > 0, "rate_limit: rate_per_s must be > 0")
        _check(self.burst >= 1, "rate_limit: burst must be >= 1")


def _default_retry() -> dict[str, RetryPolicy]:
    return {op: RetryPolicy() for op in OPERATIONS}


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
    retry: Mapping[str, RetryPolicy] = field(default_factory=_default_retry, repr=False, hash=False)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy, repr=False)
    rate_limit: RateLimit = field(default_factory=RateLimit, repr=False)

    def serves(self, origin: str, destination: str) -> bool:
        return (origin, destination) in self.routes

    def retry_policy(self, operation: str) -> RetryPolicy:
        """The retry policy of ``operation`` (``search``, later the order operations)."""
        return self.retry.get(operation) or RetryPolicy()

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


P = TypeVar("P", RetryPolicy, BreakerPolicy, RateLimit)


def _policy(table: Any, base: P, where: str) -> P:
    """``base`` with the fields ``table`` sets, each checked against the type of its default."""
    if not isinstance(table, dict):
        raise ConfigurationError(f"{where}: expected a table")
    known = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigurationError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for name, value in table.items():
        default = getattr(base, name)
        if isinstance(default, frozenset):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            values[name] = frozenset(value) if ok else None
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
            values[name] = value
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            values[name] = float(value) if ok else None
        if not ok:
            raise ConfigurationError(f"{where}.{name}: expected {type(default).__name__}, got {value!r}")
    try:
        return dataclasses.replace(base, **values)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc.message}") from exc


def _retry_policies(table: Any, base: Mapping[str, RetryPolicy], where: str) -> dict[str, RetryPolicy]:
    if not isinstance(table, dict):
        raise ConfigurationError(f"{where}: expected a table of operations")
    policies = dict(base)
    for operation, entry in table.items():
        if operation not in OPERATIONS:
            raise ConfigurationError(f"{where}: unknown operation {operation!r}; known: {sorted(OPERATIONS)}")
        policies[operation] = _policy(entry, base.get(operation) or RetryPolicy(), f"{where}.{operation}")
    return policies


def load_registry(path: Path | None = None) -> AirlineRegistry:
    """Read and check the registry file."""
    path = path or DEFAULT_REGISTRY
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"airline registry {path}: {exc}") from exc
    defaults = data.get("defaults", {})
    retry = _retry_policies(defaults.get("retry", {}), _default_retry(), "defaults.retry")
    breaker = _policy(defaults.get("breaker", {}), BreakerPolicy(), "defaults.breaker")
    rate_limit = _policy(defaults.get("rate_limit", {}), RateLimit(), "defaults.rate_limit")
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
                    retry=_retry_policies(entry.get("retry", {}), retry, f"airline {code}: retry"),
                    breaker=_policy(entry.get("breaker", {}), breaker, f"airline {code}: breaker"),
                    rate_limit=_policy(entry.get("rate_limit", {}), rate_limit, f"airline {code}: rate_limit"),
                )
            )
        except KeyError as exc:
            raise ConfigurationError(f"airline {code}: missing field {exc}") from exc
    return AirlineRegistry(airlines)
