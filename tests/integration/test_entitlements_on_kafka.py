"""Client allowances on a real broker, on topics of their own: an agent over its rate is refused with
``rate_limited`` and nothing reaches the requests topic, while its refusal is on the audit topic; a limited
client and an unlimited one searching at once: only the limited one is held back.

A stand-in aggregator answers every request on the space's requests topic at once (empty, complete), so a
search let through gets its reply; what reached the requests topic is what the bridge published.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from confluent_kafka import Consumer, TopicPartition
from mcp import Client

from jetbridge.audit_ops import add_arguments, run
from jetbridge.errors import ClientRateLimited
from jetbridge.kafka import HEADER_REPLY_TO
from mcp_bridge.server import Bridge, build_server
from mcp_bridge.service import SearchResult
from schemas.models import AuditRecord, ReplyStatus, SearchReply, SearchRequest, now_utc
from tests.support.kafka_tools import KafkaProbe
from tests.support.streams_worker import TopicSpace

pytestmark = pytest.mark.kafka

CLIENTS = """
[defaults]
rate_per_s = 0.001
burst = 1

[clients.limited]
airlines = ["VS", "BA"]
max_fanout = 1
rate_per_s = 0.001
burst = 2

[clients.unlimited]
rate_per_s = 1000
burst = 1000
"""


def arguments(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "origin": "LHR",
        "destination": "JFK",
        "departure_date": (datetime.now(UTC).date() + timedelta(days=21)).isoformat(),
        "deadline_ms": 3000,
    }
    return values | overrides


@contextlib.asynccontextmanager
async def stand_in_aggregator(space: TopicSpace, seen: list[SearchRequest]) -> AsyncIterator[None]:
    """Answers every request on the space's requests topic with an empty complete reply."""
    assert space.codec is not None
    codec = space.codec
    consumer = Consumer(
        {"bootstrap.servers": space.settings.kafka_bootstrap_servers, "group.id": "unused", "enable.auto.commit": False}
    )
    topic = space.names.requests
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])

    async def answer() -> None:
        while True:
            for message in await asyncio.to_thread(consumer.consume, 50, 0.1):
                if message.error() is not None:
                    continue
                request = await codec.decode(message.value(), SearchRequest)
                seen.append(request)
                reply = SearchReply(
                    request_id=request.request_id,
                    correlation_id=request.correlation_id,
                    reply_to=request.reply_to,
                    status=ReplyStatus.COMPLETE,
                    offers=[],
                    airlines=[],
                    deadline=request.deadline,
                    completed_at=now_utc(),
                )
                await space.producer.send(
                    space.names.replies,
                    key=request.request_id,
                    value=codec.encode(space.names.replies, reply),
                    headers=[("request_id", request.request_id.encode()), (HEADER_REPLY_TO, request.reply_to.encode())],
                )

    task = asyncio.create_task(answer())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        consumer.close()


@contextlib.asynccontextmanager
async def bridge_with_clients(space: TopicSpace, tmp_path: Path) -> AsyncIterator[Bridge]:
    path = tmp_path / "clients.toml"
    path.write_text(CLIENTS, encoding="utf-8")
    async with Bridge.open(space.settings.model_copy(update={"clients_file": path})) as bridge:
        yield bridge
        await bridge.service.drain()


async def audit_records(kafka: KafkaProbe, topic: str, *, until: int) -> list[AuditRecord]:
    assert kafka.codec is not None
    partitions = await kafka.end_offsets(topic)
    messages = await kafka.read_since(topic, dict.fromkeys(partitions, 0), until_s=10, want=lambda m: len(m) >= until)
    return [await kafka.codec.decode(m.value(), AuditRecord) for m in messages]


async def test_an_agent_over_its_rate_gets_rate_limited_nothing_is_published_and_the_refusal_is_audited(
    space: TopicSpace, kafka: KafkaProbe, tmp_path: Path
) -> None:
    seen: list[SearchRequest] = []
    async with bridge_with_clients(space, tmp_path) as bridge, stand_in_aggregator(space, seen):
        # Over MCP (in memory, so no x-client-id header: the agent is anonymous, on the [defaults] allowance).
        with anyio.fail_after(20):
            async with Client(build_server(bridge)) as client:
                first = await client.call_tool("search_offers", arguments())
                assert not first.is_error, first
                before = await kafka.end_offsets(space.names.requests)
                second = await client.call_tool("search_offers", arguments())
        assert second.is_error
        text = " ".join(getattr(c, "text", "") for c in second.content)
        assert "rate_limited" in text
        assert "try again in" in text
        # The service says the same with the retry-after as a number.
        with pytest.raises(ClientRateLimited) as caught:
            await bridge.service.search(arguments(), client_id="anonymous")
        assert caught.value.retry_after_s >= 1
        await bridge.service.drain()
        await asyncio.sleep(0.5)  # anything published would have reached the broker by now
        assert await kafka.end_offsets(space.names.requests) == before, "a refused search publishes no request"
        assert len(seen) == 1
    records = await audit_records(kafka, space.names.audit, until=3)
    outcomes = sorted((r.client_id, r.outcome, r.error_code) for r in records)
    assert outcomes == [
        ("anonymous", "complete", None),
        ("anonymous", "rate_limited", "rate_limited"),
        ("anonymous", "rate_limited", "rate_limited"),
    ]
    assert all(r.arguments_sha256 and len(r.arguments_sha256) == 64 for r in records)
    assert len({r.arguments_sha256 for r in records}) == 1, "the same search, the same hash"


async def test_a_limited_client_is_held_back_while_an_unlimited_one_searching_at_once_is_not(
    space: TopicSpace, kafka: KafkaProbe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[SearchRequest] = []
    async with bridge_with_clients(space, tmp_path) as bridge, stand_in_aggregator(space, seen):
        before = await kafka.end_offsets(space.names.requests)
        with anyio.fail_after(20):
            results = await asyncio.gather(
                *(
                    bridge.service.search(arguments(), client_id=client)
                    for _ in range(8)
                    for client in ("limited", "unlimited")
                ),
                return_exceptions=True,
            )
        by_client = {"limited": results[0::2], "unlimited": results[1::2]}
        assert all(isinstance(r, SearchResult) and r.status == "complete" for r in by_client["unlimited"]), results
        answered = [r for r in by_client["limited"] if isinstance(r, SearchResult)]
        refused = [r for r in by_client["limited"] if isinstance(r, ClientRateLimited)]
        assert (len(answered), len(refused)) == (2, 6), by_client["limited"]
        after = await kafka.end_offsets(space.names.requests)
        assert sum(after.values()) - sum(before.values()) == 10, "8 unlimited and 2 limited searches published"
    limited = [r for r in seen if r.client_id == "limited"]
    unlimited = [r for r in seen if r.client_id == "unlimited"]
    assert [r.airlines for r in limited] == [["VS"], ["VS"]], "narrowed to its allowed airlines and its fan-out"
    assert all(r.airlines is None for r in unlimited), "the router's choice: every airline serving the route"
    records = await audit_records(kafka, space.names.audit, until=16)
    counts = sorted((r.client_id, r.outcome) for r in records)
    assert counts.count(("limited", "rate_limited")) == 6
    assert counts.count(("limited", "complete")) == 2
    assert counts.count(("unlimited", "complete")) == 8

    # What an operator sees of it.
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    capsys.readouterr()
    assert await run(space.settings, parser.parse_args(["--client", "limited", "--since", "10m"])) == 0
    out = capsys.readouterr().out
    assert f"8 audit records on {space.names.audit} matching --client limited --since" in out
    assert "rate_limited" in out
    assert await run(space.settings, parser.parse_args(["--outcome", "quota_exceeded"])) == 0
    assert "No audit records on" in capsys.readouterr().out
