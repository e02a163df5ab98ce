"""The airline registry: which airlines exist, how to reach them, which routes they serve, and how they are
protected from us (retry policy per operation, circuit breaker, rate limit).

One TOML file (`connectors/airlines.toml` by default) is the whole registry; its header describes every field.
Its ``[defaults]`` table gives every airline's protection; an airline's own tables override it field by field.
Every table is read by a strict model: a field it does not know (a typo such as ``latncy_ms``) or a value that
cannot work stops the process at load with a `ConfigurationError` naming the file, the table and the field.
So does an endpoint that is not public (loopback, private, link-local, the cloud metadata address, ...) unless
the file's ``private_endpoints_allowed`` lists it (`jetbridge.endpoints`); the connector workers judge the
addresses a name resolves to as well.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from jetbridge.config_files import checked
from jetbridge.endpoints import PrivateEndpoints, judge_endpoint
from jetbridge.errors import ConfigurationError, JetbridgeError
from jetbridge.reference import airports, routes_by_airline

__all__ = [
    "DEFAULT_REGISTRY",
    "OPERATIONS",
    "ORDER_CREATE",
    "Airline",
    "AirlineRegistry",
    "BreakerPolicy",
    "CachePolicy",
    "ConnectorKind",
    "RateLimit",
    "RetryPolicy",
    "load_registry",
]

DEFAULT_REGISTRY = Path(__file__).resolve().parent.parent / "connectors" / "airlines.toml"
# Operations an airline call can be; each has its own retry policy. ``order``: price, find, retrieve and cancel
# an order (each safe to repeat); ``order_create``: one attempt to create an order, never retried blindly (the
# order worker looks the order up after an unknown outcome before it creates again, connectors/order_worker.py).
ORDER_CREATE = "order_create"
OPERATIONS = frozenset({"search", "order", ORDER_CREATE})
DEFAULT_TIMEOUT_MS = 2500
DEFAULT_CONCURRENCY = 16


class ConnectorKind(StrEnum):
    """How Jetbridge talks to an airline system: the one list of connector kinds.

    Each kind is a module in `connectors/kinds/` that registers its factory under it (`connectors/base.py`);
    `tests/unit/test_connector_kinds.py` checks that none is missing. A StrEnum, so ``"ndc"`` is ``NDC``.
    """

    NDC = "ndc"  # IATA NDC (XML over HTTP)
    REST = "rest"  # a proprietary REST API, mapped by a module in connectors/airlines/
    MCP = "mcp"  # the airline's own MCP server


class _Strict(BaseModel):
    """A table of the registry file: unknown fields refused, no silent conversions (``"3"`` is not 3)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RetryPolicy(_Strict):
    """How one operation is retried (the Retry pattern's policy, as data): exponential backoff with jitter,
    a cap on attempts, and codes never retried even when the error tree calls them retriable."""

    initial_interval_ms: int = Field(default=100, ge=0)
    multiplier: float = Field(default=2.0, ge=1.0)
    max_interval_ms: int = Field(default=1000, ge=0)
    max_attempts: int = Field(default=2, ge=1)
    # Each wait is the backoff times a random factor in [1 - jitter, 1 + jitter], so retries of many calls
    # that failed together do not reach the airline together.
    jitter: float = Field(default=0.2, ge=0.0, le=1.0)
    # An attempt starts only with at least this much of the request's budget left: one that cannot get an
    # answer back in time only loads the airline.
    min_attempt_ms: int = Field(default=150, ge=0)
    # A TOML list of error codes.
    non_retriable: frozenset[str] = Field(default=frozenset(), strict=False)

    @model_validator(mode="after")
    def _intervals_in_order(self) -> Self:
        if self.max_interval_ms < self.initial_interval_ms:
            raise ValueError("max_interval_ms must be >= initial_interval_ms")
        return self

    def retries(self, error: JetbridgeError) -> bool:
        """Whether ``error`` may be tried again: the error tree says retriable and the policy does not object."""
        return error.retriable and error.code not in self.non_retriable

    def backoff_s(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1 = the second attempt), before jitter."""
        wait_ms = self.initial_interval_ms * self.multiplier ** max(0, retry - 1)
        return min(wait_ms, self.max_interval_ms) / 1000


class BreakerPolicy(_Strict):
    """When an airline's Circuit Breaker opens and how it closes again.

    Over the calls of the last ``window_s`` (at least ``min_calls`` of them), a failure rate or a slow-call
    rate at or over its threshold opens it for ``open_s``; then ``half_open_calls`` probes decide: all good
    closes it, one bad opens it again. Codes in ``ignored_codes`` are answers, not failures.
    """

    window_s: float = Field(default=10.0, gt=0)
    min_calls: int = Field(default=8, ge=1)
    failure_rate: float = Field(default=0.5, gt=0.0, le=1.0)
    slow_call_ms: int = Field(default=2000, gt=0)
    slow_call_rate: float = Field(default=0.5, gt=0.0, le=1.0)
    open_s: float = Field(default=10.0, gt=0)
    half_open_calls: int = Field(default=2, ge=1)
    ignored_codes: frozenset[str] = Field(default=frozenset({"airline_rejected", "airline_throttled"}), strict=False)


class RateLimit(_Strict):
    """The Throttler of one airline credential: a token bucket refilled at ``rate_per_s``, holding ``burst``."""

    rate_per_s: float = Field(default=100.0, gt=0)
    burst: int = Field(default=50, ge=1)


class CachePolicy(_Strict):
    """How long an airline's answers may be reused from the offer cache (jetbridge/offer_cache.py)."""

    # Seconds an answer is fresh (served without calling the airline), never past its first offer's expiry;
    # 0: never fresh (every search calls the airline), kept only to answer stale when the airline cannot.
    fresh_s: float = Field(default=60.0, ge=0, le=86_400)
    # Whether its stale answers (past fresh, before their offers expire) stand in when it cannot answer live.
    serve_stale: bool = True


# A topic's partitions can be added, never removed: a typo of 1200 for 12 would stay for good.
MAX_AIRLINE_PARTITIONS = 256


def _default_retry() -> dict[str, RetryPolicy]:
    return {op: RetryPolicy() for op in OPERATIONS} | {ORDER_CREATE: RetryPolicy(max_attempts=1)}


@dataclass(frozen=True, slots=True)
class Airline:
    """One airline as the processes use it: its registry entry with routes resolved and policies merged."""

    code: str
    name: str
    # A ConnectorKind for every airline the registry loads (build_connector refuses any other); a plain
    # string here so test doubles can name their own.
    kind: str
    endpoint: str
    credential: str | None = None
    mapping: str | None = None
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    concurrency: int = DEFAULT_CONCURRENCY
    enabled: bool = True
    # Partitions of its calls topic and of its order-calls topic; None: half of JB_TOPIC_PARTITIONS (the capacity
    # plan gives the busiest airlines more than the others: docs/capacity-plan.md).
    calls_partitions: int | None = None
    order_partitions: int | None = None
    routes: frozenset[tuple[str, str]] = field(default_factory=frozenset, repr=False)
    retry: Mapping[str, RetryPolicy] = field(default_factory=_default_retry, repr=False, hash=False)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy, repr=False)
    rate_limit: RateLimit = field(default_factory=RateLimit, repr=False)
    cache: CachePolicy = field(default_factory=CachePolicy, repr=False)
    # Where its MCP tools' approved pin is kept (kind mcp only); None: connectors/mcp_pins.toml.
    mcp_pins: Path | None = field(default=None, repr=False)
    # The non-public hosts the registry lets an endpoint be (its private_endpoints_allowed); none by default.
    private_endpoints: PrivateEndpoints = field(default_factory=PrivateEndpoints, repr=False)

    def serves(self, origin: str, destination: str) -> bool:
        return (origin, destination) in self.routes

    def retry_policy(self, operation: str) -> RetryPolicy:
        """The retry policy of ``operation`` (one of ``OPERATIONS``)."""
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

    def __iter__(self) -> Iterator[Airline]:
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


# The registry file as written. Policy tables stay plain tables here: each is an override of [defaults],
# checked once merged with it (against RetryPolicy, BreakerPolicy or RateLimit).


class _AirlineEntry(_Strict):
    """One ``[airlines.<IATA>]`` table."""

    name: str
    kind: ConnectorKind = Field(strict=False)  # a TOML string, read as its ConnectorKind
    endpoint: str
    credential: str | None = None
    mapping: str | None = None
    timeout_ms: int = Field(default=DEFAULT_TIMEOUT_MS, gt=0)
    concurrency: int = Field(default=DEFAULT_CONCURRENCY, ge=1)
    enabled: bool = True
    calls_partitions: int | None = Field(default=None, ge=1, le=MAX_AIRLINE_PARTITIONS)
    order_partitions: int | None = Field(default=None, ge=1, le=MAX_AIRLINE_PARTITIONS)
    routes: Literal["openflights", "none"] = "openflights"
    extra_routes: list[str] = Field(default_factory=list)
    retry: dict[str, dict[str, Any]] = Field(default_factory=dict)
    breaker: dict[str, Any] = Field(default_factory=dict)
    rate_limit: dict[str, Any] = Field(default_factory=dict)
    cache: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _rest_has_a_mapping(self) -> Self:
        if self.kind is ConnectorKind.REST and not self.mapping:
            raise ValueError("a rest airline needs mapping, the module in connectors/airlines/ that maps its API")
        return self


class _Defaults(_Strict):
    """The ``[defaults]`` table: every airline's protection and cache policy."""

    retry: dict[str, dict[str, Any]] = Field(default_factory=dict)
    breaker: dict[str, Any] = Field(default_factory=dict)
    rate_limit: dict[str, Any] = Field(default_factory=dict)
    cache: dict[str, Any] = Field(default_factory=dict)


class _RegistryFile(_Strict):
    """The file: its two tables, each read by its own model (so an error names the table it is in)."""

    defaults: dict[str, Any] = Field(default_factory=dict)
    airlines: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # The approved tools of the airlines' own MCP servers (connectors/pins.py), relative to this file;
    # unset: connectors/mcp_pins.toml.
    mcp_pins: str | None = None
    # Hostnames, IP addresses and CIDR networks an endpoint may be although they are not public
    # (jetbridge/endpoints.py); unset: none, every endpoint must be public.
    private_endpoints_allowed: list[str] = Field(default_factory=list)


M = TypeVar("M", bound=BaseModel)
P = TypeVar("P", RetryPolicy, BreakerPolicy, RateLimit, CachePolicy)


def _checked(model: type[M], data: object, path: Path, table: str) -> M:
    return checked(model, data, path=path, table=table, what="airline registry", guide="connectors/airlines.toml")


def _policy(base: P, overrides: Mapping[str, Any], path: Path, table: str) -> P:
    """``base`` with the fields ``overrides`` sets, the result checked whole (e.g. intervals in order)."""
    return _checked(type(base), base.model_dump() | dict(overrides), path, table)


def _retry_policies(
    tables: Mapping[str, Mapping[str, Any]], base: Mapping[str, RetryPolicy], path: Path, table: str
) -> dict[str, RetryPolicy]:
    policies = dict(base)
    for operation, overrides in tables.items():
        if operation not in OPERATIONS:
            raise ConfigurationError(
                f"airline registry {path}: [{table}.{operation}] is an unknown operation; "
                f"known: {', '.join(sorted(OPERATIONS))}"
            )
        policies[operation] = _policy(base.get(operation) or RetryPolicy(), overrides, path, f"{table}.{operation}")
        if operation == ORDER_CREATE and policies[operation].max_attempts != 1:
            raise ConfigurationError(
                f"airline registry {path}: [{table}.{operation}] max_attempts must be 1: a create is not repeated "
                "before the order is looked up (the order worker does that)"
            )
    return policies


def _routes(code: str, entry: _AirlineEntry, path: Path) -> frozenset[tuple[str, str]]:
    pairs: set[tuple[str, str]] = set()
    if entry.routes == "openflights":
        pairs |= routes_by_airline().get(code, frozenset())
    known = airports()
    for item in entry.extra_routes:
        origin, _, destination = item.partition("-")
        if origin not in known or destination not in known:
            raise ConfigurationError(
                f"airline registry {path}: [airlines.{code}] extra_routes: {item!r} names an unknown airport "
                "(write routes as ORIGIN-DESTINATION IATA airport codes, e.g. LHR-JFK)"
            )
        pairs.add((origin, destination))
    return frozenset(pairs)


def _allowed(entries: list[str], path: Path) -> PrivateEndpoints:
    try:
        return PrivateEndpoints.parse(entries)
    except ValueError as exc:
        raise ConfigurationError(
            f"airline registry {path}: private_endpoints_allowed: {exc} (each entry is a hostname such as "
            '"sim.internal", an IP address such as "127.0.0.1", or a CIDR network such as "10.20.0.0/16")'
        ) from None


def _endpoint(code: str, endpoint: str, allowed: PrivateEndpoints, path: Path) -> str:
    """``endpoint`` when Jetbridge may call it by what is written; a ConfigurationError naming the airline and
    the host, and what to list, when it may not (names are resolved and judged again by the connector workers)."""
    where = f"airline registry {path}: [airlines.{code}] endpoint {endpoint!r}"
    try:
        refusal = judge_endpoint(endpoint, allowed)
    except ValueError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
    if refusal is not None:
        raise ConfigurationError(f"{where} refused: {refusal}")
    return endpoint


def _is_airline_code(code: str) -> bool:
    return len(code) == 2 and code.isalnum() and code.upper() == code


def load_registry(path: Path | None = None) -> AirlineRegistry:
    """Read and check the registry file."""
    path = path or DEFAULT_REGISTRY
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"airline registry {path}: {exc}") from exc
    registry = _checked(_RegistryFile, data, path, "")
    defaults = _checked(_Defaults, registry.defaults, path, "defaults")
    retry = _retry_policies(defaults.retry, _default_retry(), path, "defaults.retry")
    breaker = _policy(BreakerPolicy(), defaults.breaker, path, "defaults.breaker")
    rate_limit = _policy(RateLimit(), defaults.rate_limit, path, "defaults.rate_limit")
    cache = _policy(CachePolicy(), defaults.cache, path, "defaults.cache")
    pins = (path.parent / registry.mcp_pins).resolve() if registry.mcp_pins else None
    allowed = _allowed(registry.private_endpoints_allowed, path)
    airlines: list[Airline] = []
    for code, table in registry.airlines.items():
        if not _is_airline_code(code):
            raise ConfigurationError(
                f"airline registry {path}: [airlines.{code}]: {code!r} is not an IATA airline code (two capital "
                "letters or digits)"
            )
        where = f"airlines.{code}"
        entry = _checked(_AirlineEntry, table, path, where)
        airlines.append(
            Airline(
                code=code,
                name=entry.name,
                kind=entry.kind,
                endpoint=_endpoint(code, entry.endpoint, allowed, path),
                credential=entry.credential,
                mapping=entry.mapping,
                timeout_ms=entry.timeout_ms,
                concurrency=entry.concurrency,
                enabled=entry.enabled,
                calls_partitions=entry.calls_partitions,
                order_partitions=entry.order_partitions,
                routes=_routes(code, entry, path),
                retry=_retry_policies(entry.retry, retry, path, f"{where}.retry"),
                breaker=_policy(breaker, entry.breaker, path, f"{where}.breaker"),
                rate_limit=_policy(rate_limit, entry.rate_limit, path, f"{where}.rate_limit"),
                cache=_policy(cache, entry.cache, path, f"{where}.cache"),
                mcp_pins=pins,
                private_endpoints=allowed,
            )
        )
    return AirlineRegistry(airlines)
