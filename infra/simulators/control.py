"""The simulators' control API (JSON): inspect and change each airline's latency and faults.

    GET  /health               {"status": "ok"}
    GET  /airlines             every airline's settings, endpoint, whether it is listening, and its call counts
                               (``calls``: business requests received, ``answers``: how many of each answer)
    GET  /airlines/{code}      one airline, with ``recent_calls`` (arrival time and answer of the latest 500)
    PUT  /airlines/{code}      partial update: latency_ms, jitter_ms, fault (slow, http_500, malformed, refuse,
                               throttle), fault_rate, slow_ms, retry_after_s (the 429's Retry-After),
                               tool_description (MCP airlines: what its tool says it does; "" = the original),
                               offer_ttl_s (its offers expire this many seconds after pricing; 0 = the
                               schedule's own 20-30 minutes)
                               orders: price_change_pct (prices move by this much after shopping),
                               order_fault (none, fail, timeout_after_create: the order is made, the answer
                               comes after slow_ms), seats_left (-1: unlimited), webhook_url (NDC and REST
                               airlines push their own order changes there, signed; "" = nowhere)
    GET  /airlines/{code}/orders               the airline's orders (states, totals, references; no names)
    POST /airlines/{code}/orders/{id}/change   {"change": "cancel" | "schedule", "reason": "..."}: the airline
                               changes the order itself and pushes the change (webhook, MCP notification)
    POST /reset                every airline back to its start-up settings, counts to zero, orders gone
                               (refused servers restart)
    GET  /metrics              Prometheus text: jb_sim_calls_total{airline,answer}

A PUT answers only once the change is in force, so a test can act on it straight away.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infra.simulators.faults import FaultPatch
from infra.simulators.orders import OrderProblem

if TYPE_CHECKING:
    from infra.simulators.supervisor import Simulators

__all__ = ["build_control_app"]


class _OrderChangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    change: Literal["cancel", "schedule"]
    reason: str = Field(default="Operational reasons", max_length=200)


class _SimulatorCalls(Collector):
    """``jb_sim_calls_total{airline,answer}``: business calls per simulated airline, by how each was answered
    (``served`` or the fault); reset by POST /reset."""

    def __init__(self, sims: Simulators) -> None:
        self._sims = sims

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "jb_sim_calls", "Business calls a simulated airline received, by answer.", labels=["airline", "answer"]
        )
        for code, state in self._sims.status().items():
            for answer, n in sorted(state.get("answers", {}).items()):
                family.add_metric([code, answer], n)
        yield family


def build_control_app(sims: Simulators) -> Starlette:
    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "airlines": sims.codes()})

    async def list_airlines(_: Request) -> JSONResponse:
        return JSONResponse(sims.status())

    async def one_airline(request: Request) -> JSONResponse:
        code = str(request.path_params["code"]).upper()
        if code not in sims.codes():
            return JSONResponse({"error": f"unknown airline {code[:8]!r}"}, status_code=404)
        if request.method == "PUT":
            try:
                patch = FaultPatch.model_validate_json(await request.body())
            except ValidationError as exc:
                errors = [{"field": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()]
                return JSONResponse({"error": "invalid settings", "details": errors}, status_code=422)
            await sims.configure(code, patch)
        return JSONResponse(sims.status(code))

    async def orders(request: Request) -> JSONResponse:
        code = str(request.path_params["code"]).upper()
        if code not in sims.codes():
            return JSONResponse({"error": f"unknown airline {code[:8]!r}"}, status_code=404)
        desk = sims.orders(code)
        return JSONResponse({"airline": code, "orders": [o.public() for o in desk.orders.values()]})

    async def change_order(request: Request) -> JSONResponse:
        code = str(request.path_params["code"]).upper()
        if code not in sims.codes():
            return JSONResponse({"error": f"unknown airline {code[:8]!r}"}, status_code=404)
        try:
            change = _OrderChangeRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            errors = [{"field": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()]
            return JSONResponse({"error": "invalid change", "details": errors}, status_code=422)
        try:
            order = await sims.orders(code).airline_change(
                str(request.path_params["order_id"]), change.change, change.reason
            )
        except OrderProblem as exc:
            return JSONResponse({"error": str(exc), "code": exc.code}, status_code=404)
        return JSONResponse(order.public())

    async def reset(_: Request) -> JSONResponse:
        await sims.reset()
        return JSONResponse(sims.status())

    async def metrics(_: Request) -> Response:
        # The calls each simulated airline received, as an airline's own monitoring would count them.
        registry = CollectorRegistry()
        registry.register(_SimulatorCalls(sims))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/airlines", list_airlines, methods=["GET"]),
            Route("/airlines/{code}", one_airline, methods=["GET", "PUT"]),
            Route("/airlines/{code}/orders", orders, methods=["GET"]),
            Route("/airlines/{code}/orders/{order_id}/change", change_order, methods=["POST"]),
            Route("/reset", reset, methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )
