"""THE BASELINE FOR COMPARISON, not part of Jetbridge: a plain MCP server that fans out to the airlines
itself with ``asyncio.gather`` over httpx. No Kafka, no durability, no dead letters, no decoupling.

It is what a team would build instead of Jetbridge, and the benchmark measures Jetbridge against it. To
isolate the backbone's cost, everything else is the same code: the same MCP tool and validation, the same
routing and deadline rules (``jetbridge/routing.py``: who is called, and each airline gets the request's
deadline minus the same margin, capped by its timeout), the same connectors to the same simulators, and
the same merge (the aggregator's state machine). Unlike the backbone it has no circuit breakers, so no
airline is skipped and each call is one attempt.

    python -m bench.direct_server --port 8089
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from connectors.base import AirlineConnector, build_connector
from connectors.worker import airline_response
from jetbridge.airlines import Airline, AirlineRegistry, load_registry
from jetbridge.errors import AirlineError, AirlineTimeout, JetbridgeError
from jetbridge.http import build_http_client
from jetbridge.log import configure_logging, get_logger
from jetbridge.routing import attempt_timeout_s, call_budget_s, route
from jetbridge.runtime import run
from jetbridge.settings import Settings, get_settings
from mcp_bridge.server import AirlineInfo, airline_infos, build_server, serve_app
from mcp_bridge.service import SearchResult, rejected, result_of
from mcp_bridge.validation import SearchArguments, SearchRules
from schemas.models import (
    AggregatorControl,
    AirlineResponse,
    ControlKind,
    Offer,
    now_utc,
)
from streams.aggregation import Aggregation

__all__ = ["DirectFanOut", "main"]

log = get_logger(__name__)


class DirectFanOut:
    """Scatter-gather in process: every airline that flies the route, called at once, merged at the end."""

    def __init__(self, settings: Settings, registry: AirlineRegistry) -> None:
        self._settings = settings
        self._registry = registry
        # One pool per airline, sized like the connector workers' (same HTTP behaviour in both systems).
        self._http = {a.code: build_http_client(timeout_s=30.0, max_connections=a.concurrency) for a in registry}
        self._connectors: dict[str, AirlineConnector] = {
            a.code: build_connector(a, self._http[a.code]) for a in registry
        }
        self._rules = SearchRules.from_settings(settings, registry)
        self.searches = 0

    @property
    def rules(self) -> SearchRules:
        """The bridge's checks with this registry and these limits (the MCP tool parses arguments with them)."""
        return self._rules

    def refused(
        self, error: JetbridgeError, arguments: Mapping[str, object], *, client_id: str, started: float, tool: str
    ) -> None:
        """Logged and counted as the bridge does; the baseline has no audit trail."""
        rejected(error, started)

    async def search(self, arguments: SearchArguments, *, client_id: str) -> SearchResult:
        started = time.monotonic()
        settings = self._settings
        criteria = arguments.criteria(settings.currency)
        request_id = str(uuid.uuid4())
        created = now_utc()
        deadline = created + timedelta(milliseconds=arguments.deadline_ms)
        # The router's own rule; no skip_reason, as the baseline has no shared breaker state to consult.
        chosen = route(self._registry, criteria.origin, criteria.destination, arguments.airlines, deadline=deadline)
        state = Aggregation(request_id=request_id, first_seen=created)
        state.add_plan(
            AggregatorControl(
                request_id=request_id,
                correlation_id=request_id,
                kind=ControlKind.PLAN,
                reply_to="direct",
                expected_airlines=chosen.codes,
                not_served=chosen.not_served,
                max_offers=arguments.max_offers,
                deadline=deadline,
                created_at=created,
            )
        )
        margin = timedelta(milliseconds=settings.connector_deadline_margin_ms)
        calls = [self._call(a, criteria, request_id, deadline, margin) for a in chosen.expected]
        # The gather is bounded by the deadline the same way the aggregator answers at it.
        remaining = (deadline - now_utc()).total_seconds()
        done, pending = await asyncio.wait([asyncio.ensure_future(c) for c in calls], timeout=max(0.0, remaining))
        for task in pending:
            task.cancel()
        for task in done:
            state.add_response(task.result())
        reply = state.complete(now_utc())
        self.searches += 1
        return result_of(reply, int((time.monotonic() - started) * 1000))

    async def _call(
        self, airline: Airline, criteria: Any, request_id: str, deadline: datetime, margin: timedelta
    ) -> AirlineResponse:
        started = time.monotonic()
        # One attempt, no retries: the connector worker's budget, capped as its guard caps each attempt.
        budget = attempt_timeout_s(airline, call_budget_s(deadline, margin, now_utc()))
        offers: list[Offer] = []
        error: AirlineError | None = None
        try:
            if budget <= 0:
                raise AirlineTimeout("no time left for the call")
            offers = await self._connectors[airline.code].search(criteria, request_id=request_id, timeout_s=budget)
        except AirlineError as exc:
            error = exc
        return airline_response(
            airline,
            request_id=request_id,
            correlation_id=request_id,
            offers=offers,
            error=error,
            latency_ms=int((time.monotonic() - started) * 1000),
        )

    def airlines(self, *, client_id: str) -> list[AirlineInfo]:
        return airline_infos(self._registry)

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "implementation": "direct fan-out baseline", "searches": self.searches}

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self._connectors.values()), return_exceptions=True)
        await asyncio.gather(*(h.aclose() for h in self._http.values()))


async def serve(settings: Settings, host: str, port: int) -> None:
    backend = DirectFanOut(settings, load_registry(settings.airlines_file))
    try:
        await serve_app(build_server(backend, name="direct-fan-out-baseline"), host, port)
    finally:
        await backend.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.direct_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    args = parser.parse_args()
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, process="direct-baseline")
    run(serve(settings, args.host, args.port))


if __name__ == "__main__":
    main()
