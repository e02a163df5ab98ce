"""One search traced across every hop of the local stack: the bridge's tool span is the root and its trace id is
the one in the request's ``traceparent``; the router's span is its child, each airline call's span is the
router's child (retries as its events), the aggregator's too; and ``jetbridge trace <request_id>`` prints it."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import httpx
import pytest
from mcp_types import RequestParamsMeta

from jetbridge.topics import REQUESTS
from jetbridge.trace_view import find_trace, read_spans
from jetbridge.tracing import REQUEST_ID
from tests.e2e.conftest import Stack
from tests.e2e.test_orders import BOOKER, first_offer
from tests.e2e.test_search import KINDS, search_args, timed_search
from tests.support.kafka_tools import KafkaProbe

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]


def stage(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [s for s in spans if (s.get("attributes") or {}).get("jetbridge.stage") == name]


async def spans_of(stack: Stack, request_id: str, airlines: int, timeout_s: float = 15.0) -> list[dict[str, Any]]:
    """The request's spans once every process wrote its own (they leave through batch processors)."""
    give_up = time.monotonic() + timeout_s
    while True:
        spans = find_trace(read_spans(stack.home / "traces"), request_id)
        names = [s["name"] for s in spans]
        if "aggregate" in names and "tools/call search_offers" in names and len(stage(spans, "connector")) >= airlines:
            return spans
        if time.monotonic() > give_up:
            raise AssertionError(f"spans of {request_id} incomplete after {timeout_s} s: {sorted(names)}")
        await asyncio.sleep(0.2)


async def test_a_search_is_one_trace_from_the_tool_call_through_every_airline_to_the_reply(
    stack: Stack, simulators: httpx.AsyncClient, kafka: KafkaProbe
) -> None:
    assert (await simulators.put("/airlines/DL", json={"fault": "http_500"})).status_code == 200
    before = await kafka.end_offsets(REQUESTS)
    # fresh: the airlines called live (an earlier test's identical search would be answered from the cache)
    result, _ = await timed_search(stack, search_args(fresh=True))
    request_id = result["request_id"]
    messages = await kafka.read_since(
        REQUESTS, before, until_s=10, want=lambda found: any(m.key() == request_id.encode() for m in found)
    )
    [request] = [m for m in messages if m.key() == request_id.encode()]
    _, trace_id, bridge_span_id, _ = kafka.headers(request)["traceparent"].split("-")

    spans = await spans_of(stack, request_id, airlines=len(KINDS))
    assert {s["trace_id"] for s in spans} == {trace_id}, "every hop in the request's trace"
    [tool] = [s for s in spans if s["name"] == "tools/call search_offers"]
    assert (tool["span_id"], tool["parent_id"]) == (bridge_span_id, None), "the tool span is the root"
    assert tool["attributes"]["mcp.method.name"] == "tools/call"
    [router] = stage(spans, "router")
    assert router["parent_id"] == tool["span_id"]
    assert router["attributes"]["messaging.destination.name"] == REQUESTS
    calls = {s["attributes"]["jetbridge.airline"]: s for s in stage(spans, "connector")}
    assert set(calls) == set(KINDS)
    assert {s["parent_id"] for s in calls.values()} == {router["span_id"]}, "airline calls nested under the router"
    assert calls["DL"]["status"] == "ERROR"
    # Its guard's decisions as events: failed attempts and retries, or (its breaker opened by an earlier test's
    # failures) the call stopped at once; either way the reason the call ended.
    events = [e["name"] for e in calls["DL"]["events"]]
    assert events[-1] == "call stopped", events
    # each failed attempt is an event, and a retry follows one only when the budget and the breaker allow it
    assert set(events[:-1]) <= {"attempt failed", "retry"}, events
    assert events[0] in ("attempt failed", "call stopped"), events
    assert calls["BA"]["status"] == "UNSET"
    assert calls["BA"]["attributes"][REQUEST_ID] == request_id
    [aggregate] = stage(spans, "aggregator")
    assert aggregate["parent_id"] == router["span_id"]

    shown = await asyncio.to_thread(stack.jetbridge, "trace", request_id, timeout=60)
    assert shown.returncode == 0, shown.stderr
    print(shown.stdout)  # the tree, for whoever reads the test's output
    assert f"trace {trace_id}" in shown.stdout
    for name in ("tools/call search_offers", f"process {REQUESTS}", "aggregate", "connector · DL", "call stopped"):
        assert name in shown.stdout, (name, shown.stdout)


async def test_an_order_call_is_one_trace_from_the_bridge_to_the_airlines_connector(stack: Stack) -> None:
    """price_offer through the stack: the bridge's order span, and the connector's span for the call its child,
    in the agent's own trace when the agent sent its traceparent in the call's _meta."""
    agent_trace, agent_span = "5" * 32, "6" * 16
    async with stack.agent(scopes=BOOKER) as agent:
        offer = await first_offer(agent, "BA", days=63)
        since = time.time_ns()
        # an open map (extra_items), which mypy does not read yet
        meta = cast(RequestParamsMeta, {"traceparent": f"00-{agent_trace}-{agent_span}-01"})
        priced = await agent.call_tool("price_offer", {"offer_id": offer["offer_id"]}, meta=meta)
        assert not priced.is_error
    give_up = time.monotonic() + 15
    while True:
        spans = [s for s in read_spans(stack.home / "traces") if int(s["start_ns"]) >= since]
        bridge = [s for s in spans if s["name"] == "order price BA"]
        connector = [s for s in spans if s["name"] == "process jb.airline.BA.orders.v1"]
        if bridge and connector:
            break
        assert time.monotonic() < give_up, f"order spans missing: {sorted(s['name'] for s in spans)}"
        await asyncio.sleep(0.2)
    [call] = bridge
    [processed] = connector
    assert (call["trace_id"], call["parent_id"]) == (agent_trace, agent_span), "in the agent's trace"
    assert (processed["trace_id"], processed["parent_id"]) == (agent_trace, call["span_id"])
    assert call["attributes"][REQUEST_ID] == processed["attributes"][REQUEST_ID]
    assert processed["attributes"]["jetbridge.reply.status"] == "OK"
    assert call["attributes"]["messaging.destination.name"] == "jb.airline.BA.orders.v1"
    shown = await asyncio.to_thread(stack.jetbridge, "trace", call["attributes"][REQUEST_ID], timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "order price BA" in shown.stdout
    assert "child of the MCP client's span" in shown.stdout, shown.stdout
    assert "connector · BA" in shown.stdout
