"""An AI agent's flight search across the whole backbone: MCP client -> bridge -> Kafka -> router ->
connectors -> airline simulators -> aggregator -> bridge, on real Kafka."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from jetbridge.settings import Settings
from jetbridge.topics import AUDIT, DLQ, REQUESTS
from schemas.models import AuditRecord, DeadLetter
from tests.e2e.conftest import Stack, call_tool, error_text, second_bridge
from tests.support.kafka_tools import KafkaProbe

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

SOON = (datetime.now(UTC).date() + timedelta(days=21)).isoformat()
KINDS = {"BA": "ndc", "AA": "ndc", "VS": "rest", "DL": "rest", "AY": "mcp"}


def search_args(**overrides: Any) -> dict[str, Any]:
    """A search for live offers: these tests put airlines at fault and look at the live path, which the offer
    cache would otherwise stand in for (the cache's own tests leave ``fresh`` out)."""
    return {"origin": "LHR", "destination": "JFK", "departure_date": SOON, "adults": 1, "fresh": True} | overrides


async def timed_search(stack: Stack, arguments: dict[str, Any], url: str | None = None) -> tuple[dict[str, Any], float]:
    """A search (at the stack's bridge, or another instance at ``url``) and the seconds the tool call took
    (session set-up excluded)."""
    async with stack.agent(url) as client:
        started = time.monotonic()
        result = await client.call_tool("search_offers", arguments)
        elapsed = time.monotonic() - started
    assert not result.is_error, error_text(result)
    assert result.structured_content is not None
    return result.structured_content, elapsed


async def test_search_merges_offers_from_every_connector_kind(stack: Stack, simulators: httpx.AsyncClient) -> None:
    result, elapsed = await timed_search(stack, search_args(max_offers=50))
    statuses = {a["airline"]: a["status"] for a in result["airlines"]}
    assert statuses == dict.fromkeys(KINDS, "ok"), statuses
    assert result["status"] == "complete"
    airlines_with_offers = {o["airline"] for o in result["offers"]}
    assert {KINDS[a] for a in airlines_with_offers} == {"ndc", "rest", "mcp"}
    assert len(airlines_with_offers) >= 3
    prices = [Decimal(o["total_amount"]) for o in result["offers"]]
    assert prices == sorted(prices), "offers are sorted by total price"
    assert len(result["offers"]) <= 50
    for offer in result["offers"]:
        assert offer["slices"][0]["origin"] == "LHR"
        assert offer["slices"][-1]["destination"] == "JFK"
    assert elapsed < 3.0 + 0.5


async def test_list_airlines_names_every_connected_airline(stack: Stack) -> None:
    result = await call_tool(stack, "list_airlines", {})
    assert not result.is_error
    rows = result.structured_content["result"]
    assert {r["code"]: r["connector_kind"] for r in rows} == KINDS
    assert all(r["routes_served"] > 10 and r["status"] == "active" for r in rows)


async def test_slow_airline_yields_timeout_within_deadline_and_others_intact(
    stack: Stack, simulators: httpx.AsyncClient
) -> None:
    assert (await simulators.put("/airlines/DL", json={"fault": "slow", "slow_ms": 10_000})).status_code == 200
    result, elapsed = await timed_search(stack, search_args(deadline_ms=2000))
    statuses = {a["airline"]: a for a in result["airlines"]}
    assert statuses["DL"]["status"] == "timeout"
    assert result["status"] == "partial"
    assert all(statuses[c]["status"] == "ok" for c in ("BA", "AA", "VS", "AY"))
    assert {o["airline"] for o in result["offers"]} == {"BA", "AA", "VS", "AY"}
    assert elapsed <= 2.0 + 0.5, f"reply took {elapsed:.3f} s for a 2 s deadline"


async def test_stopped_airline_is_reported_and_others_answer(stack: Stack, simulators: httpx.AsyncClient) -> None:
    assert (await simulators.put("/airlines/AA", json={"fault": "refuse"})).status_code == 200
    result, elapsed = await timed_search(stack, search_args(deadline_ms=2500))
    statuses = {a["airline"]: a for a in result["airlines"]}
    assert statuses["AA"]["status"] in ("error", "timeout")
    assert statuses["AA"]["error_code"] in ("airline_unavailable", "airline_timeout")
    assert {o["airline"] for o in result["offers"]} == {"BA", "VS", "DL", "AY"}
    assert elapsed <= 2.5 + 0.5


async def test_malformed_airline_response_yields_error_and_dead_letter(
    stack: Stack, simulators: httpx.AsyncClient, kafka: KafkaProbe
) -> None:
    assert (await simulators.put("/airlines/VS", json={"fault": "malformed"})).status_code == 200
    before = await kafka.end_offsets(DLQ)
    result, _ = await timed_search(stack, search_args())
    statuses = {a["airline"]: a for a in result["airlines"]}
    assert statuses["VS"]["status"] == "error"
    assert statuses["VS"]["error_code"] == "airline_bad_response"
    assert {o["airline"] for o in result["offers"]} == {"BA", "AA", "DL", "AY"}

    request_id = result["request_id"]

    def found(messages: list[Any]) -> bool:
        return any(kafka.headers(m).get("request_id") == request_id for m in messages)

    messages = await kafka.read_since(DLQ, before, until_s=10, want=found)
    mine = [m for m in messages if kafka.headers(m).get("request_id") == request_id]
    assert len(mine) == 1
    headers = kafka.headers(mine[0])
    assert headers["dlq.original_topic"] == "jb.airline.VS.calls.v1"
    assert headers["dlq.stage"] == "connector.VS"
    assert headers["dlq.error_code"] == "airline_bad_response"
    assert headers["correlation_id"]
    assert kafka.codec is not None
    record = await kafka.codec.decode(mine[0].value(), DeadLetter)
    assert record.original_offset == int(headers["dlq.original_offset"])
    partition = int(headers["dlq.original_partition"])
    original = await kafka.read_since(
        "jb.airline.VS.calls.v1", {partition: record.original_offset}, until_s=10, want=lambda m: len(m) >= 1
    )
    assert original, "the original call is still on its topic"
    assert record.payload == original[0].value(), "the original call, byte-for-byte"
    assert record.original_key == original[0].key()


BAD_INPUTS: list[tuple[dict[str, Any], str]] = [
    ({"origin": "XQX"}, "origin"),
    ({"destination": "NOPE"}, "destination"),
    ({"departure_date": "2020-01-01"}, "departure_date"),
    ({"return_date": "2020-01-01"}, "return_date"),
    ({"adults": 0}, "adults"),
    ({"adults": 6, "children": 4}, "adults"),
    ({"adults": 1, "infants": 2}, "infants"),
    ({"cabin": "galley"}, "cabin"),
    ({"airlines": ["ZZ"]}, "airlines"),
    ({"max_offers": 0}, "max_offers"),
    ({"deadline_ms": 999_999}, "deadline_ms"),
]


async def test_bad_input_gets_a_tool_error_naming_the_field_publishes_no_request_and_is_audited(
    stack: Stack, kafka: KafkaProbe
) -> None:
    before = {t: await kafka.end_offsets(t) for t in (REQUESTS, AUDIT)}
    async with stack.agent() as client:
        for overrides, field in BAD_INPUTS:
            result = await client.call_tool("search_offers", search_args(**overrides))
            assert result.is_error, overrides
            assert f"'{field}'" in error_text(result), (field, error_text(result))
            assert f"'{field}': {field}:" not in error_text(result), "the field is named once"
        typed = await client.call_tool("search_offers", search_args(adults="two"))
        assert typed.is_error
        assert "adults" in error_text(typed)
    # Every refused call is audited (issue 9), off the reply path: one record each, and nothing else.
    refused = len(BAD_INPUTS) + 1
    audited = 0
    for _ in range(50):
        audited = sum((await kafka.end_offsets(AUDIT)).values()) - sum(before[AUDIT].values())
        if audited >= refused:
            break
        await asyncio.sleep(0.1)
    assert audited == refused
    assert await kafka.end_offsets(REQUESTS) == before[REQUESTS], "no request may be published for rejected input"


async def test_poison_request_goes_to_dead_letter_and_stream_goes_on(
    stack: Stack, settings: Settings, kafka: KafkaProbe, simulators: httpx.AsyncClient
) -> None:
    from jetbridge.kafka import AsyncProducer

    poison = b"\x00\x00\x00\x00\x01 this is not avro"
    before = await kafka.end_offsets(DLQ)
    producer = AsyncProducer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    sent = await producer.send(REQUESTS, key=b"poison-key", value=poison, headers=[("request_id", b"poison-1")])
    await producer.close()

    def found(messages: list[Any]) -> bool:
        return any(kafka.headers(m).get("request_id") == "poison-1" for m in messages)

    messages = [m for m in await kafka.read_since(DLQ, before, until_s=15, want=found) if found([m])]
    assert len(messages) == 1
    headers = kafka.headers(messages[0])
    assert headers["dlq.stage"] == "router"
    assert headers["dlq.error_code"] == "decode"
    assert headers["dlq.original_offset"] == str(sent.offset)
    assert messages[0].key() == b"poison-key"
    assert kafka.codec is not None
    record = await kafka.codec.decode(messages[0].value(), DeadLetter)
    assert record.payload == poison
    result, _ = await timed_search(stack, search_args())
    assert result["status"] == "complete", "the router kept going after the poison event"


async def test_two_bridge_instances_each_receive_exactly_their_own_replies(
    stack: Stack, simulators: httpx.AsyncClient
) -> None:
    async with second_bridge(stack) as second_url:
        # Different routes per instance, so a reply delivered to the wrong instance would show.
        jobs = [(stack.bridge_url, "LHR", "JFK"), (second_url, "JFK", "LHR")] * 4
        results = await asyncio.gather(
            *(timed_search(stack, search_args(origin=o, destination=d, deadline_ms=4000), url) for url, o, d in jobs)
        )
    ids = [r["request_id"] for r, _ in results]
    assert len(set(ids)) == len(jobs), "every call got its own reply"
    for (url, origin, destination), (result, _) in zip(jobs, results, strict=True):
        assert result["offers"], url
        for offer in result["offers"]:
            assert offer["slices"][0]["origin"] == origin, (url, offer)
            assert offer["slices"][0]["destination"] == destination


async def test_poison_airline_call_goes_to_dead_letter_and_worker_goes_on(
    stack: Stack, settings: Settings, kafka: KafkaProbe, simulators: httpx.AsyncClient
) -> None:
    from jetbridge.kafka import AsyncProducer

    before = await kafka.end_offsets(DLQ)
    producer = AsyncProducer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    poison = b"not even framed"
    await producer.send("jb.airline.BA.calls.v1", key=b"poison-call", value=poison, headers=[("request_id", b"p-2")])
    await producer.close()

    def found(messages: list[Any]) -> bool:
        return any(kafka.headers(m).get("request_id") == "p-2" for m in messages)

    messages = [m for m in await kafka.read_since(DLQ, before, until_s=15, want=found) if found([m])]
    assert len(messages) == 1
    headers = kafka.headers(messages[0])
    assert headers["dlq.stage"] == "connector.BA"
    assert headers["dlq.error_code"] == "decode"
    assert headers["dlq.original_topic"] == "jb.airline.BA.calls.v1"
    assert kafka.codec is not None
    assert (await kafka.codec.decode(messages[0].value(), DeadLetter)).payload == poison
    result, _ = await timed_search(stack, search_args(airlines=["BA"]))
    assert [(a["airline"], a["status"]) for a in result["airlines"]] == [("BA", "ok")]


async def test_airlines_that_do_not_fly_the_route_are_reported_not_served(stack: Stack) -> None:
    result, _ = await timed_search(stack, search_args(destination="HEL", airlines=["AY", "VS"]))
    statuses = {a["airline"]: a["status"] for a in result["airlines"]}
    assert statuses == {"AY": "ok", "VS": "not_served"}
    assert {o["airline"] for o in result["offers"]} == {"AY"}

    nobody, elapsed = await timed_search(stack, search_args(destination="HEL", airlines=["VS"]))
    assert nobody["status"] == "no_airlines"
    assert nobody["offers"] == []
    assert elapsed < 1.0, "nobody to wait for: the reply comes at once, not at the deadline"


async def test_two_agents_each_get_their_own_replies_audited_under_their_own_names(
    stack: Stack, kafka: KafkaProbe
) -> None:
    """Agent A cannot read agent B's request or reply: each session answers its own token's client only, a
    reply reaches the session that asked, and the audit trail names who asked what."""
    before = await kafka.end_offsets(AUDIT)
    async with stack.agent(client="agent-a") as a, stack.agent(client="agent-b") as b:
        calls = [(a, "LHR", "JFK"), (b, "JFK", "LHR")] * 3
        results = await asyncio.gather(
            *(agent.call_tool("search_offers", search_args(origin=o, destination=d)) for agent, o, d in calls)
        )
        listed = await b.call_tool("list_airlines", {})
    asked: dict[str, set[str]] = {"agent-a": set(), "agent-b": set()}
    for (agent, origin, _), result in zip(calls, results, strict=True):
        assert not result.is_error, error_text(result)
        content = result.structured_content or {}
        asked["agent-a" if agent is a else "agent-b"].add(content["request_id"])
        assert all(o["slices"][0]["origin"] == origin for o in content["offers"])  # its own search's offers
    assert not listed.is_error

    def complete(messages: list[Any]) -> bool:
        return len(messages) >= len(calls) + 1

    assert kafka.codec is not None
    records = [
        await kafka.codec.decode(m.value(), AuditRecord)
        for m in await kafka.read_since(AUDIT, before, until_s=10, want=complete)
    ]
    mine = [r for r in records if r.client_id in asked]
    searches = [r for r in mine if r.tool == "search_offers"]
    audited = {client: {r.request_id for r in searches if r.client_id == client} for client in asked}
    assert audited == asked
    assert [(r.client_id, r.outcome) for r in mine if r.tool == "list_airlines"] == [("agent-b", "answered")]
