"""From offer to order through the whole stack, as an agent and the person behind it see it (issue 11).

A real MCP client over HTTP with a development-issuer token holding ``orders:write``; the person is the client's
elicitation callback. Orders are counted at the simulators, as the airlines would count them: one airline of
each connector kind (NDC, both REST dialects, the airline's own MCP server).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from mcp_types import ElicitResult

from mcp_bridge.auth import OFFERS_READ, ORDERS_WRITE
from mcp_bridge.task_client import CreateTaskResult, TasksClient, get_task, wait_for_task
from tests.e2e.conftest import Stack, error_text, second_bridge
from tests.support.kafka_tools import KafkaProbe

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

BOOKER = (OFFERS_READ, ORDERS_WRITE)
KINDS = {"BA": "ndc", "VS": "rest", "DL": "rest", "AY": "mcp"}
# Personal data of this test's passengers: looked for afterwards in every log line, topic and dead letter.
FAMILY = "Quillfeather"
EMAIL = "ottoline.quillfeather@example.org"
PASSPORT = "QF7340912"


def passenger(given: str = "Ottoline", passport: str = PASSPORT) -> dict[str, Any]:
    return {
        "given_name": given,
        "family_name": FAMILY,
        "date_of_birth": "1979-04-23",
        "document": {"number": passport, "issuing_country": "GB", "expires_on": "2034-01-31"},
    }


CONTACT = {"email": EMAIL, "phone": "+44 20 7946 0018"}


class Person:
    """The person behind the agent: answers every confirmation, and remembers what it was asked."""

    def __init__(self, confirm: bool = True) -> None:
        self.confirm = confirm
        self.asked: list[str] = []

    async def __call__(self, context: Any, params: Any) -> ElicitResult:
        self.asked.append(params.message)
        return ElicitResult(action="accept", content={"confirm": self.confirm})


async def tool(agent: Any, name: str, **arguments: Any) -> dict[str, Any]:
    result = await agent.call_tool(name, arguments)
    assert not result.is_error, error_text(result)
    assert result.structured_content is not None
    return dict(result.structured_content)


async def first_offer(agent: Any, airline: str, days: int) -> dict[str, Any]:
    departure = (datetime.now(UTC).date() + timedelta(days=days)).isoformat()
    found = await tool(
        agent,
        "search_offers",
        origin="LHR",
        destination="JFK",
        departure_date=departure,
        adults=1,
        airlines=[airline],
        fresh=True,
        deadline_ms=8000,
    )
    assert found["offers"], found["airlines"]
    offer: dict[str, Any] = found["offers"][0]
    assert offer["offer_id"].startswith(f"{airline}:")
    return offer


async def sim_orders(simulators: httpx.AsyncClient, airline: str) -> list[dict[str, Any]]:
    answer = await simulators.get(f"/airlines/{airline}/orders")
    orders: list[dict[str, Any]] = answer.json()["orders"]
    return orders


async def sim_calls(simulators: httpx.AsyncClient, airline: str) -> int:
    return int((await simulators.get(f"/airlines/{airline}")).json()[airline]["calls"])


@pytest.mark.parametrize("airline", list(KINDS), ids=[f"{code}-{kind}" for code, kind in KINDS.items()])
async def test_search_price_book_get_cancel(stack: Stack, simulators: httpx.AsyncClient, airline: str) -> None:
    person = Person()
    async with stack.agent(scopes=BOOKER, elicitation_callback=person) as agent:
        offer = await first_offer(agent, airline, days=40)
        price = await tool(agent, "price_offer", offer_id=offer["offer_id"])
        assert price["total_amount"] == offer["total_amount"]
        assert price["documents_required"] is True  # LHR-JFK crosses a border
        made = await tool(agent, "create_order", offer_id=offer["offer_id"], passengers=[passenger()], contact=CONTACT)
        assert made["status"] == "confirmed"
        assert made["total_amount"] == price["total_amount"]
        assert made["order_id"].startswith(f"{airline}:")
        got = await tool(agent, "get_order", order_id=made["order_id"])
        assert got["status"] == "confirmed"
        assert got["live"] is True
        cancelled = await tool(agent, "cancel_order", order_id=made["order_id"])
        assert cancelled["status"] == "cancelled"
    assert len(person.asked) == 2
    assert f"Ottoline {FAMILY}" in person.asked[0]
    assert price["total_amount"] in person.asked[0]
    at_airline = await sim_orders(simulators, airline)
    assert [(o["order_id"], o["status"]) for o in at_airline] == [(made["order_id"].split(":", 1)[1], "CANCELLED")]


async def test_a_declined_confirmation_calls_no_airline(stack: Stack, simulators: httpx.AsyncClient) -> None:
    person = Person(confirm=False)
    async with stack.agent(scopes=BOOKER, elicitation_callback=person) as agent:
        offer = await first_offer(agent, "BA", days=41)
        await tool(agent, "price_offer", offer_id=offer["offer_id"])
        before = await sim_calls(simulators, "BA")
        result = await agent.call_tool(
            "create_order", {"offer_id": offer["offer_id"], "passengers": [passenger()], "contact": CONTACT}
        )
    assert result.is_error
    assert "confirmation_declined" in error_text(result)
    assert await sim_calls(simulators, "BA") == before, "no call at all reached the airline"
    assert await sim_orders(simulators, "BA") == []


async def test_a_client_without_orders_write_does_not_see_the_order_tools(stack: Stack) -> None:
    async with stack.agent(scopes=(OFFERS_READ,)) as shopper:
        names = {t.name for t in (await shopper.list_tools()).tools}
    assert {"search_offers", "list_airlines", "price_offer"} <= names
    assert not names & {"create_order", "get_order", "cancel_order"}
    async with stack.agent(scopes=BOOKER) as booker:
        names = {t.name for t in (await booker.list_tools()).tools}
    assert {"create_order", "get_order", "cancel_order"} <= names


async def test_a_timeout_after_the_order_was_made_then_a_retry_makes_one_order(
    stack: Stack, simulators: httpx.AsyncClient
) -> None:
    person = Person()
    async with stack.agent(scopes=BOOKER, elicitation_callback=person) as agent:
        offer = await first_offer(agent, "DL", days=42)
        await tool(agent, "price_offer", offer_id=offer["offer_id"])
        # The airline makes the order, then answers long after the connector stopped waiting.
        await simulators.put("/airlines/DL", json={"order_fault": "timeout_after_create", "slow_ms": 20000})
        arguments = {"offer_id": offer["offer_id"], "passengers": [passenger()], "contact": CONTACT}
        first = await agent.call_tool("create_order", arguments)
        await simulators.put("/airlines/DL", json={"order_fault": "none"})
        if first.is_error:
            assert "order_outcome_unknown" in error_text(first)
        again = await tool(agent, "create_order", **arguments)
    assert again["reconciled"] is True
    at_airline = await sim_orders(simulators, "DL")
    assert len(at_airline) == 1, at_airline
    assert again["order_id"] == f"DL:{at_airline[0]['order_id']}"


async def test_the_same_order_asked_twice_at_once_is_made_once(stack: Stack, simulators: httpx.AsyncClient) -> None:
    async with stack.agent(scopes=BOOKER, elicitation_callback=Person()) as agent:
        offer = await first_offer(agent, "VS", days=43)
        await tool(agent, "price_offer", offer_id=offer["offer_id"])
        arguments = {"offer_id": offer["offer_id"], "passengers": [passenger()], "contact": CONTACT}
        both = await asyncio.gather(*(tool(agent, "create_order", **arguments) for _ in range(2)))
    assert both[0]["order_id"] == both[1]["order_id"]
    assert len(await sim_orders(simulators, "VS")) == 1


async def heard_within(subscription: Any, seconds: float) -> list[Any]:
    """The events a listen stream delivers in the next ``seconds``."""
    heard: list[Any] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for event in subscription:
                heard.append(event)
    return heard


@pytest.mark.parametrize("airline", ["BA", "AY"], ids=["BA-webhook", "AY-mcp-notification"])
async def test_an_airline_cancellation_reaches_a_subscribed_agent_and_the_topic_within_a_second(
    stack: Stack, simulators: httpx.AsyncClient, airline: str
) -> None:
    settings = stack.settings()
    probe = KafkaProbe(settings)
    topic = settings.topic_prefix + "jb.orders.v1"
    async with stack.agent(scopes=BOOKER, elicitation_callback=Person()) as agent:
        offer = await first_offer(agent, airline, days=44)
        await tool(agent, "price_offer", offer_id=offer["offer_id"])
        made = await tool(agent, "create_order", offer_id=offer["offer_id"], passengers=[passenger()], contact=CONTACT)
        since = await probe.end_offsets(topic)
        async with (
            stack.agent(client="someone-else", scopes=BOOKER) as stranger,
            stranger.listen(resource_subscriptions=[made["resource_uri"]]) as overheard,
            agent.listen(resource_subscriptions=[made["resource_uri"]]) as subscription,
        ):
            # another client's order is left out of the stranger's acknowledged filter
            assert overheard.honored is not None
            assert not overheard.honored.resource_subscriptions, overheard.honored
            started, wall = time.monotonic(), time.time()
            native = made["order_id"].split(":", 1)[1]
            changed = await simulators.post(
                f"/airlines/{airline}/orders/{native}/change", json={"change": "cancel", "reason": "Crew shortage"}
            )
            assert changed.status_code == 200, changed.text
            async with asyncio.timeout(5):
                async for event in subscription:
                    if getattr(event, "uri", None) == made["resource_uri"]:
                        break
            heard_after = time.monotonic() - started
            stranger_heard = await heard_within(overheard, 1.0)
        assert stranger_heard == [], "nobody hears of another client's order"
        read = await agent.read_resource(made["resource_uri"])
        content = read.contents[0].text  # type: ignore[union-attr]
    assert heard_after < 1.0, f"the agent heard of it {heard_after:.2f} s after the airline cancelled"
    assert '"status":"cancelled"' in content
    assert '"changed_by":"airline"' in content
    records = await probe.read_since(topic, since, until_s=3)
    ours = [
        r for r in records if r.key() == made["order_id"].encode() and b"airline_cancellation" in (r.value() or b"")
    ]
    assert ours, "the airline's cancellation is on jb.orders.v1"
    written_ms = ours[0].timestamp()[1] - wall * 1000
    assert written_ms < 1000, f"on jb.orders.v1 {written_ms:.0f} ms after the airline cancelled"


async def test_no_passenger_data_in_any_log_line_dead_letter_audit_record_or_event(
    stack: Stack, simulators: httpx.AsyncClient
) -> None:
    """After bookings on every kind (and a refused one, and an airline failing), the passengers' names, email and
    passport appear nowhere but at the airline (the simulators' own log is the airline's)."""
    settings = stack.settings()
    probe = KafkaProbe(settings)
    topics = ["jb.orders.v1", "jb.order-replies.v1", "jb.audit.v1", "jb.dlq.v1", "jb.requests.v1"]
    topics += [f"jb.airline.{code}.orders.v1" for code in (*KINDS, "AA")]
    topics = [settings.topic_prefix + t for t in topics]
    since = {t: await probe.end_offsets(t) for t in topics}
    async with stack.agent(scopes=BOOKER, elicitation_callback=Person()) as agent:
        for n, airline in enumerate(KINDS):
            offer = await first_offer(agent, airline, days=50 + n)
            await tool(agent, "price_offer", offer_id=offer["offer_id"])
            await tool(agent, "create_order", offer_id=offer["offer_id"], passengers=[passenger()], contact=CONTACT)
        bad = await agent.call_tool(
            "create_order",
            {"offer_id": offer["offer_id"], "passengers": [passenger(given="Ottoline9")], "contact": CONTACT},
        )
        assert bad.is_error
        await simulators.put("/airlines/AA", json={"order_fault": "fail"})
        offer = await first_offer(agent, "AA", days=59)
        await tool(agent, "price_offer", offer_id=offer["offer_id"])
        failed = await agent.call_tool(
            "create_order", {"offer_id": offer["offer_id"], "passengers": [passenger()], "contact": CONTACT}
        )
        assert failed.is_error
    personal = (FAMILY, EMAIL, PASSPORT, "Ottoline")
    found: list[str] = []
    for topic in topics:
        for record in await probe.read_since(topic, since[topic], until_s=2):
            raw = bytes(record.value() or b"").decode("utf-8", "replace") + repr(KafkaProbe.headers(record))
            found += [f"{topic}: {p}" for p in personal if p in raw]
    await asyncio.sleep(0.5)
    for path in (stack.home / "logs").glob("*.log"):
        if path.name.startswith("simulators"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [f"{path.name}: {p}" for p in personal if p in text]
    assert found == [], f"personal data found: {found}"


async def test_a_task_search_gets_its_late_airline_and_a_price_runs_as_a_task(
    stack: Stack, simulators: httpx.AsyncClient
) -> None:
    """The asynchronous pattern through the whole stack: the task is handed out at once; at the agent's deadline
    it holds the partial result (the slow airline pending); the slow airline's offers reach it later."""
    await simulators.put("/airlines/AY", json={"latency_ms": 2000, "jitter_ms": 0})
    departure = (datetime.now(UTC).date() + timedelta(days=45)).isoformat()
    search = {"origin": "LHR", "destination": "JFK", "departure_date": departure, "adults": 1}
    async with stack.agent(scopes=BOOKER, extensions=[TasksClient()]) as agent:
        started = time.monotonic()
        created = await agent.session.call_tool(
            "search_offers", search | {"deadline_ms": 1000, "fresh": True}, allow_claimed=True
        )
        assert isinstance(created, CreateTaskResult), created
        assert time.monotonic() - started < 1.0, "the task is handed out at once"
        await asyncio.sleep(1.4)
        partial = await get_task(agent.session, created.task_id)
        assert partial.result is not None, partial
        statuses = {a["airline"]: a["status"] for a in partial.result["structuredContent"]["airlines"]}
        assert statuses["AY"] == "pending", statuses
        assert statuses["BA"] == "ok", statuses
        done = await asyncio.wait_for(wait_for_task(agent.session, created.task_id, poll_ms=200), 20)
        assert done.result is not None
        final = done.result["structuredContent"]
        assert {a["airline"]: a["status"] for a in final["airlines"]}["AY"] == "ok"
        assert any(o["airline"] == "AY" for o in final["offers"]), "the late airline's offers are in the result"

        offer = next(o for o in final["offers"] if o["airline"] == "BA")
        priced = await agent.session.call_tool("price_offer", {"offer_id": offer["offer_id"]}, allow_claimed=True)
        assert isinstance(priced, CreateTaskResult), priced
        settled = await asyncio.wait_for(wait_for_task(agent.session, priced.task_id, poll_ms=100), 20)
    assert settled.status == "completed"
    assert settled.result is not None
    assert settled.result["structuredContent"]["offer_id"] == offer["offer_id"]


async def test_booking_and_cancelling_run_as_tasks_once_the_person_answered(
    stack: Stack, simulators: httpx.AsyncClient
) -> None:
    """On 2026-07-28 with the tasks extension: create_order's input-required round (the person's confirmation)
    comes first, then the call that brings the answer runs as a task; the client sees the order either way."""
    settings = stack.settings()
    probe = KafkaProbe(settings)
    topic = settings.topic_prefix + "jb.tasks.v1"
    since = await probe.end_offsets(topic)
    person = Person()
    async with stack.agent(scopes=BOOKER, elicitation_callback=person, extensions=[TasksClient()]) as agent:
        offer = await first_offer(agent, "AA", days=46)
        await tool(agent, "price_offer", offer_id=offer["offer_id"])
        made = await tool(agent, "create_order", offer_id=offer["offer_id"], passengers=[passenger()], contact=CONTACT)
        cancelled = await tool(agent, "cancel_order", order_id=made["order_id"])
    assert made["status"] == "confirmed"
    assert cancelled["status"] == "cancelled"
    assert len(person.asked) == 2
    records = await probe.read_since(topic, since, until_s=3)
    assert any(b"create_order" in (r.value() or b"") for r in records), "create_order ran as a task (jb.tasks.v1)"
    assert not any(FAMILY.encode() in (r.value() or b"") for r in records), "no passenger data in task state"
    assert [o["status"] for o in await sim_orders(simulators, "AA")] == ["CANCELLED"]


async def test_an_order_made_through_one_bridge_is_seen_and_cancelled_through_another(
    stack: Stack, simulators: httpx.AsyncClient
) -> None:
    """Two bridge instances: the quote, the order and its scoping are the backbone's, not one process's."""
    person = Person()
    async with second_bridge(stack) as other:
        async with stack.agent(scopes=BOOKER, elicitation_callback=person) as here:
            offer = await first_offer(here, "BA", days=47)
            await tool(here, "price_offer", offer_id=offer["offer_id"])
        async with stack.agent(other, scopes=BOOKER, elicitation_callback=person) as there:
            made = await tool(
                there, "create_order", offer_id=offer["offer_id"], passengers=[passenger()], contact=CONTACT
            )
        async with stack.agent(scopes=BOOKER, elicitation_callback=person) as here:
            got = await tool(here, "get_order", order_id=made["order_id"])
        async with stack.agent(other, client="someone-else", scopes=BOOKER, elicitation_callback=person) as stranger:
            theirs = await stranger.call_tool("get_order", {"order_id": made["order_id"]})
        async with stack.agent(other, scopes=BOOKER, elicitation_callback=person) as there:
            cancelled = await tool(there, "cancel_order", order_id=made["order_id"])
    assert got["status"] == "confirmed"
    assert theirs.is_error
    assert "order_not_found" in error_text(theirs)
    assert cancelled["status"] == "cancelled"
    assert [o["status"] for o in await sim_orders(simulators, "BA")] == ["CANCELLED"]
