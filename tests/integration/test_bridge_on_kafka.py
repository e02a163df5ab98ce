"""The bridge's Kafka glue on a real broker, on topics of its own: a backbone that cannot answer is a
clear, retriable error by the deadline plus the grace, never a hang; a duplicate reply is dropped."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jetbridge.errors import BackboneUnavailable
from jetbridge.kafka import HEADER_REPLY_TO
from jetbridge.runtime import kafka_config, open_runtime
from mcp_bridge.correlator import ReplyCorrelator
from mcp_bridge.server import Bridge
from mcp_bridge.service import REPLY_GRACE_S, SearchService
from schemas.models import AirlineOutcome, AirlineStatus, ReplyStatus, SearchReply, now_utc
from tests.support.streams_worker import TopicSpace

pytestmark = pytest.mark.kafka


def arguments(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "origin": "LHR",
        "destination": "JFK",
        "departure_date": (datetime.now(UTC).date() + timedelta(days=21)).isoformat(),
        "return_date": None,
        "adults": 1,
        "children": None,
        "infants": None,
        "cabin": None,
        "airlines": None,
        "max_offers": None,
        "deadline_ms": 1000,
    }
    return values | overrides


async def test_a_search_with_no_stream_worker_ends_in_backbone_unavailable_by_its_deadline(space: TopicSpace) -> None:
    async with Bridge.open(space.settings) as bridge:
        started = time.monotonic()
        with pytest.raises(BackboneUnavailable) as failure:
            await bridge.service.search(arguments(deadline_ms=1000), client_id="test-client")
        elapsed = time.monotonic() - started
        assert 1.0 <= elapsed <= 1.0 + REPLY_GRACE_S + 0.2, elapsed
        assert failure.value.retriable
        assert failure.value.retry_after_s > 0
        assert "stream processors" in failure.value.message
        health = bridge.health()
        assert health["status"] == "degraded"
        assert health["backbone"] == "unavailable"


async def test_a_broker_that_takes_nothing_ends_in_backbone_unavailable_not_a_hang(space: TopicSpace) -> None:
    # The bridge's producer points at a port where no broker listens: a broker that went away.
    runtime = await open_runtime(
        space.settings,
        client_id="test-bridge",
        producer={"bootstrap.servers": "127.0.0.1:9", "message.timeout.ms": 3000},
    )
    correlator = ReplyCorrelator(
        instance_id="bridge-test",
        topic=space.names.replies,
        codec=runtime.codec,
        consumer_config=kafka_config(space.settings, "bridge-test"),
    )
    await correlator.start()
    service = SearchService(runtime, correlator)
    try:
        started = time.monotonic()
        results = await asyncio.gather(
            *(service.search(arguments(deadline_ms=1500), client_id="c") for _ in range(5)), return_exceptions=True
        )
        elapsed = time.monotonic() - started
        assert all(isinstance(r, BackboneUnavailable) for r in results), results
        assert all("broker" in r.message for r in results if isinstance(r, BackboneUnavailable))
        assert elapsed <= 1.5 + REPLY_GRACE_S + 0.3, elapsed
    finally:
        await correlator.close()
        runtime.producer._producer.purge()  # nothing should be delivered to a broker that may come back
        await runtime.close()


async def test_a_second_reply_for_the_same_request_is_dropped(space: TopicSpace) -> None:
    assert space.codec is not None
    correlator = ReplyCorrelator(
        instance_id="bridge-dup",
        topic=space.names.replies,
        codec=space.codec,
        consumer_config=kafka_config(space.settings, "bridge-dup"),
    )
    await correlator.start()
    try:
        request_id = f"req-{uuid.uuid4().hex[:8]}"
        waiter = correlator.expect(request_id)
        for status in (ReplyStatus.COMPLETE, ReplyStatus.PARTIAL):
            reply = SearchReply(
                request_id=request_id,
                correlation_id=request_id,
                reply_to="bridge-dup",
                status=status,
                offers=[],
                airlines=[AirlineStatus(airline="BA", status=AirlineOutcome.OK)],
                deadline=now_utc(),
                completed_at=now_utc(),
            )
            await space.producer.send(
                space.names.replies,
                key=request_id,
                value=space.codec.encode(space.names.replies, reply),
                headers=[("request_id", request_id.encode()), (HEADER_REPLY_TO, b"bridge-dup")],
            )
        first = await asyncio.wait_for(waiter, 10)
        assert first.status is ReplyStatus.COMPLETE
        await asyncio.sleep(1.0)
        assert correlator.replies_seen == 1, "the second reply found no waiter and was dropped"
    finally:
        await correlator.close()
