"""The stream processors (faust-streaming): the router and the aggregator, assembled in one faust app.

This module is only the assembly: the app's configuration, its topics, the agent and the timer registered
on it, health and metrics, and the rebalance signals. What each stage does lives in its own module:

- ``router.py``: Content-Based Router + Scatter (who is called: ``jetbridge/routing.py``);
- ``joining.py``: the search agent's faust side (held events, replies, read-back on assignment, timer);
- ``aggregator.py`` / ``aggregation.py``: the Aggregator with completion timeout, faust-free;
- ``dead_letters.py``: the Dead Letter Channel of both stages.

One agent reads requests and responses: the router's decision for a request is the aggregator's plan, so
it is handed over in memory (no plan event) and the request stays the one durable record of it. The agent
also reads the control topic, where workers of earlier versions wrote their plans (a rolling upgrade). The agent
reads raw bytes and decodes them itself, so that an undecodable (poison) event is caught per event, sent
to the dead-letter channel and skipped: an exception escaping a faust agent would stop its consumption.

Run with ``jetbridge run streams`` (``python -m streams worker``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import faust

from jetbridge.health import HealthServer
from jetbridge.kafka import client_config, kafka_security
from jetbridge.log import stdlib_logging_config
from jetbridge.metrics import DLQ_DEPTH, OPEN_JOINS, REQUESTS_ROUTED, LagMonitor, metrics_answer, serve
from jetbridge.settings import Settings, get_settings
from streams.context import StreamContext
from streams.credentials import broker_credentials
from streams.dead_letters import DeadLetters
from streams.joining import AGGREGATOR, ROUTER, Joining

__all__ = ["app", "build_app"]

SEARCH_AGENT = "search"


def _brokers(bootstrap: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in bootstrap.split(",") if server.strip()]


def build_app(settings: Settings) -> faust.App:
    """The faust app with the router and the aggregator registered on it."""
    app = faust.App(
        f"{settings.topic_prefix}jetbridge-streams",
        broker=_brokers(settings.kafka_bootstrap_servers),
        broker_credentials=broker_credentials(kafka_security(settings)),
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=False,  # ours are declared by `topics apply`; the app has no tables
        topic_disable_leader=True,
        web_enabled=False,
        datadir=str(settings.state_dir / "faust"),
        producer_linger=settings.producer_linger_ms / 1000,
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
    names = ctx.names
    # Requests, responses, plans of earlier versions and replies are co-partitioned (same key and count).
    inputs = app.topic(names.requests, names.responses, names.control, key_type=bytes, value_type=bytes)
    # The responses topic is an output too: the router answers there for airlines the offer cache answers for.
    outputs = {
        name: app.topic(name, key_type=bytes, value_type=bytes)
        for name in (names.replies, names.dlq, names.responses, *(names.calls(a.code) for a in ctx.airlines))
    }

    async def produce(
        topic: str, key: bytes | str | None, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        # Queued in the producer's batch; the caller holds its source event until this future is done.
        delivery = await outputs[topic].send(key=key, value=value, headers=list(headers))
        return asyncio.ensure_future(delivery)  # faust's FutureMessage already is one: returned as is

    async def send(topic: str, key: bytes | str | None, value: bytes, headers: Sequence[tuple[str, bytes]]) -> None:
        await (await produce(topic, key, value, headers))  # broker acknowledgement before going on

    dead_letters = DeadLetters(ctx, send, (ROUTER, AGGREGATOR))
    joins = Joining(ctx, produce, dead_letters)

    @app.agent(inputs, name=SEARCH_AGENT)
    async def search(stream: faust.StreamT[Any]) -> None:
        await joins.consume(stream)

    @app.timer(interval=settings.aggregator_tick_ms / 1000, name="deadline-timer")  # type: ignore[untyped-decorator]
    async def deadline_timer() -> None:
        await joins.tick()

    def health() -> dict[str, Any]:
        stalled = dead_letters.stalled()
        status = "starting" if not joins.ready else ("degraded" if stalled else "ok")
        return {
            "status": status,
            "reason": f"dlq unwritable, {' and '.join(stalled)} paused" if stalled else None,
            "dlq": stalled or None,
            "instance": settings.instance,
            "offer_cache": ctx.cache_state(),
            **joins.health(),
        }

    @app.task  # type: ignore[untyped-decorator]  # faust's decorator is untyped
    async def warm_up() -> None:
        # Register schemas before the first event needs them, start following the airlines' health so the
        # first request is already routed around an open circuit, and have the offer cache's client ready.
        ctx.health_board(await ctx.codec())
        await ctx.offer_cache()
        serve(REQUESTS_ROUTED, OPEN_JOINS, DLQ_DEPTH)
        if settings.health_port:
            server = HealthServer(settings.health_port, health, host=settings.health_host)
            server.route("/metrics", metrics_answer)
            await server.start()
        LagMonitor(
            client_config(settings),
            app.conf.id,
            [names.requests, names.responses, names.control],
            dlq_topic=names.dlq,
        ).start()

    async def close(sender: Any, **_: Any) -> None:
        await ctx.aclose()

    # faust's signal typing is narrower than its use
    app.on_before_shutdown.connect(close)  # type: ignore[arg-type]
    app.on_partitions_revoked.connect(joins.on_revoked)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(joins.on_assigned)  # type: ignore[arg-type]
    return app


app = build_app(get_settings())
