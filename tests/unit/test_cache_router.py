"""The router's cache decision (``streams/router.py``) against an in-memory offer cache and a recording
producer: a fresh answer is published for its airline instead of a call, an unavailable airline is answered
stale when its policy allows, ``fresh`` bypasses the cache, and the answers are deliveries the request waits
for, never given twice for a request routed again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY

from jetbridge.airlines import AirlineRegistry, CachePolicy
from schemas.codec import AvroCodec
from schemas.models import (
    AirlineCall,
    AirlineResponse,
    OfferSource,
    ResponseStatus,
    SearchReply,
    SearchRequest,
    now_utc,
)
from streams.dead_letters import DeadLetters
from streams.joining import Joining
from streams.router import CACHE_KIND, Routed
from tests.support import factories as f
from tests.support.offer_cache_double import MemoryOfferCache, answer
from tests.support.router_context import TRACE, Context, Sent, route_recorded, router_codec


@pytest.fixture
async def codec() -> AsyncIterator[AvroCodec]:
    async with router_codec() as avro:
        yield avro


FRESH = timedelta(seconds=30)  # fresh for this much longer
STALE = -timedelta(seconds=30)  # stale since this long


@dataclass
class Outcome:
    ctx: Context
    sent: list[Sent]
    routed: Routed

    def calls(self) -> list[str]:
        """The airlines called, in order."""
        return [s.topic.split(".")[-3] for s in self.sent if s.topic != self.ctx.names.responses]

    async def answers(self, codec: AvroCodec) -> dict[str, AirlineResponse]:
        """The responses the router published, by airline."""
        found = [await codec.decode(s.value, AirlineResponse) for s in self.sent if s.topic == self.ctx.names.responses]
        return {r.airline: r for r in found}


async def route(
    codec: AvroCodec,
    request: SearchRequest,
    cache: MemoryOfferCache | None,
    *,
    skips: dict[str, str] | None = None,
    answered: frozenset[str] = frozenset(),
    no_stale: frozenset[str] = frozenset(),
) -> Outcome:
    ctx = Context(codec, skips or {}, cache)
    if no_stale:
        ctx.airlines = AirlineRegistry(
            [replace(a, cache=CachePolicy(serve_stale=False)) if a.code in no_stale else a for a in ctx.airlines]
        )
    sent, routed = await route_recorded(ctx, codec, request, answered)
    return Outcome(ctx, sent, routed)


def cached(
    cache: MemoryOfferCache, airline: str, freshness: timedelta, *, age: timedelta = timedelta(seconds=40), **kw: Any
) -> AirlineResponse:
    """Keep ``airline``'s answer to the default search (given to an earlier request) in ``cache``."""
    response = f.response(airline, request_id="req-earlier", correlation_id="req-earlier", **kw)
    cache.keep(f.criteria(), answer(response, age=age, fresh_for=freshness))
    return response


def lookups(airline: str, result: str) -> float:
    return REGISTRY.get_sample_value("jb_cache_lookups_total", {"airline": airline, "result": result}) or 0.0


async def test_a_fresh_cached_answer_is_published_for_its_airline_which_is_not_called_but_waited_for(
    codec: AvroCodec,
) -> None:
    cache = MemoryOfferCache()
    earlier = cached(cache, "BA", FRESH)
    request = f.request(["BA", "AA"], request_id="req-c1", correlation_id="corr-c1")
    hits, saved = lookups("BA", "hit"), REGISTRY.get_sample_value("jb_cache_calls_saved_total", {"airline": "BA"})
    out = await route(codec, request, cache)
    assert out.calls() == ["AA"], "BA answered from the cache: no call"
    assert out.routed.plan.expected_airlines == ["BA", "AA"], "the aggregator waits for BA's answer as for any"
    ba = (await out.answers(codec))["BA"]
    assert (ba.request_id, ba.correlation_id, ba.status) == ("req-c1", "corr-c1", ResponseStatus.OK)
    assert (ba.source, ba.connector_kind, ba.attempts, ba.error) == (OfferSource.CACHE, CACHE_KIND, 0, None)
    assert ba.offers == earlier.offers
    assert ba.cached_at is not None
    assert ba.cached_at < now_utc() - timedelta(seconds=39)
    [published] = [s for s in out.sent if s.topic == out.ctx.names.responses]
    assert published.key == b"req-c1"
    assert published.headers == out.sent[-1].headers == out.routed.headers, "the same envelope as the calls"
    assert published.headers["traceparent"] == TRACE
    assert len(out.routed.deliveries) == 2, "the answer is a delivery the request is held for, like a call"
    assert lookups("BA", "hit") == hits + 1
    assert REGISTRY.get_sample_value("jb_cache_calls_saved_total", {"airline": "BA"}) == (saved or 0) + 1


async def test_an_airline_without_a_fresh_answer_is_called_and_nothing_is_published_for_it(codec: AvroCodec) -> None:
    cache = MemoryOfferCache()
    cached(cache, "BA", STALE)  # stale: the airline is asked; its connector may stand it in if it fails
    cached(cache, "AA", FRESH, offers=[f.offer("AA", expires_at=now_utc() - timedelta(seconds=1))])
    misses = lookups("VS", "miss")
    out = await route(codec, f.request(["BA", "AA", "VS"]), cache)
    assert out.calls() == ["BA", "AA", "VS"]
    assert await out.answers(codec) == {}
    assert lookups("VS", "miss") == misses + 1


async def test_one_lookup_per_request_for_the_airlines_it_would_call_and_the_unavailable_ones(
    codec: AvroCodec,
) -> None:
    cache = MemoryOfferCache()
    request = f.request(["BA", "AA", "VS", "ZZ"])
    await route(codec, request, cache, skips={"VS": "circuit_open"})
    assert cache.lookups == [(["BA", "AA", "VS"], request.criteria)]


async def test_a_circuit_open_airline_is_answered_from_stale_offers_and_waited_for_instead_of_skipped(
    codec: AvroCodec,
) -> None:
    cache = MemoryOfferCache()
    gone = f.offer("AA", amount="300.00", flight="100", expires_at=now_utc() - timedelta(seconds=1))
    alive = f.offer("AA", amount="400.00", flight="101")
    cached(cache, "AA", STALE, age=timedelta(minutes=5), offers=[gone, alive])
    served = REGISTRY.get_sample_value("jb_cache_stale_serves_total", {"airline": "AA"}) or 0.0
    out = await route(codec, f.request(["BA", "AA"]), cache, skips={"AA": "circuit_open"})
    assert out.calls() == ["BA"], "AA's circuit is open: never called"
    plan = out.routed.plan
    assert (plan.expected_airlines, plan.skipped) == (["BA", "AA"], {})
    aa = (await out.answers(codec))["AA"]
    assert (aa.status, aa.source) == (ResponseStatus.OK, OfferSource.STALE)
    assert aa.error is not None
    assert aa.error.code == "circuit_open", "why it is not live"
    assert aa.offers == [alive], "an offer past its own expiry is never served"
    assert REGISTRY.get_sample_value("jb_cache_stale_serves_total", {"airline": "AA"}) == served + 1


async def test_a_skipped_airline_with_a_fresh_answer_is_answered_from_it_as_any_airline_would_be(
    codec: AvroCodec,
) -> None:
    cache = MemoryOfferCache()
    cached(cache, "AA", FRESH)
    out = await route(codec, f.request(["BA", "AA"]), cache, skips={"AA": "airline_throttled"})
    aa = (await out.answers(codec))["AA"]
    assert (aa.source, aa.error) == (OfferSource.CACHE, None)
    assert out.routed.plan.expected_airlines == ["BA", "AA"]


@pytest.mark.parametrize(
    ("skips", "no_stale", "offers_expired"),
    [
        pytest.param({"AA": "circuit_open"}, frozenset({"AA"}), False, id="policy-says-no"),
        pytest.param({"AA": "circuit_open"}, frozenset(), True, id="every-offer-expired"),
        pytest.param({"AA": "some_other_reason"}, frozenset(), False, id="not-unavailable"),
    ],
)
async def test_a_skipped_airline_stays_skipped_when_its_stale_answer_may_not_stand_in(
    codec: AvroCodec, skips: dict[str, str], no_stale: frozenset[str], offers_expired: bool
) -> None:
    cache = MemoryOfferCache()
    expiry = now_utc() - timedelta(seconds=1) if offers_expired else now_utc() + timedelta(minutes=5)
    cached(cache, "AA", STALE, offers=[f.offer("AA", expires_at=expiry)])
    out = await route(codec, f.request(["BA", "AA"]), cache, skips=skips, no_stale=no_stale)
    assert (out.routed.plan.expected_airlines, out.routed.plan.skipped) == (["BA"], skips)
    assert out.calls() == ["BA"]
    assert await out.answers(codec) == {}


async def test_fresh_true_looks_nothing_up_and_calls_every_airline(codec: AvroCodec) -> None:
    cache = MemoryOfferCache()
    cached(cache, "BA", FRESH)
    cached(cache, "AA", STALE)
    bypassed = lookups("BA", "bypass"), lookups("AA", "bypass")
    out = await route(codec, f.request(["BA", "AA", "VS"], fresh=True), cache, skips={"AA": "circuit_open"})
    assert cache.lookups == []
    assert out.calls() == ["BA", "VS"]
    assert out.routed.plan.skipped == {"AA": "circuit_open"}, "no stale stand-in either: live offers only"
    assert (lookups("BA", "bypass"), lookups("AA", "bypass")) == (bypassed[0] + 1, bypassed[1] + 1)
    calls = [await codec.decode(s.value, AirlineCall) for s in out.sent if s.topic != out.ctx.names.responses]
    assert [c.fresh for c in calls] == [True, True], "the connectors are told: no stale stand-in if the call fails"


async def test_with_the_cache_off_nothing_is_looked_up_and_every_airline_is_called(codec: AvroCodec) -> None:
    out = await route(codec, f.request(["BA", "AA"]), None, skips={"AA": "circuit_open"})
    assert (out.calls(), out.routed.plan.skipped) == (["BA"], {"AA": "circuit_open"})


async def test_a_request_routed_again_neither_asks_nor_answers_again_for_airlines_whose_answer_is_in(
    codec: AvroCodec,
) -> None:
    cache = MemoryOfferCache()
    cached(cache, "BA", FRESH)
    cached(cache, "AA", STALE)
    request = f.request(["BA", "AA", "VS"])
    out = await route(codec, request, cache, skips={"AA": "circuit_open"}, answered=frozenset({"BA", "AA"}))
    assert cache.lookups == [(["VS"], request.criteria)]
    assert out.calls() == ["VS"]
    assert await out.answers(codec) == {}
    plan = out.routed.plan
    assert (plan.expected_airlines, plan.skipped) == (["BA", "AA", "VS"], {}), "their answers in the join count"


async def test_a_request_past_its_deadline_looks_nothing_up(codec: AvroCodec) -> None:
    cache = MemoryOfferCache()
    cached(cache, "BA", FRESH)
    out = await route(codec, f.request(["BA"], deadline=now_utc() - timedelta(milliseconds=1)), cache)
    assert (out.sent, cache.lookups) == ([], [])


# ---- the search agent: an answer from the cache holds its request like a call ----


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    headers: list[tuple[str, bytes]]


class Event:
    """A faust event as the search agent reads it."""

    def __init__(self, topic: str, offset: int, key: bytes, value: bytes, acked: list[tuple[str, int]]) -> None:
        self.message = Message(topic, 0, offset, [("traceparent", TRACE.encode())])
        self.key, self.value = key, value
        self._acked = acked

    def ack(self) -> None:
        self._acked.append((self.message.topic, self.message.offset))


async def test_a_request_answered_from_the_cache_is_acknowledged_once_that_answer_and_the_reply_are_durable(
    codec: AvroCodec,
) -> None:
    cache = MemoryOfferCache()
    cached(cache, "BA", FRESH)
    ctx = Context(codec, {}, cache)
    await codec.register(ctx.names.replies, SearchReply)
    sent: list[tuple[str, bytes, asyncio.Future[Any]]] = []

    async def produce(
        topic: str, key: bytes | str | None, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        sent.append((topic, value, delivery))
        return delivery

    joins = Joining(ctx, produce, cast(DeadLetters, None))
    acked: list[tuple[str, int]] = []
    request = f.request(["BA"], request_id="req-j1", correlation_id="req-j1")
    event = Event(ctx.names.requests, 0, b"req-j1", codec.encode(ctx.names.requests, request), acked)
    await joins._on_request(event, joins.acks.hold(ctx.names.requests, 0, 0, event))
    [(topic, value, answer_delivered)] = sent
    assert topic == ctx.names.responses, "BA answered from the cache, not called"
    # The answer comes back to the agent like any airline's: the join completes and its reply is queued.
    back = Event(ctx.names.responses, 0, b"req-j1", value, acked)
    await joins._on_response(back, joins.acks.hold(ctx.names.responses, 0, 0, back))
    [(reply_topic, reply_value, reply_delivered)] = sent[1:]
    assert reply_topic == ctx.names.replies
    reply = await codec.decode(reply_value, SearchReply)
    assert [(a.airline, a.source) for a in reply.airlines] == [("BA", "cache")]
    reply_delivered.set_result(None)
    await asyncio.sleep(0)
    assert acked == [(ctx.names.responses, 0)], "the reply is durable, the answer the request caused not yet"
    answer_delivered.set_result(None)
    await asyncio.sleep(0)
    assert acked == [(ctx.names.responses, 0), (ctx.names.requests, 0)]
