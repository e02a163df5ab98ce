"""The aggregator's runtime without Kafka: events held until the reply is durable, released in offset
order, a reply that fails (not queued, or refused by the broker) is retried, and an answered request is
never answered again."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest

from jetbridge.errors import KafkaError, RequestExpired
from schemas.models import ReplyStatus, SearchReply, now_utc
from streams.acks import InOrderAcks, Ticket
from streams.aggregator import Aggregator
from tests.support import factories as f

RESPONSES = "jb.airline-responses.v1"
REQUESTS = "jb.requests.v1"


class Harness:
    def __init__(self) -> None:
        self.acked: list[tuple[str, int]] = []
        self.sent: list[SearchReply] = []
        self.fail_sends = 0  # replies that cannot even be queued
        self.refuse_acks = 0  # replies queued, then refused by the broker
        self.now = now_utc()
        self.acks = InOrderAcks(ack=self.acked.append)
        self.core = Aggregator(
            send_reply=self.send, acks=self.acks, reply_window=timedelta(minutes=10), clock=lambda: self.now
        )
        self._offsets: dict[str, int] = {}

    async def send(self, reply: SearchReply, headers: dict[str, str]) -> asyncio.Future[Any]:
        if self.fail_sends:
            self.fail_sends -= 1
            raise KafkaError("broker away")
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.refuse_acks:
            self.refuse_acks -= 1
            delivery.set_exception(KafkaError("not enough replicas"))
        else:
            self.sent.append(reply)
            delivery.set_result(None)
        return delivery

    async def settle(self) -> None:
        """Let the acknowledgements' callbacks run (the broker answered)."""
        for _ in range(3):
            await asyncio.sleep(0)

    async def tick(self) -> None:
        await self.core.tick()
        await self.settle()

    def ticket(self, topic: str) -> tuple[Ticket, int]:
        offset = self._offsets.get(topic, 0)
        self._offsets[topic] = offset + 1
        return self.acks.hold(topic, 0, offset, (topic, offset)), offset

    async def plan(self, request_id: str, expected: list[str], deadline: datetime | None = None) -> None:
        """A request met by the search agent: admitted (or not), then joined with the router's plan."""
        ticket, _ = self.ticket(REQUESTS)
        plan = f.plan(expected, request_id=request_id, deadline=deadline or self.now + timedelta(seconds=3))
        if not self.core.admit(request_id, plan.deadline):
            self.acks.release(ticket)
            return
        await self.core.on_plan(ticket, 0, plan, {"client_id": "c1", "traceparent": "00-abc"})
        await self.settle()

    async def respond(self, request_id: str, airline: str) -> None:
        ticket, _ = self.ticket(RESPONSES)
        await self.core.on_response(ticket, 0, f.response(airline, request_id=request_id))
        await self.settle()


async def test_events_are_acknowledged_only_once_the_reply_is_sent() -> None:
    h = Harness()
    await h.plan("r1", ["BA", "AA"])
    await h.respond("r1", "BA")
    assert h.acked == [], "an open join holds its events"
    await h.respond("r1", "AA")
    assert [r.request_id for r in h.sent] == ["r1"]
    assert sorted(h.acked) == [(RESPONSES, 0), (RESPONSES, 1), (REQUESTS, 0)]


async def test_a_join_that_completes_first_waits_for_older_open_joins_before_its_offsets_are_acknowledged() -> None:
    h = Harness()
    await h.plan("old", ["BA", "AA"])
    await h.plan("new", ["BA"])
    await h.respond("old", "BA")
    await h.respond("new", "BA")
    assert [r.request_id for r in h.sent] == ["new"]
    assert h.acked == [], "offsets of 'new' sit behind the open join 'old' on both partitions"
    await h.respond("old", "AA")
    assert [e[1] for e in h.acked if e[0] == REQUESTS] == [0, 1]
    assert [e[1] for e in h.acked if e[0] == RESPONSES] == [0, 1, 2], "released in offset order"


async def test_the_timer_answers_at_the_deadline_with_what_it_has() -> None:
    h = Harness()
    await h.plan("r1", ["BA", "AA"], deadline=h.now + timedelta(seconds=1))
    await h.respond("r1", "BA")
    await h.tick()
    assert h.sent == []
    h.now += timedelta(seconds=1)
    await h.tick()
    [reply] = h.sent
    assert reply.status is ReplyStatus.PARTIAL
    assert len(h.acked) == 2


async def test_a_reply_that_cannot_be_sent_is_retried_and_its_events_stay_held() -> None:
    h = Harness()
    h.fail_sends = 2
    await h.plan("r1", ["BA"])
    await h.respond("r1", "BA")
    assert h.sent == []
    assert h.acked == [], "nothing is acknowledged while the reply is not durable"
    for _ in range(3):
        h.now += timedelta(seconds=4)
        await h.tick()
    assert [r.request_id for r in h.sent] == ["r1"]
    assert len(h.acked) == 2


async def test_a_reply_the_broker_refuses_is_sent_again_by_the_timer_and_its_events_stay_held() -> None:
    h = Harness()
    h.refuse_acks = 1
    await h.plan("r1", ["BA"])
    await h.respond("r1", "BA")
    assert h.sent == []
    assert h.acked == [], "refused: not durable, so nothing is acknowledged"
    assert "r1" in h.core.open
    h.now += timedelta(seconds=1)
    await h.tick()
    assert [r.request_id for r in h.sent] == ["r1"]
    assert len(h.acked) == 2
    assert h.core.open == {}


async def test_airlines_already_answered_are_known_when_a_request_is_routed_again() -> None:
    h = Harness()
    await h.respond("r1", "BA")  # a replay can meet a response before its request
    assert h.core.answered_airlines("r1") == {"BA"}
    assert h.core.answered_airlines("unknown") == frozenset()


async def test_an_answered_request_is_never_answered_again() -> None:
    h = Harness()
    await h.plan("r1", ["BA"])
    await h.respond("r1", "BA")
    await h.plan("r1", ["BA"])  # a replayed plan
    await h.respond("r1", "BA")  # a late duplicate
    h.now += timedelta(seconds=10)
    await h.tick()
    assert [r.request_id for r in h.sent] == ["r1"]
    assert len(h.acked) == 4, "the duplicates are acknowledged at once"


async def test_requests_found_on_the_reply_topic_are_not_answered_again_after_a_takeover() -> None:
    h = Harness()
    h.core.learn_replies({"r1": int(h.now.timestamp() * 1000)})
    await h.plan("r1", ["BA"])
    await h.respond("r1", "BA")
    assert h.sent == []
    assert len(h.acked) == 2


async def test_a_rebalance_forgets_open_joins_and_old_tickets_are_never_acknowledged() -> None:
    h = Harness()
    await h.plan("r1", ["BA", "AA"])
    await h.respond("r1", "BA")
    old_tickets = list(h.core.open["r1"].tickets)
    await h.core.on_revoked()
    assert h.core.open == {}
    h.acks.release_all(old_tickets)
    assert h.acked == [], "events held before the rebalance are delivered again and acknowledged then"


async def test_a_plan_met_again_past_the_reply_window_is_expired_not_answered() -> None:
    h = Harness()
    with pytest.raises(RequestExpired):
        await h.plan("r-old", ["BA"], deadline=h.now - timedelta(minutes=11))
    await h.respond("r-old", "BA")
    assert h.sent == []
    assert h.acked == [(RESPONSES, 0)], "its responses are let go at once"


async def test_responses_whose_plan_never_comes_are_dropped_after_the_plan_wait() -> None:
    h = Harness()
    await h.respond("orphan", "BA")
    h.now += timedelta(seconds=61)
    await h.tick()
    assert h.core.open == {}
    assert h.acked == [(RESPONSES, 0)]
    assert h.sent == []
