"""The stream processors (faust-streaming): the router and the aggregator, in one faust app.

Both agents read raw bytes and decode them themselves, so that an undecodable (poison) event is caught
per event, sent to the dead-letter channel and skipped: an exception escaping a faust agent would stop
its consumption. The router awaits every produce before it takes the next event, so an offset is
committed only after what was produced for it is durable (at-least-once). The aggregator keeps its joins
in memory and holds their events unacknowledged until the reply is durable (see ``aggregator.py``).

Run with ``jetbridge run streams`` (``python -m streams worker``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import faust
import structlog

from jetbridge.airlines import AirlineRegistry, load_registry
from jetbridge.dlq import DeadLetterChannel, DlqHeaders, dead_letter
from jetbridge.errors import DecodeError
from jetbridge.health import HealthServer
from jetbridge.health_board import shared_board
from jetbridge.http import build_http_client
from jetbridge.kafka import (
    HEADER_CLIENT_ID,
    HEADER_REPLY_TO,
    HEADER_TRACEPARENT,
    decode_headers,
    event_headers,
    new_traceparent,
)
from jetbridge.log import get_logger, stdlib_logging_config
from jetbridge.metrics import DLQ_DEPTH, ERRORS, OPEN_JOINS, REQUESTS_ROUTED, LagMonitor, metrics_answer, serve
from jetbridge.runtime import open_codec
from jetbridge.settings import Settings, get_settings
from jetbridge.topics import TopicNames, declared_topics
from schemas.codec import AvroCodec
from schemas.models import (
    AggregatorControl,
    AirlineCall,
    AirlineResponse,
    ControlKind,
    DeadLetter,
    SearchReply,
    SearchRequest,
    now_utc,
)
from streams.acks import InOrderAcks, Ticket
from streams.aggregator import Aggregator
from streams.replies import scan_replies

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
    names = TopicNames(settings.topic_prefix)
    app = faust.App(
        f"{settings.topic_prefix}jetbridge-streams",
        broker=_brokers(settings.kafka_bootstrap_servers),
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=False,  # ours are declared by `topics apply`; the app has no tables
        topic_disable_leader=True,
        web_enabled=False,
        datadir=str(settings.state_dir / "faust"),
        producer_linger=0.001,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=0.5,
        stream_wait_empty=False,
        # A dead worker's partitions move after this long; a restarted one takes them back at once
        # (static membership) instead of waiting for its old session to expire.
        broker_session_timeout=settings.group_session_timeout_ms / 1000,
        broker_heartbeat_interval=max(0.5, settings.group_session_timeout_ms / 3000),
        consumer_group_instance_id=settings.instance or None,
        # faust's worker replaces the root logger's handlers with its own (colour) ones: keep ours (JSON).
        logging_config=stdlib_logging_config(),
    )
    ctx = StreamContext(settings)
    requests_topic = app.topic(names.requests, key_type=bytes, value_type=bytes)
    # The aggregator's inputs and its replies are co-partitioned (same key, same partition count).
    aggregator_inputs = app.topic(names.responses, names.control, key_type=bytes, value_type=bytes)
    control_topic = app.topic(names.control, key_type=bytes, value_type=bytes)
    replies_topic = app.topic(names.replies, key_type=bytes, value_type=bytes)
    dlq_topic = app.topic(names.dlq, key_type=bytes, value_type=bytes)
    calls_topics = {a.code: app.topic(names.calls(a.code), key_type=bytes, value_type=bytes) for a in ctx.airlines}
    health_state: dict[str, Any] = {"ready": False}

    async def send(topic: Any, key: str, value: bytes, headers: Sequence[tuple[str, bytes]]) -> None:
        delivery = await topic.send(key=key.encode(), value=value, headers=list(headers))
        await delivery  # broker acknowledgement before the source event is acknowledged

    async def write_dead_letter(key: bytes | str | None, record: DeadLetter, headers: DlqHeaders) -> None:
        codec = await ctx.codec()
        delivery = await dlq_topic.send(key=key, value=codec.encode(names.dlq, record), headers=list(headers))
        await delivery

    # One channel per agent: a stalled one stops only its own agent's partitions.
    dlq_channels = {stage: DeadLetterChannel(write_dead_letter, stage=stage) for stage in ("router", "aggregator")}

    async def to_dlq(event: Any, stage: str, exc: BaseException) -> None:
        """Dead Letter Channel: the original bytes and where they came from, then move on. While the DLQ
        cannot be written the agent waits here, so its partitions stop rather than lose the event."""
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
        ERRORS.labels(stage, record.error_code).inc()
        await dlq_channels[stage].publish(record, dlq_headers, message.key)
        log.warning(
            "event dead-lettered",
            stage=stage,
            error_code=record.error_code,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
        )

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
            # An airline whose circuit is open (or that asked not to be called before the deadline) is not
            # called: the plan names it as skipped, and the aggregator reports it without waiting for it.
            health = shared_board(names.airline_health, codec, {"bootstrap.servers": settings.kafka_bootstrap_servers})
            skipped = {
                a.code: reason for a in expected if (reason := health.skip_reason(a.code, request.deadline)) is not None
            }
            expected = [a for a in expected if a.code not in skipped]
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
                skipped=skipped,
            )
            # The plan first: the aggregator must know whom to wait for.
            await send(control_topic, request.request_id, codec.encode(names.control, plan), headers)
            if now >= request.deadline:
                log.warning("request arrived past its deadline; no airline is called")
                return
            calls = [
                send(
                    calls_topics[a.code],
                    request.request_id,
                    codec.encode(
                        names.calls(a.code),
                        AirlineCall(
                            request_id=request.request_id,
                            correlation_id=request.correlation_id,
                            client_id=request.client_id,
                            airline=a.code,
                            criteria=criteria,
                            deadline=request.deadline,
                            created_at=now,
                        ),
                    ),
                    headers,
                )
                for a in expected
            ]
            await asyncio.gather(*calls)
            REQUESTS_ROUTED.inc()
            log.info("request routed", airlines=[a.code for a in expected], not_served=not_served, skipped=skipped)

    # ---- aggregator: join by request id, complete on all answers or at the deadline ----
    async def send_reply(reply: SearchReply, plan_headers: dict[str, str]) -> None:
        codec = await ctx.codec()
        headers = event_headers(
            request_id=reply.request_id,
            correlation_id=reply.correlation_id,
            client_id=plan_headers.get(HEADER_CLIENT_ID, ""),
            deadline_ms=int(reply.deadline.timestamp() * 1000),
            traceparent=plan_headers.get(HEADER_TRACEPARENT) or new_traceparent(),
            extra={HEADER_REPLY_TO: reply.reply_to},
        )
        await send(replies_topic, reply.request_id, codec.encode(names.replies, reply), headers)

    acks = InOrderAcks(ack=lambda event: event.ack())
    aggregator_core = Aggregator(
        send_reply=send_reply, acks=acks, reply_window=timedelta(seconds=settings.aggregator_reply_window_s)
    )
    known_partitions: set[int] = set()
    # Set once the reply topic has been read back for the partitions this worker owns; faust resumes the
    # streams before its assignment signal's receivers finish, so the aggregator waits for this itself.
    replies_known = asyncio.Event()

    @app.agent(aggregator_inputs, name="aggregator")
    async def aggregator(stream: faust.StreamT[Any]) -> None:
        # Manual acknowledgement: an event is acknowledged once its join's reply is durable.
        async for event in stream.noack().events():  # type: ignore[attr-defined]  # StreamT lacks noack in its stub
            await replies_known.wait()
            message = event.message
            ticket = acks.hold(message.topic, message.partition, message.offset, event)
            try:
                await aggregate(event, ticket)
            except Exception as exc:  # noqa: BLE001 - per-event isolation
                await to_dlq(event, "aggregator", exc)
                acks.release(ticket)

    async def aggregate(event: Any, ticket: Ticket) -> None:
        if not event.key:
            raise DecodeError("aggregator input without a key (request id)")
        codec = await ctx.codec()
        message = event.message
        if message.topic == names.responses:
            response = await codec.decode(event.value, AirlineResponse)
            with structlog.contextvars.bound_contextvars(request_id=response.request_id):
                await aggregator_core.on_response(ticket, message.partition, response)
            return
        control = await codec.decode(event.value, AggregatorControl)
        if control.kind is not ControlKind.PLAN:
            acks.release(ticket)  # DEADLINE ticks of earlier versions: the timer is in memory now
            return
        with structlog.contextvars.bound_contextvars(request_id=control.request_id):
            await aggregator_core.on_plan(ticket, message.partition, control, _headers_of(event))

    @app.timer(interval=settings.aggregator_tick_ms / 1000, name="deadline-timer")  # type: ignore[untyped-decorator]
    async def deadline_timer() -> None:
        """Completion timeout: answer every join whose deadline has passed, with what it has."""
        await aggregator_core.tick()

    def health() -> dict[str, Any]:
        stalled = {stage: c.state() for stage, c in dlq_channels.items() if c.stalled}
        status = "starting" if not health_state["ready"] else ("degraded" if stalled else "ok")
        return {
            "status": status,
            "reason": f"dlq unwritable, {' and '.join(stalled)} paused" if stalled else None,
            "dlq": stalled or None,
            "instance": settings.instance,
            "open_joins": len(aggregator_core.open),
            "held_events": acks.held,
            "replies_sent": aggregator_core.replies_sent,
        }

    @app.task  # type: ignore[untyped-decorator]  # faust's decorator is untyped
    async def warm_up() -> None:
        # Register schemas before the first event needs them, and start following the airlines' health so
        # the first request is already routed around an open circuit.
        codec = await ctx.codec()
        shared_board(names.airline_health, codec, {"bootstrap.servers": settings.kafka_bootstrap_servers})
        serve(REQUESTS_ROUTED, OPEN_JOINS, DLQ_DEPTH)
        if settings.health_port:
            server = HealthServer(settings.health_port, health)
            server.route("/metrics", metrics_answer)
            await server.start()
        LagMonitor(
            {"bootstrap.servers": settings.kafka_bootstrap_servers},
            app.conf.id,
            [names.requests, names.responses, names.control],
            dlq_topic=names.dlq,
        ).start()

    async def on_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        health_state["ready"] = False
        replies_known.clear()
        await aggregator_core.on_revoked()

    async def on_assigned(sender: Any, assigned: set[Any], **_: Any) -> None:
        # Learn which requests of the partitions taken over were already answered, before any of their
        # events is handled (faust resumes the streams only after this returns).
        partitions = sorted({tp.partition for tp in assigned if tp.topic in (names.responses, names.control)})
        new = [p for p in partitions if p not in known_partitions]
        if new:
            since_ms = int((time.time() - settings.aggregator_reply_window_s) * 1000)
            config = {"bootstrap.servers": settings.kafka_bootstrap_servers}
            found = await asyncio.to_thread(scan_replies, config, names.replies, new, since_ms)
            aggregator_core.learn_replies(found)
            log.info("replies read back for partitions taken over", partitions=new, answered=len(found))
        known_partitions.clear()
        known_partitions.update(partitions)
        replies_known.set()
        health_state["ready"] = True
        log.info("streams ready (partitions assigned, replies read back)", partitions=partitions)

    # faust's signal typing is narrower than its use
    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]
    return app


app = build_app(get_settings())
