"""What each simulated airline is told to do wrong, and the ASGI gate that does it.

Every airline server sits behind `AirlineGate`: it answers ``/health``, demands an API key, counts every
business request it receives (``AirlineState.calls``: what an airline would see of us), and on business
requests adds latency and injects the HTTP-level faults (``slow``, ``http_500``, and ``throttle``: an
immediate 429 with ``Retry-After: retry_after_s``, as an API gateway answers before the backend is
reached; for the MCP airline too, since streamable HTTP is HTTP and 429 is what its gateway would say).
``malformed`` is protocol-specific, so each protocol handler asks `AirlineState.malformed_now()` and breaks
its own body. ``refuse`` is not a response at all: the supervisor stops the airline's listening server.
``tool_description`` (MCP airlines) replaces what the airline's MCP server says its shopping tool does, as
a redeployed or compromised server would (the connector's pin check quarantines it); None is the original.
``offer_ttl_s`` makes the airline's offers expire that many seconds after it priced them (None: the
schedule's own 20-30 minutes), so a test can watch an offer expire; the protocols give expiry times in whole
seconds, so an offer expires within that many seconds.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.simulators.orders import OrderDesk

__all__ = [
    "DEFAULT_LATENCY_MS",
    "AirlineGate",
    "AirlineState",
    "Fault",
    "FaultConfig",
    "FaultPatch",
    "IsBusiness",
    "OrderFault",
    "api_key_of",
    "is_mcp_tool_call",
    "is_path",
]

Fault = Literal["none", "slow", "http_500", "malformed", "refuse", "throttle"]
OrderFault = Literal["none", "fail", "timeout_after_create"]

# Typical answer times of each airline when nobody asked for anything else (80-250 ms).
DEFAULT_LATENCY_MS: dict[str, int] = {"BA": 140, "AA": 180, "VS": 90, "DL": 120, "AY": 220}
MAX_REQUEST_BYTES = 1_000_000
# Business requests remembered per airline (arrival time and answer), for tests that check when calls came.
RECENT_CALLS = 500

IsBusiness = Callable[[Scope, bytes], bool]
"""Whether a request is airline business (shopping) rather than protocol housekeeping."""


class FaultConfig(BaseModel):
    """One airline's behaviour: added latency and an optional fault with the share of requests it hits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    latency_ms: int = Field(default=0, ge=0, le=120_000)
    jitter_ms: int = Field(default=0, ge=0, le=60_000)
    fault: Fault = "none"
    fault_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    slow_ms: int = Field(default=10_000, ge=0, le=600_000)
    retry_after_s: int = Field(default=1, ge=0, le=3600)
    tool_description: str | None = Field(default=None, max_length=4000)
    offer_ttl_s: int | None = Field(default=None, ge=1, le=86_400)
    # Orders (infra/simulators/orders.py): prices move by this much between search and pricing; order creation
    # fails, or makes the order and answers only after slow_ms; where the airline pushes its own changes (NDC,
    # REST: a webhook URL; None: nowhere).
    price_change_pct: float = Field(default=0.0, ge=-90.0, le=500.0)
    order_fault: OrderFault = "none"
    webhook_url: str | None = Field(default=None, max_length=500)


class FaultPatch(BaseModel):
    """A partial update from the control API; fields left out keep their value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    latency_ms: int | None = Field(default=None, ge=0, le=120_000)
    jitter_ms: int | None = Field(default=None, ge=0, le=60_000)
    fault: Fault | None = None
    fault_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    slow_ms: int | None = Field(default=None, ge=0, le=600_000)
    retry_after_s: int | None = Field(default=None, ge=0, le=3600)
    # "" goes back to the original description (a field left out keeps the current one).
    tool_description: str | None = Field(default=None, max_length=4000)
    # 0 goes back to the schedule's own expiry (a field left out keeps the current one).
    offer_ttl_s: int | None = Field(default=None, ge=0, le=86_400)
    price_change_pct: float | None = Field(default=None, ge=-90.0, le=500.0)
    order_fault: OrderFault | None = None
    # "" removes the webhook (a field left out keeps the current one).
    webhook_url: str | None = Field(default=None, max_length=500)
    # Seats left on every offer (orders take them; -1: never run out). Kept on the order desk, not here.
    seats_left: int | None = Field(default=None, ge=-1, le=100_000)

    def apply(self, current: FaultConfig) -> FaultConfig:
        changes = self.model_dump(exclude_none=True)
        # Setting a fault without a rate means "always": a leftover rate from an earlier fault would surprise.
        if self.fault is not None and self.fault_rate is None:
            changes["fault_rate"] = 1.0
        if self.tool_description == "":
            changes["tool_description"] = None
        if self.offer_ttl_s == 0:
            changes["offer_ttl_s"] = None
        if self.webhook_url == "":
            changes["webhook_url"] = None
        changes.pop("seats_left", None)
        return current.model_copy(update=changes)


class AirlineState:
    """The live fault settings of one airline, shared by its gate and its protocol handlers."""

    def __init__(self, code: str, defaults: FaultConfig) -> None:
        self.code = code
        self.defaults = defaults
        self.config = defaults
        # The airline's order system (offers sold, orders), the same for every protocol.
        self.orders = OrderDesk(code, lambda: self.config)
        # Not seeded from the clock on purpose: fault draws need no reproducibility, only independence.
        self._rng = random.Random()
        self.calls = 0
        self.answers: Counter[str] = Counter()
        self.recent: deque[tuple[float, str]] = deque(maxlen=RECENT_CALLS)

    def count(self, answer: str) -> None:
        """One business request received, and how it is answered (``served`` or the fault)."""
        self.calls += 1
        self.answers[answer] += 1
        self.recent.append((round(time.time(), 3), answer))

    def reset_counts(self) -> None:
        self.calls = 0
        self.answers.clear()
        self.recent.clear()

    def counts(self, *, recent: bool = False) -> dict[str, Any]:
        counted: dict[str, Any] = {"calls": self.calls, "answers": dict(self.answers)}
        if recent:
            counted["recent_calls"] = [{"at": at, "answer": answer} for at, answer in self.recent]
        return counted

    def _hit(self, fault: Fault) -> bool:
        return self.config.fault == fault and self._rng.random() < self.config.fault_rate

    def delay_s(self) -> float:
        jitter = self._rng.uniform(-self.config.jitter_ms, self.config.jitter_ms) if self.config.jitter_ms else 0
        return max(0.0, self.config.latency_ms + jitter) / 1000

    def http_fault_now(self) -> Fault:
        """The HTTP-level fault this request suffers, if any (drawn once per request)."""
        for fault in ("throttle", "slow", "http_500"):
            if self._hit(fault):
                return fault
        return "none"

    def malformed_now(self) -> bool:
        return self._hit("malformed")


def api_key_of(headers: Headers) -> str | None:
    """The caller's API key from ``Authorization: Bearer`` or ``X-API-Key``; None when absent or empty."""
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


class AirlineGate:
    """ASGI middleware in front of one airline: health, API key, latency and HTTP-level faults."""

    def __init__(self, app: ASGIApp, state: AirlineState, *, is_business: IsBusiness) -> None:
        self.app = app
        self.state = state
        self.is_business = is_business

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response = await self._screen(scope)
        if response is not None:
            await response(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            await PlainTextResponse("request body too large", status_code=413)(scope, receive, send)
            return
        if self.is_business(scope, body):
            fault = self.state.http_fault_now()
            self.state.count("served" if fault == "none" else fault)
            if fault == "throttle":
                # At once, before any latency: a gateway throttles without asking the backend.
                retry_after = str(self.state.config.retry_after_s)
                response = PlainTextResponse("Too Many Requests", status_code=429, headers={"Retry-After": retry_after})
                await response(scope, receive, send)
                return
            await asyncio.sleep(self.state.delay_s())
            if fault == "slow":
                await asyncio.sleep(self.state.config.slow_ms / 1000)
            elif fault == "http_500":
                await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
                return
        await self.app(scope, _replay(body, receive), send)

    async def _screen(self, scope: Scope) -> Response | None:
        path: str = scope["path"]
        if path == "/health" or path.endswith("/health"):
            return JSONResponse({"status": "ok", "airline": self.state.code})
        if api_key_of(Headers(scope=scope)) is None:
            return JSONResponse(
                {"error": "unauthorized", "message": "an API key is required"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="airline"'},
            )
        return None


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        # After the body, only a disconnect can come; let the real channel say so.
        return await receive()

    return replay


def is_mcp_tool_call(scope: Scope, body: bytes) -> bool:
    """MCP housekeeping (discover, initialize, list) stays fast; only ``tools/call`` is airline work."""
    if scope["method"] != "POST" or not body:
        return False
    try:
        message: Any = json.loads(body)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("method") == "tools/call"


def is_path(method: str, path: str) -> IsBusiness:
    """A business predicate for one REST or NDC operation."""

    def check(scope: Scope, _body: bytes) -> bool:
        return bool(scope["method"] == method and scope["path"].rstrip("/") == path)

    return check
