"""The boundary every airline call crosses: one time budget, one error tree, one log context.

`guarded_call` runs one airline operation of a kind (``guarded_search``: its search; the order operations of
`connectors.orders`) inside ``asyncio.wait_for(..., timeout_s)`` and guarantees that only `AirlineError`
subclasses leave it:

    budget spent (ours or the client library's)            → AirlineTimeout
    AirlineError raised by the kind                          → as raised
    ValueError/KeyError/TypeError/... while mapping the body → AirlineBadResponse
    anything else                                            → AirlineError (logged with its traceback)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import SecretStr
from structlog.contextvars import bound_contextvars

from jetbridge.airlines import Airline
from jetbridge.errors import AirlineBadResponse, AirlineError, AirlineTimeout
from jetbridge.log import get_logger
from schemas.models import Offer

__all__ = ["MAPPING_ERRORS", "api_key", "guarded_call", "guarded_search"]

log = get_logger("connectors")

CANCEL_SLACK_S = 0.3

# What mapping an airline's body into our model raises when the body breaks the contract.
# (pydantic's ValidationError and our UntrustedValue are ValueErrors; RecursionError is deep nesting.)
MAPPING_ERRORS: tuple[type[Exception], ...] = (ValueError, KeyError, TypeError, IndexError, RecursionError)

T = TypeVar("T")


def api_key(airline: Airline) -> SecretStr:
    """The airline's credential; a predictable development key when its variable is unset (local stack)."""
    return airline.api_key() or SecretStr(f"dev-key-{airline.code.lower()}")


async def guarded_search(
    airline: Airline,
    kind: str,
    *,
    request_id: str,
    timeout_s: float,
    search: Callable[[], Awaitable[list[Offer]]],
    slack_s: float = CANCEL_SLACK_S,
) -> list[Offer]:
    """Run ``search`` within the budget; map every failure onto the error tree and log the outcome."""
    return await guarded_call(
        airline, kind, "search", request_id=request_id, timeout_s=timeout_s, call=search, slack_s=slack_s
    )


async def guarded_call(
    airline: Airline,
    kind: str,
    operation: str,
    *,
    request_id: str,
    timeout_s: float,
    call: Callable[[], Awaitable[T]],
    slack_s: float = CANCEL_SLACK_S,
) -> T:
    """Run one airline ``operation`` (search, price, create_order, ...) within the budget, as `guarded_search`."""
    started = time.perf_counter()
    with bound_contextvars(airline=airline.code, request_id=request_id, connector_kind=kind):
        try:
            if timeout_s <= 0:
                raise AirlineTimeout(f"{airline.code}: no time left for the call")
            # The kinds give their clients the budget as their own timeouts (httpx pool/connect/read), which
            # end a call cleanly. Cancelling an httpx request from outside can leave httpcore's pool
            # connections stuck "in use" for good (reproduced with httpcore 1.0.9: 20 of 20 connections
            # wedged after a burst of timeouts), so the outer bound is a last resort: a separate task
            # (wait_for, not a cancel scope) with a little slack, which the clients' timeouts beat.
            result = await asyncio.wait_for(call(), timeout_s + slack_s)
        except Exception as exc:
            error = _classify(airline, exc, timeout_s)
            if type(error) is AirlineError:
                log.error(
                    "airline call failed unexpectedly", operation=operation, error_type=type(exc).__name__, exc_info=exc
                )
            else:
                log.warning(
                    f"airline {operation} failed",
                    error_code=error.code,
                    error=error.message,
                    latency_ms=_ms(started),
                )
            if error is exc:
                raise
            raise error from exc
        # The worker logs the call's outcome once (``airline answered``); one line per call on the hot path.
        log.debug(f"airline {operation} done", latency_ms=_ms(started))
        return result


def _classify(airline: Airline, exc: Exception, timeout_s: float) -> AirlineError:
    if isinstance(exc, AirlineError):
        return exc
    if isinstance(exc, TimeoutError):
        return AirlineTimeout(f"{airline.code}: no answer within {timeout_s:.2f}s")
    if isinstance(exc, MAPPING_ERRORS):
        return AirlineBadResponse(f"{airline.code}: answer breaks the contract ({_describe(exc)})")
    return AirlineError(f"{airline.code}: unexpected {type(exc).__name__}")


def _describe(exc: Exception) -> str:
    # A pydantic error would quote the offending input (airline text); name only its type and count.
    count = getattr(exc, "error_count", None)
    if callable(count):
        return f"{type(exc).__name__}: {count()} invalid field(s)"
    if isinstance(exc, KeyError):
        return f"missing field {str(exc)[:60]}"
    return f"{type(exc).__name__}: {str(exc)[:160]}"


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
