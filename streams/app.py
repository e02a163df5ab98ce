"""The stream processors (faust-streaming): the router and the aggregator, in one faust app.

Both agents read raw bytes and decode them themselves, so that an undecodable (poison) event is caught
per event, sent to the dead-letter channel and skipped: an exception escaping a faust agent would stop
its consumption. Every produce is awaited until the broker acknowledged it before the agent takes the next
event, so an offset is committed only after what was produced for it is durable (at-least-once).

Run with ``jetbridge run streams`` (``python -m streams worker``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import faust
import structlog

from jetbridge.airlines import AirlineRegistry, load_registry
from jetbridge.dlq import dead_letter
from jetbridge.errors import DecodeError
from jetbridge.health import HealthServer
from jetbridge.http import build_http_client
from jetbridge.kafka import HEADER_DEADLINE_MS, decode_headers, event_headers, new_traceparent
from jetbridge.log import get_logger
from jetbridge.runtime import open_codec
from jetbridge.settings import Settings, get_settings
from jetbridge.topics import (
    AGGREGATOR_CONTROL,
    AIRLINE_RESPONSES,
    DLQ,
    REPLIES,
    REQUESTS,
    airline_calls_topic,
    declared_topics,
)
from mcp_bridge.correlator import HEADER_REPLY_TO
from schemas.codec import AvroCodec
from schemas.models import (
    AggregatorControl,
    AirlineCall,
    AirlineResponse,
    ControlKind,
    Event,
    SearchRequest,
    now_utc,
)
from streams.aggregation import Aggregation, TimerIndex, retention_over

__all__ = ["app", "build_app"]

log = get_logger(__name__)


def _brokers(bootstrap: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in bootstrap.split(",") if server.strip()]


def _headers_of(event: Any) -> dict[str, str]:
    raw = event.message.headers
    if isinstance(raw, Mapping):
        raw = list(raw.items())
    return decode_headers(raw)


class StreamContext:
    """What the agents share: settings, the airline registry and the codec (opened on first use)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.airlines: AirlineRegistry = load_registry(settings.airlines_file)
        self._codec: AvroCodec | None = None
        self._lock = asyncio.Lock()

    async def codec(self) -> AvroCodec:
        if self._codec is None:
            async with self._lock:
                if self._codec is None:
                    http = build_http_client(timeout_s=10.0, max_connections=10)
                    specs = declared_topics(self.airlines, self.settings.topic_partitions, self.settings.topic_prefix)
                    self._codec = await open_codec(self.settings, specs, http)
        return self._codec


def build_app(settings: Settings) -> faust.App:
    app = faust.App(
        "jetbridge-streams",
        broker=_brokers(settings.kafka_bootstrap_servers),
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=True,  # faust's own changelog topic; ours are declared by `topics apply`
        topic_disable_leader=True,
        web_enabled=False,
        datadir=str(settings.home / "streams"),
        producer_linger=0.001,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=0.5,
        stream_wait_empty=False,
    )
    ctx = StreamContext(settings)
    requests_topic = app.topic(REQUESTS, key_type=bytes, value_type=bytes)
    # The aggregator's table is co-partitioned with both its inputs (same key, same partition count).
    aggregator_inputs = app.topic(AIRLINE_RESPONSES, AGGREGATOR_CONTROL, key_type=bytes, value_type=bytes)
    control_topic = app.topic(AGGREGATOR_CONTROL, key_type=bytes, value_type=bytes)
    replies_topic = app.topic(REPLIES, key_type=bytes, value_type=bytes)
    dlq_topic = app.topic(DLQ, key_type=bytes, value_type=bytes)
    calls_topics = {
        a.code: app.topic(airline_calls_topic(a.code), key_type=bytes, value_type=bytes) for a in ctx.airlines
    }
    table = app.Table(
        "aggregations", default=None, partitions=settings.topic_partitions, key_type=bytes, value_type=bytes
    )
    timers = TimerIndex()
    live: dict[str, Aggregation] = {}

    async def send(topic: Any, topic_name: str, key: str, event: Event, headers: Sequence[tuple[str, bytes]]) -> None:
        codec = await ctx.codec()
        delivery = await topic.send(key=key.encode(), value=codec.encode(topic_name, event), headers=list(headers))
        await delivery  # broker acknowledgement before the source event is acknowledged

    async def to_dlq(event: Any, stage: str, exc: BaseException) -> None:
        """Dead Letter Channel: the original bytes and where they came from, then move on."""
        message = event.message
        record, dlq_headers = dead_letter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=_headers_of(event),
            stage=stage,
            error=exc,
        )
        try:
            codec = await ctx.codec()
            delivery = await dlq_topic.send(key=message.key, value=codec.encode(DLQ, record), headers=dlq_headers)
            await delivery
            log.warning(
                "event dead-lettered",
                stage=stage,
                error_code=record.error_code,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
            )
        except Exception as dlq_exc:  # noqa: BLE001 - never let the DLQ stop the stream
            log.error("dead-lettering failed", stage=stage, error=repr(dlq_exc), original_error=str(exc))

    # ---- router: content-based router + scatter (fan-out one call per airline) ----
    @app.agent(requests_topic, name="router")
    async def router(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            try:
                await route(event)
            except Exception as exc:  # noqa: BLE001 - per-event isolation, see module docstring
                await to_dlq(event, "router", exc)

    async def route(event: Any) -> None:
        codec = await ctx.codec()
        request = await codec.decode(event.value, SearchRequest)
        with structlog.contextvars.bound_contextvars(
            request_id=request.request_id, correlation_id=request.correlation_id
        ):
            criteria = request.criteria
            serving = ctx.airlines.serving(criteria.origin, criteria.destination)
            if request.airlines is not None:
                wanted = set(request.airlines)
                expected = [a for a in serving if a.code in wanted]
                served_codes = {a.code for a in expected}
                not_served = [c for c in request.airlines if c not in served_codes]
            else:
                expected, not_served = serving, []
            deadline_ms = int(request.deadline.timestamp() * 1000)
            headers = event_headers(
                request_id=request.request_id,
                correlation_id=request.correlation_id,
                client_id=request.client_id,
                deadline_ms=deadline_ms,
                traceparent=_headers_of(event).get("traceparent") or new_traceparent(),
            )
            now = now_utc()
            plan = AggregatorControl(
                request_id=request.request_id,
                correlation_id=request.correlation_id,
                kind=ControlKind.PLAN,
                reply_to=request.reply_to,
                expected_airlines=[a.code for a in expected],
                not_served=not_served,
                max_offers=request.max_offers,
                deadline=request.deadline,
                created_at=now,
            )
            # The plan first: the aggregator must know whom to wait for.
            await send(control_topic, AGGREGATOR_CONTROL, request.request_id, plan, headers)
            if now >= request.deadline:
                log.warning("request arrived past its deadline; no airline is called")
                return
            calls = [
                send(
                    calls_topics[a.code],
                    airline_calls_topic(a.code),
                    request.request_id,
                    AirlineCall(
                        request_id=request.request_id,
                        correlation_id=request.correlation_id,
                        client_id=request.client_id,
                        airline=a.code,
                        criteria=criteria,
                        deadline=request.deadline,
                        created_at=now,
                    ),
                    headers,
                )
                for a in expected
            ]
            await asyncio.gather(*calls)
            log.info("request routed", airlines=[a.code for a in expected], not_served=not_served)

    # ---- aggregator: join by request id, complete on all answers or at the deadline ----
    @app.agent(aggregator_inputs, name="aggregator")
    async def aggregator(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            try:
                await aggregate(event)
            except Exception as exc:  # noqa: BLE001 - per-event isolation
                await to_dlq(event, "aggregator", exc)

    async def aggregate(event: Any) -> None:
        key = event.key
        if not key:
            raise DecodeError("aggregator input without a key (request id)")
        request_id = key.decode("utf-8", "replace")
        try:
            await aggregate_one(event, key, request_id)
        except BaseException:
            # The in-memory copy may be half-changed; the table (what the changelog holds) is the truth.
            live.pop(request_id, None)
            raise

    async def aggregate_one(event: Any, key: bytes, request_id: str) -> None:
        codec = await ctx.codec()
        now = now_utc()
        # The table is the durable copy (changelog); `live` spares parsing it back on every event.
        state = live.get(request_id)
        if state is None:
            current = table.get(key)
            state = Aggregation.from_table(current) if current is not None else None
        known = state is not None
        if state is None:
            state = Aggregation(request_id=request_id, first_seen=now)
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            if event.message.topic == AIRLINE_RESPONSES:
                response = await codec.decode(event.value, AirlineResponse)
                if not state.add_response(response):
                    log.info("response ignored (duplicate or late)", airline=response.airline)
                    return
            else:
                control = await codec.decode(event.value, AggregatorControl)
                if control.kind is ControlKind.PLAN:
                    state.add_plan(control)
                elif not known:
                    return  # a tick for an aggregation already forgotten
                elif state.done or state.plan is None:
                    if retention_over(state, now):
                        del table[key]
                        live.pop(request_id, None)
                        timers.forget(request_id)
                    return
                else:
                    state.deadline_reached = True
            if state.is_due(now):
                reply = state.complete(now)
                plan = state.plan
                assert plan is not None
                headers = event_headers(
                    request_id=request_id,
                    correlation_id=plan.correlation_id,
                    client_id=_headers_of(event).get("client_id", ""),
                    deadline_ms=int(plan.deadline.timestamp() * 1000),
                    traceparent=_headers_of(event).get("traceparent") or new_traceparent(),
                    extra={HEADER_REPLY_TO: plan.reply_to},
                )
                await send(replies_topic, REPLIES, request_id, reply, headers)
                log.info(
                    "reply sent",
                    status=reply.status.value,
                    offers=len(reply.offers),
                    late_by_ms=max(0, int((now - plan.deadline).total_seconds() * 1000)),
                )
            table[key] = state.to_table()
            live[request_id] = state
            timers.track(state)

    @app.timer(interval=settings.aggregator_tick_ms / 1000, name="deadline-timer")  # type: ignore[untyped-decorator]
    async def deadline_timer() -> None:
        """Completion timeout: tick every aggregation whose deadline (or retention) has passed.

        Table writes must happen inside the stream, so the timer does not complete anything itself: it
        sends a DEADLINE control event on the aggregation's own partition and the agent completes it.
        """
        now = now_utc()
        for request_id, due in timers.pop_due(now):
            tick = AggregatorControl(
                request_id=request_id,
                correlation_id=due.correlation_id,
                kind=ControlKind.DEADLINE,
                deadline=due.deadline,
                created_at=now,
            )
            deadline_ms = int(due.deadline.timestamp() * 1000)
            try:
                await send(
                    control_topic,
                    AGGREGATOR_CONTROL,
                    request_id,
                    tick,
                    [("request_id", request_id.encode()), (HEADER_DEADLINE_MS, str(deadline_ms).encode())],
                )
            except Exception as exc:  # noqa: BLE001 - a lost tick would leave a request unanswered
                log.warning("deadline tick not sent; retrying next pass", request_id=request_id, error=repr(exc))
                timers.retry(request_id, due)

    state: dict[str, Any] = {"ready": False}

    def health() -> dict[str, Any]:
        return {"status": "ok" if state["ready"] else "starting", "instance": settings.instance}

    @app.task  # type: ignore[untyped-decorator]  # faust's decorator is untyped
    async def warm_up() -> None:
        # Register schemas before the first event needs them.
        await ctx.codec()
        if settings.health_port:
            await HealthServer(settings.health_port, health).start()

    async def mark_ready(sender: Any, *_: Any, **__: Any) -> None:
        # Partitions may have moved: rebuild the timer index from the (recovered) table, once.
        timers.clear()
        live.clear()
        for value in list(table.values()):
            if value is not None:
                timers.track(Aggregation.from_table(value))
        state["ready"] = True
        log.info("streams ready (partitions assigned, tables recovered)", aggregations=len(timers))

    app.on_rebalance_complete.connect(mark_ready)  # type: ignore[arg-type]  # faust's signal typing is narrower than its use
    return app


app = build_app(get_settings())
