"""Where each airline's offers came from, in the reply (``streams/aggregation.py``): live, cache or stale, with
the age of cached offers; a stale answer counts as an answer and keeps why live failed; a cached offer past
its own expiry never reaches a reply; and the bridge shows the same per airline (``result_of``)."""

from __future__ import annotations

from datetime import timedelta

from mcp_bridge.service import result_of
from schemas.models import AirlineOutcome, ErrorInfo, OfferSource, ReplyStatus, ResponseStatus, now_utc
from streams.aggregation import Aggregation
from tests.support import factories as f

CIRCUIT_OPEN = ErrorInfo(code="circuit_open", message="not called", retriable=True)


def test_each_airline_says_where_its_offers_came_from_and_how_old_cached_ones_are() -> None:
    now = now_utc()
    agg = Aggregation(request_id="req-1", first_seen=now)
    agg.add_plan(f.plan(["BA", "AA", "VS", "DL", "AY"]))
    agg.add_response(f.response("BA"))
    agg.add_response(f.response("AA", source=OfferSource.CACHE, cached_at=now - timedelta(seconds=12)))
    agg.add_response(
        f.response("VS", source=OfferSource.STALE, cached_at=now - timedelta(minutes=3), error=CIRCUIT_OPEN)
    )
    agg.add_response(f.response("DL", offers=[]))
    agg.add_response(f.response("AY", ResponseStatus.ERROR, error=ErrorInfo(code="x", message="x", retriable=False)))
    reply = agg.complete(now)
    got = {a.airline: (a.status, a.source, a.age_ms, a.error_code) for a in reply.airlines}
    assert got == {
        "BA": (AirlineOutcome.OK, "live", None, None),
        "AA": (AirlineOutcome.OK, "cache", 12_000, None),
        "VS": (AirlineOutcome.OK, "stale", 180_000, "circuit_open"),
        "DL": (AirlineOutcome.OK, None, None, None),  # answered, with no offers: nothing came from anywhere
        "AY": (AirlineOutcome.ERROR, None, None, "x"),
    }
    assert {o.airline for o in reply.offers} == {"BA", "AA", "VS"}
    views = {v.airline: (v.status, v.source, v.age_ms, v.error_code) for v in result_of(reply, 5).airlines}
    assert views["VS"] == ("ok", "stale", 180_000, "circuit_open")
    assert views["AA"] == ("ok", "cache", 12_000, None)


def test_a_stale_answer_is_an_answer_so_the_reply_is_complete() -> None:
    now = now_utc()
    agg = Aggregation(request_id="req-1", first_seen=now)
    agg.add_plan(f.plan(["BA", "AA"]))
    agg.add_response(f.response("BA"))
    agg.add_response(f.response("AA", source=OfferSource.STALE, cached_at=now, error=CIRCUIT_OPEN))
    assert agg.is_due(now), "nothing left to wait for"
    assert agg.complete(now).status is ReplyStatus.COMPLETE


def test_a_cached_offer_past_its_own_expiry_never_reaches_a_reply() -> None:
    now = now_utc()
    agg = Aggregation(request_id="req-1", first_seen=now)
    agg.add_plan(f.plan(["BA"]))
    expiring = f.offer("BA", amount="100.00", flight="1", expires_at=now + timedelta(milliseconds=50))
    lasting = f.offer("BA", amount="900.00", flight="2", expires_at=now + timedelta(minutes=5))
    agg.add_response(
        f.response("BA", offers=[expiring, lasting], source=OfferSource.CACHE, cached_at=now - timedelta(seconds=59))
    )
    reply = agg.complete(now + timedelta(milliseconds=50))  # the reply is made as the cheap one expires
    assert [o.offer_id for o in reply.offers] == [lasting.offer_id]
