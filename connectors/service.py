"""The connector process: one worker per airline (or the airlines named), sharing one producer, one
codec and one HTTP client pool. Production runs it once per airline (``--airline BA``) to make each
airline its own bulkhead; the local stack runs all airlines in one process to save memory.

With the offer cache on (``JB_OFFER_CACHE``, the default) the workers share one Redis client and one `OfferCache`
(``connectors/call_cache.py``): a Redis that does not answer within ``CACHE_TIMEOUT_S`` is a miss, never a wait.

Next to each search worker runs the airline's order worker (``connectors/order_worker.py``, group
``jb.orders.<IATA>``), sharing its producer, codec, HTTP pool and `AirlineGuard` (one breaker and one rate limit
per airline, whatever the operation). The process reads ``jb.orders.v1`` whole at start and follows it
(`jetbridge.order_book.OrderBook`) before its order workers start, and publishes the airlines' own order changes
(``connectors/order_events.py``): their webhooks at ``http://<host>:<JB_HEALTH_PORT>/webhooks/<IATA>`` (logged at
start; none without a health port) and the watches of airlines that push changes over MCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence
from typing import Any

from connectors.base import build_connector
from connectors.egress import guarded_transport
from connectors.order_events import WEBHOOK_PREFIX, AirlineChanges, OrderEvents
from connectors.order_worker import OrderWorker, has_order_operations
from connectors.worker import ConnectorWorker
from jetbridge.errors import ConfigurationError
from jetbridge.health import HealthServer
from jetbridge.health_board import HealthBoard
from jetbridge.http import build_http_client
from jetbridge.log import get_logger
from jetbridge.metrics import LagMonitor, metrics_answer
from jetbridge.offer_cache import OfferCache
from jetbridge.order_book import OrderBook
from jetbridge.pii import load_seal
from jetbridge.redis_client import open_redis, public_url
from jetbridge.runtime import kafka_config, open_runtime
from jetbridge.settings import Settings
from jetbridge.topics import TopicNames

__all__ = ["CACHE_TIMEOUT_S", "health_report", "run_connectors"]

log = get_logger(__name__)

# How long a call waits for the offer cache's Redis, per operation, before treating it as a miss: a loopback or
# same-zone Redis answers in well under a millisecond, and the airline call it may save takes 100 ms or more.
CACHE_TIMEOUT_S = 0.25
# How long start-up waits for jb.orders.v1 to be read to its end before the order workers start anyway.
ORDERS_CATCH_UP_S = 15.0


async def run_connectors(settings: Settings, airlines: list[str] | None = None) -> None:
    """Run the workers until SIGTERM/SIGINT, then drain in-flight calls and commit."""
    runtime = await open_runtime(settings, client_id="jb-connectors")
    wanted = airlines or [a.code for a in runtime.airlines if a.enabled]
    unknown = [code for code in wanted if code not in runtime.airlines]
    if unknown:
        raise ConfigurationError(f"unknown airline(s) {unknown}; the registry has {runtime.airlines.codes()}")
    # One connection pool per airline: a bulkhead (a slow airline cannot hold another's connections),
    # and small pools keep httpcore's per-request scan of its connections cheap. Each connects only to addresses
    # the registry allows its airline (connectors/egress.py).
    clients = {
        code: build_http_client(
            timeout_s=30.0,
            max_connections=runtime.airlines[code].concurrency,
            transport=guarded_transport(runtime.airlines[code]),
        )
        for code in wanted
    }
    topics = TopicNames(settings.topic_prefix)
    # One Redis client and one offer cache for every worker of the process; None: JB_OFFER_CACHE=off.
    opened = contextlib.AsyncExitStack()
    offer_cache: OfferCache | None = None
    if settings.cache == "on":
        redis = await opened.enter_async_context(open_redis(settings.redis_url, timeout_s=CACHE_TIMEOUT_S))
        offer_cache = OfferCache(
            redis, runtime.codec, topic=topics.responses, prefix=settings.topic_prefix, timeout_s=CACHE_TIMEOUT_S
        )
    # Every worker's breaker follows the airlines' shared health from the start, so a circuit another
    # instance opened is respected from the first call.
    airline_health = HealthBoard(
        topics.airline_health,
        runtime.codec,
        kafka_config(settings, f"jb-connectors-health-{settings.instance or 'local'}"),
        producer=runtime.producer,
    )
    workers = [
        ConnectorWorker(
            runtime.airlines[code],
            codec=runtime.codec,
            producer=runtime.producer,
            consumer_config=kafka_config(settings, f"jb-connector-{code}"),
            http=clients[code],
            calls_topic=topics.calls(code),
            responses_topic=topics.responses,
            dlq_topic=topics.dlq,
            group_id=f"{settings.topic_prefix}jb.connector.{code}",
            instance=settings.instance,
            session_timeout_ms=settings.group_session_timeout_ms,
            concurrency=min(runtime.airlines[code].concurrency, settings.connector_concurrency),
            deadline_margin_ms=settings.connector_deadline_margin_ms,
            health=airline_health,
            offer_cache=offer_cache,
        )
        for code in wanted
    ]
    await airline_health.start()
    if offer_cache is not None:
        log.info("offer cache on", redis=public_url(settings.redis_url))
    # Orders: the view of jb.orders.v1 (whose each order is), read before any order call is taken.
    book = OrderBook(topics.orders, runtime.codec, kafka_config(settings, f"jb-connectors-orders-{settings.instance}"))
    await book.start(catch_up_s=ORDERS_CATCH_UP_S)
    events = OrderEvents(topics.orders, runtime.codec, runtime.producer, book)
    seal = load_seal(settings)
    built = {code: build_connector(runtime.airlines[code], clients[code]) for code in wanted}
    order_connectors = {code: c for code, c in built.items() if has_order_operations(c)}
    without = sorted(set(built) - set(order_connectors))
    if without:
        log.warning("no order operations in these airlines' connectors: no order worker", airlines=without)
        await asyncio.gather(*(built[code].aclose() for code in without))
    order_workers = [
        OrderWorker(
            w.airline,
            codec=runtime.codec,
            producer=runtime.producer,
            consumer_config=kafka_config(settings, f"jb-orders-{w.airline.code}"),
            connector=order_connectors[w.airline.code],
            seal=seal,
            events=events,
            calls_topic=topics.order_calls(w.airline.code),
            replies_topic=topics.order_replies,
            dlq_topic=topics.dlq,
            group_id=f"{settings.topic_prefix}jb.orders.{w.airline.code}",
            instance=settings.instance,
            session_timeout_ms=settings.group_session_timeout_ms,
            deadline_margin_ms=settings.connector_deadline_margin_ms,
            guard=w.guard,  # the search worker's: one breaker and rate limit per airline
        )
        for w in workers
        if w.airline.code in order_connectors
    ]
    changes = AirlineChanges({w.airline.code: w.connector for w in order_workers}, events)
    every_worker: list[ConnectorWorker | OrderWorker] = [*workers, *order_workers]
    loop = asyncio.get_running_loop()

    def stop_all() -> None:
        for worker in every_worker:
            worker.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_all)
    running = [asyncio.create_task(w.run(), name=f"connector-{w.airline.code}") for w in workers]
    running_orders = [asyncio.create_task(w.run(), name=f"orders-{w.airline.code}") for w in order_workers]

    def health() -> dict[str, Any]:
        return health_report(
            workers,
            running,
            settings.instance,
            cache=offer_cache,
            orders=order_workers,
            order_tasks=running_orders,
            changes=changes,
        )

    server = HealthServer(settings.health_port, health, host=settings.health_host) if settings.health_port else None
    if server is not None:
        server.route("/metrics", metrics_answer)
        server.post_route(WEBHOOK_PREFIX, changes.webhook)
        await server.start()
        for code, url in changes.webhook_urls(server.host, server.port).items():
            log.info("airline webhook", airline=code, url=url)
    elif changes.parsers:
        log.warning("no JB_HEALTH_PORT: airlines' order webhooks are not served", airlines=sorted(changes.parsers))
    changes.start_watchers()
    lag = [
        LagMonitor(kafka_config(settings, f"jb-lag-{w.airline.code}"), w.group_id, [w.calls_topic])
        for w in every_worker
    ]
    for monitor in lag:
        monitor.start()
    everything = [*running, *running_orders]
    try:
        # Healthy = every worker is a placed member of its consumer group (a call would reach it).
        give_up = loop.time() + 60
        placed = [w.assigned for w in every_worker]
        while not all(p.is_set() for p in placed) and loop.time() < give_up:
            if any(t.done() for t in everything):
                break  # a worker crashed: gather below raises its error
            await asyncio.sleep(0.05)
        if all(p.is_set() for p in placed):
            log.info("connectors ready", airlines=wanted, orders=[w.airline.code for w in order_workers])
        else:
            log.error("connector workers not assigned partitions within 60 s", airlines=wanted)
        await asyncio.gather(*everything)
    finally:
        for monitor in lag:
            await monitor.close()
        await changes.close()
        await book.close()
        await airline_health.close()
        if server is not None:
            await server.close()
        await asyncio.gather(*(c.aclose() for c in clients.values()))
        await opened.aclose()
        await runtime.close()
        log.info("connectors stopped", handled={w.airline.code: w.handled for w in workers})


def health_report(
    workers: Sequence[ConnectorWorker],
    running: Sequence[asyncio.Task[None]],
    instance: str,
    *,
    cache: OfferCache | None = None,
    orders: Sequence[OrderWorker] = (),
    order_tasks: Sequence[asyncio.Task[None]] = (),
    changes: AirlineChanges | None = None,
) -> dict[str, Any]:
    """``ok`` when every worker is a placed member of its group (a call would reach it) and its dead letters
    are written; ``degraded`` with the reason while a worker's DLQ cannot be written. Each airline's circuit
    breaker and rate limit are shown under ``circuits``: an open circuit is the airline's state, not ours.
    Airlines whose endpoint is refused (connectors/egress.py) are under ``endpoints_refused`` and in the
    reason; the process still answers their calls (``airline_quarantined``), so its status does not change.
    ``cache`` is ``on``, ``off`` (no offer cache) or ``unavailable`` (Redis not answering: calls go live, the
    status stays). The order workers are under ``orders`` (each placed in its group ``jb.orders.<IATA>``, its
    calls in flight and handled) and count like the search workers: not placed, ``starting``; DLQ unwritable,
    ``degraded``; ``order_changes`` counts the airlines' own changes received and published."""
    placed = {w.airline.code: w.assigned.is_set() for w in workers}
    report: dict[str, Any] = {
        "instance": instance,
        "placed": placed,
        "circuits": {w.airline.code: w.guard.snapshot() for w in workers},
        "cache": "off" if cache is None else "on" if cache.available else "unavailable",
    }
    if orders:
        report["orders"] = {w.airline.code: w.health() for w in orders}
    if changes is not None:
        report["order_changes"] = changes.health()
    stalled = {w.airline.code: w.dead_letters.state() for w in workers if w.dead_letters.stalled}
    stalled |= {f"orders.{w.airline.code}": w.dead_letters.state() for w in orders if w.dead_letters.stalled}
    orders_placed = all(w.assigned.is_set() for w in orders)
    if not all(placed.values()) or not orders_placed or any(t.done() for t in [*running, *order_tasks]):
        report["status"] = "starting"
    elif stalled:
        report["status"] = "degraded"
        report["reason"] = f"dlq unwritable, partition paused: {', '.join(sorted(stalled))}"
    else:
        report["status"] = "ok"
    if stalled:
        report["dlq"] = stalled
    refused = {w.airline.code: w.endpoint_refused for w in workers if w.endpoint_refused}
    if refused:
        report["endpoints_refused"] = refused
        said = f"endpoint refused, not called: {', '.join(sorted(refused))}"
        report["reason"] = f"{report['reason']}; {said}" if "reason" in report else said
    return report
