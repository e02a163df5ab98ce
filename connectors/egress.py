"""Egress control of the connector workers: an airline is called only at addresses the registry allows.

The registry refuses at load an endpoint whose host is written as a non-public address or name
(`jetbridge.endpoints`). A name can still resolve to one: a zone pointing at an internal host, or DNS rebinding,
where a public name's answer turns into an internal address after it was looked at. So the worker judges the
addresses too, with the same rules:

- `EndpointGate`: when the worker starts, and every ``recheck_s`` after, the airline's host is resolved
  (getaddrinfo through asyncio) and every address judged. While one is refused the airline is quarantined in
  this worker: each call is answered `AirlineQuarantined` at once, with no rate-limit token, breaker permit or
  attempt spent, as an MCP airline whose tools differ from the pin is (`connectors/pins.py`), and one error
  line says which host, which address and what to list. A check that finds only allowed addresses lifts it.
  A check that changes the refusal calls the gate's ``on_change`` (the worker sets `jb_airline_quarantined`
  and publishes it on ``jb.airline-health.v1``, so list_airlines shows the airline ``quarantined``).
- `guarded_transport` (the HTTP kinds' shared client) and `guarded_mcp_transport` (the MCP kind's own httpx2
  pool): every new connection resolves the host itself, judges every address and connects to a judged address,
  not to the name again, so the answer cannot change between the check and the connect. A refused connection
  fails as a connection error (logged), whatever happened since the last check.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpcore
import httpcore2
import httpx
import httpx2

from jetbridge.airlines import Airline
from jetbridge.endpoints import Resolver, endpoint_host, judge_addresses, judge_endpoint, system_resolver
from jetbridge.errors import AirlineQuarantined
from jetbridge.http import RecyclingTransport
from jetbridge.log import get_logger

__all__ = ["RECHECK_S", "EndpointGate", "guarded_mcp_transport", "guarded_transport"]

log = get_logger(__name__)

# How often a worker resolves its airline's host again: a refusal is lifted, or a new one found, this soon.
RECHECK_S = 30.0
# A lookup that takes longer is given up (the connection-time check judges the name again anyway).
RESOLVE_TIMEOUT_S = 5.0
# One error line per refused connection would be one per call; the same refusal is logged again after this long.
_LOG_AGAIN_S = 60.0


def _port(endpoint: str) -> int:
    url = httpx.URL(endpoint)
    return url.port or (443 if url.scheme == "https" else 80)


class EndpointGate:
    """One airline's endpoint in one worker: its host resolved and judged at start and every ``recheck_s``;
    while refused, `refusal` is the answer every call gets instead of being made."""

    def __init__(
        self,
        airline: Airline,
        *,
        resolver: Resolver = system_resolver,
        recheck_s: float = RECHECK_S,
        resolve_timeout_s: float = RESOLVE_TIMEOUT_S,
    ) -> None:
        self.airline = airline
        self.recheck_s = recheck_s
        self._resolver = resolver
        self._resolve_timeout_s = resolve_timeout_s
        self.reason: str | None = None  # why it is refused; None: it may be called
        self.addresses: list[str] = []
        self.checked_at: datetime | None = None
        # Called after a check that refused the endpoint, allowed it again, or refused it for another reason.
        self.on_change: Callable[[], None] | None = None

    async def check(self) -> str | None:
        """Resolve and judge the host now; returns why the airline is refused, or None. Never raises: a host
        that does not resolve leaves the state as it was (each connection judges what it resolves to)."""
        airline = self.airline
        before = self.reason
        try:
            host = endpoint_host(airline.endpoint)
            refusal = judge_endpoint(airline.endpoint, airline.private_endpoints)
            if refusal is None:
                self.addresses, refusal = await asyncio.wait_for(
                    judge_addresses(host, _port(airline.endpoint), airline.private_endpoints, self._resolver),
                    self._resolve_timeout_s,
                )
        except ValueError as exc:  # an endpoint the registry would have refused (an Airline built by hand)
            self._refuse(str(exc))
        except (OSError, TimeoutError) as exc:
            log.warning(
                "airline endpoint does not resolve now; each connection judges its addresses",
                airline=airline.code,
                endpoint=airline.endpoint,
                error=str(exc) or type(exc).__name__,
            )
        else:
            if refusal is not None:
                self._refuse(str(refusal))
            elif self.reason is not None:
                self.reason = None
                log.warning(
                    "airline endpoint allowed again: it resolves only to allowed addresses",
                    airline=airline.code,
                    host=host,
                    addresses=self.addresses,
                )
        self.checked_at = datetime.now(UTC)
        if self.reason != before and self.on_change is not None:
            self.on_change()
        return self.reason

    async def watch(self) -> None:
        """Check again every ``recheck_s``, until cancelled."""
        while True:
            await asyncio.sleep(self.recheck_s)
            await self.check()

    def refusal(self) -> AirlineQuarantined | None:
        """The answer a call gets at once, with no I/O, while the endpoint is refused; None: call it."""
        if self.reason is None:
            return None
        return AirlineQuarantined(f"{self.airline.code}: endpoint refused, not called: {self.reason}")

    def state(self) -> dict[str, Any]:
        """What the worker's health shows of its endpoint."""
        return {
            "refused": self.reason,
            "addresses": list(self.addresses),
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
        }

    def _refuse(self, reason: str) -> None:
        if reason != self.reason:
            log.error(
                "airline endpoint refused: not called until the registry allows it",
                airline=self.airline.code,
                endpoint=self.airline.endpoint,
                addresses=self.addresses,
                reason=reason,
            )
        self.reason = reason


class _EndpointRefused(Exception):
    """A connection not made: the host resolves to an address the registry does not allow."""


class _ConnectionJudge:
    """What a guarded connection asks before it connects: the addresses of the host it may connect to."""

    def __init__(self, airline: Airline, resolver: Resolver) -> None:
        self.airline = airline
        self._resolver = resolver
        self._logged: tuple[str, float] | None = None

    async def addresses(self, host: str, port: int, timeout_s: float | None) -> list[str]:
        async with asyncio.timeout(timeout_s):
            addresses, refusal = await judge_addresses(host, port, self.airline.private_endpoints, self._resolver)
        if refusal is None:
            return addresses
        reason = str(refusal)
        now = time.monotonic()
        if self._logged is None or self._logged[0] != reason or now - self._logged[1] >= _LOG_AGAIN_S:
            self._logged = (reason, now)
            log.error(
                "connection to airline refused: its host resolves to an address the registry does not allow",
                airline=self.airline.code,
                host=host,
                addresses=addresses,
                reason=reason,
            )
        raise _EndpointRefused(f"{self.airline.code}: connection refused: {reason}")


S = TypeVar("S")


async def _connect(
    judge: _ConnectionJudge,
    host: str,
    port: int,
    timeout_s: float | None,
    connect: Callable[[str], Awaitable[S]],
    errors: tuple[type[Exception], type[Exception]],
) -> S:
    """Connect to the first judged address of ``host`` that accepts; ``errors`` are the HTTP core's
    (ConnectError, ConnectTimeout), so the client reports a refusal as any failed connection."""
    connect_error, connect_timeout = errors
    try:
        addresses = await judge.addresses(host, port, timeout_s)
    except TimeoutError as exc:
        raise connect_timeout(f"{host}: no address within {timeout_s} s") from exc
    except (OSError, ValueError, _EndpointRefused) as exc:
        raise connect_error(str(exc) or type(exc).__name__) from exc
    failed: Exception | None = None
    for address in addresses:
        try:
            return await connect(address)
        except connect_error as exc:
            failed = exc
    assert failed is not None  # judge_addresses returns at least one address
    raise failed


class _HttpcoreGuard(httpcore.AsyncNetworkBackend):
    """httpcore's network backend (httpx: the NDC and REST kinds), connecting only to judged addresses."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend, judge: _ConnectionJudge) -> None:
        self._inner = inner
        self._judge = judge

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature, overridden
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        async def to(address: str) -> httpcore.AsyncNetworkStream:
            return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)

        return await _connect(self._judge, host, port, timeout, to, (httpcore.ConnectError, httpcore.ConnectTimeout))

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature, overridden
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _Httpcore2Guard(httpcore2.AsyncNetworkBackend):
    """httpcore2's network backend (httpx2: the MCP kind), connecting only to judged addresses."""

    def __init__(self, inner: httpcore2.AsyncNetworkBackend, judge: _ConnectionJudge) -> None:
        self._inner = inner
        self._judge = judge

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature, overridden
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        async def to(address: str) -> httpcore2.AsyncNetworkStream:
            return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)

        return await _connect(self._judge, host, port, timeout, to, (httpcore2.ConnectError, httpcore2.ConnectTimeout))

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature, overridden
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        return await self._inner.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_transport(airline: Airline, *, resolver: Resolver = system_resolver) -> httpx.AsyncBaseTransport:
    """The transport of an HTTP airline's client (`build_http_client(transport=...)`): the pool it would have
    anyway (the airline's concurrency, recycled when stuck), connecting only to judged addresses."""
    limits = httpx.Limits(max_connections=airline.concurrency, max_keepalive_connections=airline.concurrency)
    judge = _ConnectionJudge(airline, resolver)

    def pool() -> httpx.AsyncHTTPTransport:
        transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
        # httpx takes no network backend; its httpcore pool reads this attribute for every new connection
        # (tests/unit/test_egress.py connects through it, so a version that changes this fails there).
        core = transport._pool
        assert isinstance(core, httpcore.AsyncConnectionPool)
        core._network_backend = _HttpcoreGuard(core._network_backend, judge)
        return transport

    return RecyclingTransport(pool)


def guarded_mcp_transport(airline: Airline, *, resolver: Resolver = system_resolver) -> httpx2.AsyncHTTPTransport:
    """The httpx2 pool of an MCP airline's connector (the MCP SDK speaks httpx2), connecting only to judged
    addresses."""
    limits = httpx2.Limits(max_connections=airline.concurrency, max_keepalive_connections=airline.concurrency)
    transport = httpx2.AsyncHTTPTransport(limits=limits, trust_env=False)
    core = transport._pool  # as in guarded_transport
    assert isinstance(core, httpcore2.AsyncConnectionPool)
    core._network_backend = _Httpcore2Guard(core._network_backend, _ConnectionJudge(airline, resolver))
    return transport
