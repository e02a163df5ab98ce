"""The connector process: one worker per airline (or the airlines named), sharing one producer, one
codec and one HTTP client pool. Production runs it once per airline (``--airline BA``) to make each
airline its own bulkhead; the local stack runs all airlines in one process to save memory.

With the offer cache on (``JB_OFFER_CACHE``, the default) the workers share one Redis client and one `OfferCache`
(``connectors/call_cache.py``): a Redis that does not answer within ``CACHE_TIMEOUT_S`` is a miss, never a wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence
from typing import Any

from connectors.egress import guarded_transport
from connectors.worker import ConnectorWorker
from jetbridge.errors import ConfigurationError
from jetbridge.health import HealthServer
from jetbridge.health_board import HealthBoard
from jetbridge.http import build_http_client
from jetbridge.log import get_logger
from jetbridge.metrics import LagMonitor, metrics_answer
from jetbridge.offer_cache import OfferCache
from jetbridge.redis_client import open_redis, public_url
from jetbridge.runtime import kafka_config, open_runtime
from jetbridge.settings import Settings
from jetbridge.topics import TopicNames

__all__ = ["CACHE_TIMEOUT_S", "health_report", "run_connectors"]

log = get_logger(__name__)

# How long a call waits for the offer cache's Redis, per operation, before treating it as a miss: a loopback or
# same-zone Redis answers in well under a millisecond, and the airline call it may save takes 100 ms or more.
CACHE_TIMEOUT_S = 0.25


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
    loop = asyncio.get_running_loop()

    def stop_all() -> None:
        for worker in workers:
            worker.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_all)
    running = [asyncio.create_task(w.run(), name=f"connector-{w.airline.code}") for w in workers]

    def health() -> dict[str, Any]:
        return health_report(workers, running, settings.instance, cache=offer_cache)

    server = HealthServer(settings.health_port, health) if settings.health_port else None
    if server is not None:
        server.route("/metrics", metrics_answer)
        await server.start()
    lag = [LagMonitor(kafka_config(settings, f"jb-lag-{w.airline.code}"), w.group_id, [w.calls_topic]) for w in workers]
    for monitor in lag:
        monitor.start()
    try:
        # Healthy = every worker is a placed member of its consumer group (a call would reach it).
        give_up = loop.time() + 60
        while not all(w.assigned.is_set() for w in workers) and loop.time() < give_up:
            if any(t.done() for t in running):
                break  # a worker crashed: gather below raises its error
            await asyncio.sleep(0.05)
        if all(w.assigned.is_set() for w in workers):
            log.info("connectors ready", airlines=wanted)
        else:
            log.error("connector workers not assigned partitions within 60 s", airlines=wanted)
        await asyncio.gather(*running)
    finally:
        for monitor in lag:
            await monitor.close()
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
) -> dict[str, Any]:
    """``ok`` when every worker is a placed member of its group (a call would reach it) and its dead letters
    are written; ``degraded`` with the reason while a worker's DLQ cannot be written. Each airline's circuit
    breaker and rate limit are shown under ``circuits``: an open circuit is the airline's state, not ours.
    Airlines whose endpoint is refused (connectors/egress.py) are under ``endpoints_refused`` and in the
    reason; the process still answers their calls (``airline_quarantined``), so its status does not change.
    ``cache`` is ``on``, ``off`` (no offer cache) or ``unavailable`` (Redis not answering: calls go live, the
    status stays)."""
    placed = {w.airline.code: w.assigned.is_set() for w in workers}
    report: dict[str, Any] = {
        "instance": instance,
        "placed": placed,
        "circuits": {w.airline.code: w.guard.snapshot() for w in workers},
        "cache": "off" if cache is None else "on" if cache.available else "unavailable",
    }
    stalled = {w.airline.code: w.dead_letters.state() for w in workers if w.dead_letters.stalled}
    if not all(placed.values()) or any(t.done() for t in running):
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
