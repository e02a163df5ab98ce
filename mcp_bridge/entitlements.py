"""Who may search what, and how much: the client registry and the bridge's traffic control.

One TOML file (`mcp_bridge/clients.toml` by default, ``JB_CLIENTS_FILE``) says, per client id (its token's
client; the ``x-client-id`` header when authentication is off), which airlines it may search, how
many per search (fan-out), how often (a token bucket: the Throttler), how much a day (quota), how many
searches without a booking (look-to-book budget) and its longest deadline. ``[defaults]`` is every client's
allowance; a client's table overrides it field by field. Read strictly, like the airline registry: a field it
does not know, a value that cannot work, or an airline the airline registry lacks stops the bridge at start-up
with a `ConfigurationError` naming the file, the table and the field.

Every client id the registry does not name (``anonymous`` included) shares ONE allowance of ``[defaults]``:
one bucket, one quota, one budget for all of them, so an agent cannot buy more by making up ids.
The counts are shared by every bridge instance through Redis (`mcp_bridge.allowances`), or kept in this
process while Redis is away.
"""

from __future__ import annotations

import contextlib
import math
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from jetbridge.airlines import AirlineRegistry
from jetbridge.config_files import checked
from jetbridge.errors import ClientRateLimited, ConfigurationError, InvalidInput, QuotaExceeded
from mcp_bridge.allowances import Ledger, LocalLedger, Refusal, Spend
from mcp_bridge.limits import DAY_S, DailyQuota, SearchWindow, TokenBucket
from mcp_bridge.validation import MIN_DEADLINE_MS, SearchArguments

__all__ = [
    "DEFAULTS",
    "DEFAULT_CLIENTS",
    "ClientRegistry",
    "DailyQuota",
    "Entitlement",
    "SearchWindow",
    "TokenBucket",
    "TrafficControl",
    "choose_airlines",
    "load_clients",
]

DEFAULT_CLIENTS = Path(__file__).resolve().parent / "clients.toml"
# The name under which every client the registry does not know shares the [defaults] allowance.
DEFAULTS = "[defaults]"


class Entitlement(BaseModel):
    """One client's allowance: the ``[defaults]`` table, or a ``[clients.<id>]`` table merged over it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # The airlines it may search, in its order of preference; absent: every airline of the airline registry.
    airlines: tuple[str, ...] | None = Field(default=None, strict=False, min_length=1)
    # Airlines asked at most per search.
    max_fanout: int = Field(default=10, ge=1)
    # The Throttler: a token bucket refilled at rate_per_s, holding burst.
    rate_per_s: float = Field(default=10.0, gt=0)
    burst: int = Field(default=20, ge=1)
    # Searches per UTC day; 0: no quota.
    daily_quota: int = Field(default=0, ge=0)
    # Look-to-book: searches allowed per booking over look_to_book_window_s; 0: no budget. A booking (create_order)
    # starts the window again.
    look_to_book_searches: int = Field(default=0, ge=0)
    look_to_book_window_s: float = Field(default=float(DAY_S), gt=0)
    # The longest deadline it may ask for (the process's JB_MAX_DEADLINE_MS still caps it).
    max_deadline_ms: int = Field(default=15_000, ge=MIN_DEADLINE_MS)
    # Orders: the most its agents may book in a UTC day, in the bridge's currency (JB_CURRENCY); 0: no cap.
    daily_spend_cap: float = Field(default=0.0, ge=0, strict=False)


class _RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    defaults: dict[str, Any] = Field(default_factory=dict)
    clients: dict[str, dict[str, Any]] = Field(default_factory=dict)


class ClientRegistry:
    """Allowances by client id; ``allowance(id)`` gives ``[defaults]`` (under the name `DEFAULTS`) to the rest."""

    def __init__(self, defaults: Entitlement, clients: Mapping[str, Entitlement] | None = None) -> None:
        self.defaults = defaults
        self._clients = dict(clients or {})

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._clients

    def ids(self) -> list[str]:
        return list(self._clients)

    def allowance(self, client_id: str) -> tuple[str, Entitlement]:
        """Whose allowance ``client_id`` spends (its own id, or `DEFAULTS`) and what it is."""
        own = self._clients.get(client_id)
        return (client_id, own) if own is not None else (DEFAULTS, self.defaults)


M = TypeVar("M", bound=BaseModel)


def _checked(model: type[M], data: object, path: Path, table: str) -> M:
    return checked(model, data, path=path, table=table, what="client registry", guide="mcp_bridge/clients.toml")


def _entitlement(
    base: Entitlement, overrides: Mapping[str, Any], path: Path, table: str, airlines: AirlineRegistry
) -> Entitlement:
    merged = _checked(Entitlement, base.model_dump(exclude_unset=False) | dict(overrides), path, table)
    unknown = [code for code in merged.airlines or () if code not in airlines]
    if unknown:
        raise ConfigurationError(
            f"client registry {path}: [{table}] airlines: {', '.join(unknown)} not in the airline registry "
            f"(known: {', '.join(airlines.codes())}); remove them or add the airline to the airline registry first"
        )
    return merged


def load_clients(path: Path | None, airlines: AirlineRegistry) -> ClientRegistry:
    """Read and check the client registry against the airline registry."""
    path = path or DEFAULT_CLIENTS
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"client registry {path}: {exc}") from exc
    registry = _checked(_RegistryFile, data, path, "")
    defaults = _entitlement(Entitlement(), registry.defaults, path, "defaults", airlines)
    clients = {
        client_id: _entitlement(defaults, table, path, f"clients.{client_id}", airlines)
        for client_id, table in registry.clients.items()
    }
    return ClientRegistry(defaults, clients)


# ---- the rules of one search ----


def choose_airlines(
    client_id: str,
    allowance: Entitlement,
    airlines: AirlineRegistry,
    arguments: SearchArguments,
    unavailable: Callable[[str], bool] | None = None,
) -> list[str] | None:
    """The airlines a search may ask: the agent's list checked against the allowance (`InvalidInput` naming
    ``airlines``), or, without one, the allowed airlines serving the route (non-stop) in the client's order of
    preference (else the airline registry's), cut to ``max_fanout``, those ``unavailable`` says will not answer
    live (circuit open, quarantined) after the others, so a failing airline never takes a healthy one's place.
    None: leave the choice to the router (every airline serving the route), which the allowance permits."""
    allowed = allowance.airlines
    if arguments.airlines is not None:
        refused = [code for code in arguments.airlines if allowed is not None and code not in allowed]
        if refused:
            assert allowed is not None
            verb = "is" if len(refused) == 1 else "are"
            raise InvalidInput(
                "airlines",
                f"{', '.join(refused)} {verb} not among the airlines client {client_id} may search "
                f"({', '.join(allowed)})",
            )
        if len(arguments.airlines) > allowance.max_fanout:
            raise InvalidInput(
                "airlines",
                f"at most {allowance.max_fanout} airlines per search for client {client_id}, "
                f"got {len(arguments.airlines)}",
            )
        return arguments.airlines
    serving = [a.code for a in airlines.serving(arguments.origin, arguments.destination)]
    if allowed is None and len(serving) <= allowance.max_fanout:
        return None
    served = set(serving)
    candidates = [code for code in (allowed if allowed is not None else serving) if code in served]
    if unavailable is not None and len(candidates) > allowance.max_fanout:
        candidates.sort(key=unavailable)  # stable: the order of preference holds within each group
    return candidates[: allowance.max_fanout]


def deadline_for(client_id: str, allowance: Entitlement, deadline_ms: int, *, process_default_ms: int) -> int:
    """The search's deadline under the allowance: the process's default is cut to it, a longer deadline the
    agent asked for is refused (`InvalidInput` naming ``deadline_ms``)."""
    if deadline_ms <= allowance.max_deadline_ms:
        return deadline_ms
    if deadline_ms == process_default_ms:
        return allowance.max_deadline_ms
    raise InvalidInput(
        "deadline_ms", f"must be at most {allowance.max_deadline_ms} for client {client_id}, got {deadline_ms}"
    )


# ---- traffic control: one state per allowance ----


def _retry_after(wait_s: float) -> float:
    """What the agent is told: whole seconds, at least 1."""
    return float(max(1, math.ceil(wait_s - 1e-9)))


class TrafficControl:
    """What a search may ask (`authorize`) and whether it is let through now (`admit`), per allowance,
    plus the bridge's cap on searches waiting for replies (load shedding, this process's own).

    The allowances are counted by ``ledger``: in this process (`LocalLedger`, the default) or in Redis,
    shared by every bridge instance (`SharedLedger`, what `mcp_bridge.server.Bridge` uses)."""

    def __init__(
        self,
        clients: ClientRegistry,
        airlines: AirlineRegistry,
        *,
        max_in_flight: int,
        process_default_deadline_ms: int,
        clock: Callable[[], float] = time.time,
        ledger: Ledger | None = None,
    ) -> None:
        self.clients = clients
        self._airlines = airlines
        self.max_in_flight = max_in_flight
        self._default_deadline_ms = process_default_deadline_ms
        self.ledger: Ledger = ledger or LocalLedger(clock)
        self.in_flight = 0
        # Whether an airline will not answer live now (its circuit open, quarantined): the bridge's view of
        # the airlines' health; such airlines go last when a search's fan-out is cut.
        self.unavailable: Callable[[str], bool] | None = None

    def authorize(self, client_id: str, arguments: SearchArguments) -> SearchArguments:
        """``arguments`` as the client may send them: airlines checked or narrowed, deadline within its cap."""
        _, allowance = self.clients.allowance(client_id)
        chosen = choose_airlines(client_id, allowance, self._airlines, arguments, self.unavailable)
        deadline_ms = deadline_for(
            client_id, allowance, arguments.deadline_ms, process_default_ms=self._default_deadline_ms
        )
        if chosen == arguments.airlines and deadline_ms == arguments.deadline_ms:
            return arguments
        return arguments.model_copy(update={"airlines": chosen, "deadline_ms": deadline_ms})

    async def booked(self, client_id: str) -> None:
        """The client booked: its look-to-book window starts again (its searches so far led to a booking)."""
        name, _ = self.clients.allowance(client_id)
        await self.ledger.booked(name)

    async def admit(self, client_id: str) -> contextlib.AbstractContextManager[None]:
        """Let one search through, or raise `ClientRateLimited` / `QuotaExceeded` having counted nothing.

        Every limit is checked before any is spent, so a refused search costs the client nothing. The search
        counts as in flight from now until the returned context ends (use it as ``with admission:``).
        """
        if self.in_flight >= self.max_in_flight:
            raise ClientRateLimited(
                f"the bridge holds {self.in_flight} searches waiting for replies, its limit "
                "(JB_BRIDGE_MAX_IN_FLIGHT): try again in 1 s",
                retry_after_s=1.0,
            )
        name, allowance = self.clients.allowance(client_id)
        # Counted as in flight while the ledger answers, so a burst cannot overshoot the cap meanwhile.
        self.in_flight += 1
        try:
            refusal = await self.ledger.spend(
                Spend(
                    name=name,
                    rate_per_s=allowance.rate_per_s,
                    burst=allowance.burst,
                    daily_quota=allowance.daily_quota,
                    window_searches=allowance.look_to_book_searches,
                    window_s=allowance.look_to_book_window_s,
                )
            )
        except BaseException:
            self.in_flight -= 1
            raise
        if refusal is not None:
            self.in_flight -= 1
            raise _refused(client_id, name, allowance, refusal)
        return self._in_flight_until_done()

    @contextlib.contextmanager
    def _in_flight_until_done(self) -> Iterator[None]:
        try:
            yield
        finally:
            self.in_flight -= 1


def _refused(client_id: str, name: str, allowance: Entitlement, refusal: Refusal) -> ClientRateLimited | QuotaExceeded:
    """The error a client over a limit gets: which limit, and when to come back."""
    who = f"client {client_id}" if name != DEFAULTS else f"client {client_id} (the [defaults] allowance)"
    retry = _retry_after(refusal.wait_s)
    if refusal.limit == "quota":
        return QuotaExceeded(
            f"{who} used its daily quota of {allowance.daily_quota} searches (UTC day): try again in {retry:.0f} s",
            retry_after_s=retry,
        )
    if refusal.limit == "window":
        return QuotaExceeded(
            f"{who} made {allowance.look_to_book_searches} searches without a booking in "
            f"{allowance.look_to_book_window_s:g} s (look-to-book budget): try again in {retry:.0f} s",
            retry_after_s=retry,
        )
    return ClientRateLimited(
        f"{who} is over its rate of {allowance.rate_per_s:g} searches/s (burst {allowance.burst}): "
        f"try again in {retry:.0f} s",
        retry_after_s=retry,
    )
