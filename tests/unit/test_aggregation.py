"""The aggregator's state machine: completion, deadline, dedupe, ranking, exactly one reply."""

from __future__ import annotations

from datetime import timedelta

from schemas.models import AirlineOutcome, ErrorInfo, ReplyStatus, ResponseStatus, now_utc
from streams.aggregation import Aggregation, merge_offers
from tests.support import factories as f


def fresh() -> Aggregation:
    return Aggregation(request_id="req-1", first_seen=now_utc())


def test_completes_when_every_expected_airline_answered() -> None:
    agg = fresh()
    agg.add_plan(f.plan(["BA", "AA"]))
    agg.add_response(f.response("BA"))
    assert not agg.is_due(now_utc())
    agg.add_response(f.response("AA"))
    assert agg.is_due(now_utc())
    reply = agg.complete(now_utc())
    assert reply.status is ReplyStatus.COMPLETE
    assert [a.status for a in reply.airlines] == [AirlineOutcome.OK, AirlineOutcome.OK]
    assert not agg.is_due(now_utc()), "a completed aggregation is never due again"


def test_search_returns_partial_reply_when_one_airline_times_out() -> None:
    agg = fresh()
    deadline = now_utc() + timedelta(milliseconds=100)
    agg.add_plan(f.plan(["BA", "AA"], deadline=deadline))
    agg.add_response(f.response("BA"))
    assert not agg.is_due(deadline - timedelta(milliseconds=1))
    assert agg.is_due(deadline)
    reply = agg.complete(deadline)
    assert reply.status is ReplyStatus.PARTIAL
    statuses = {a.airline: a for a in reply.airlines}
    assert statuses["BA"].status is AirlineOutcome.OK
    assert statuses["AA"].status is AirlineOutcome.TIMEOUT
    assert [o.airline for o in reply.offers] == ["BA"]


def test_responses_arriving_before_the_plan_are_kept() -> None:
    agg = fresh()
    agg.add_response(f.response("BA"))
    assert not agg.is_due(now_utc()), "no reply without knowing whom to wait for"
    agg.add_plan(f.plan(["BA"]))
    assert agg.is_due(now_utc())


def test_duplicate_response_for_same_airline_counts_once() -> None:
    agg = fresh()
    agg.add_plan(f.plan(["BA", "AA"]))
    assert agg.add_response(f.response("BA"))
    assert not agg.add_response(f.response("BA", offers=[f.offer("BA", "1.00")]))
    assert not agg.is_due(now_utc())
    agg.add_response(f.response("AA"))
    reply = agg.complete(now_utc())
    assert all(o.total_amount != 1 for o in reply.offers), "the duplicate's offers were not merged"


def test_error_response_is_reported_with_its_code() -> None:
    agg = fresh()
    agg.add_plan(f.plan(["BA", "VS"]))
    agg.add_response(f.response("BA"))
    agg.add_response(
        f.response(
            "VS",
            ResponseStatus.ERROR,
            error=ErrorInfo(code="airline_bad_response", message="bad json", retriable=False),
        )
    )
    reply = agg.complete(now_utc())
    vs = next(a for a in reply.airlines if a.airline == "VS")
    assert vs.status is AirlineOutcome.ERROR
    assert vs.error_code == "airline_bad_response"
    assert reply.status is ReplyStatus.PARTIAL


def test_no_airline_serving_the_route_replies_at_once() -> None:
    agg = fresh()
    agg.add_plan(f.plan([], not_served=["VS"]))
    assert agg.is_due(now_utc())
    reply = agg.complete(now_utc())
    assert reply.status is ReplyStatus.NO_AIRLINES
    assert [(a.airline, a.status) for a in reply.airlines] == [("VS", AirlineOutcome.NOT_SERVED)]


def test_late_response_after_completion_is_ignored() -> None:
    agg = fresh()
    agg.add_plan(f.plan(["BA"]))
    agg.add_response(f.response("BA"))
    agg.complete(now_utc())
    assert not agg.add_response(f.response("AA"))


def test_no_airline_answering_is_a_status_of_its_own_not_partial() -> None:
    agg = fresh()
    deadline = now_utc()
    agg.add_plan(f.plan(["BA", "AA", "VS"], deadline=deadline))
    agg.add_response(
        f.response(
            "VS", ResponseStatus.ERROR, error=ErrorInfo(code="airline_unavailable", message="500", retriable=True)
        )
    )
    reply = agg.complete(deadline)
    assert reply.status is ReplyStatus.UNANSWERED
    assert reply.offers == []
    assert {a.airline: a.status for a in reply.airlines} == {
        "BA": AirlineOutcome.TIMEOUT,
        "AA": AirlineOutcome.TIMEOUT,
        "VS": AirlineOutcome.ERROR,
    }


def test_reply_leaves_the_state_open_until_marked_done() -> None:
    agg = fresh()
    agg.add_plan(f.plan(["BA"]))
    agg.add_response(f.response("BA"))
    first = agg.reply(now_utc())
    assert agg.is_due(now_utc()), "a reply that was not sent yet can be sent again"
    agg.mark_done(now_utc())
    assert not agg.is_due(now_utc())
    assert first.status is ReplyStatus.COMPLETE


def test_merge_sorts_by_price_dedupes_and_caps() -> None:
    now = now_utc()
    cheap = f.offer("AA", "420.00", flight="101")
    same_trip = f.offer("AA", "420.00", flight="101", offer_id="other-id")
    mid = f.offer("BA", "515.50", flight="117")
    dear = f.offer("DL", "900.00", flight="1")
    expired = f.offer("VS", "100.00", flight="3", expires_at=now - timedelta(seconds=1))
    merged = merge_offers([dear, mid, same_trip, cheap, expired], max_offers=2, now=now)
    assert [(o.airline, str(o.total_amount)) for o in merged] == [("AA", "420.00"), ("BA", "515.50")]


def test_timer_index_hands_out_each_deadline_once_and_orphans_after_the_plan_wait() -> None:
    from streams.aggregation import PLAN_WAIT, TimerIndex

    index = TimerIndex()
    agg = fresh()
    deadline = now_utc() + timedelta(seconds=2)
    agg.add_plan(f.plan(["BA"], deadline=deadline))
    index.track(agg)
    index.track(agg)  # tracking the same state twice changes nothing
    assert index.pop_due(deadline - timedelta(milliseconds=1)) == []
    due = index.pop_due(deadline)
    assert [(rid, d.phase) for rid, d in due] == [("req-1", "deadline")]
    assert index.pop_due(deadline + timedelta(seconds=1)) == [], "a tick is handed out once"

    orphan = Aggregation(request_id="orphan", first_seen=now_utc())
    orphan.add_response(f.response("BA"))
    index.track(orphan)
    assert index.pop_due(orphan.first_seen + PLAN_WAIT - timedelta(seconds=1)) == []
    assert [d.phase for _, d in index.pop_due(orphan.first_seen + PLAN_WAIT)] == ["expire"]


def test_timer_index_retries_a_reply_that_could_not_be_sent_and_skips_stale_entries() -> None:
    from streams.aggregation import TimerIndex

    index = TimerIndex()
    agg = fresh()
    agg.add_plan(f.plan(["BA"], deadline=now_utc()))
    index.track(agg)
    later = now_utc() + timedelta(seconds=1)
    [(rid, due)] = index.pop_due(later)
    index.retry(rid, due, later)
    [(again_id, again)] = index.pop_due(later)
    assert again_id == rid
    assert again.at == later
    index.forget(rid)
    index.retry(rid, again, later + timedelta(seconds=1))  # forgotten meanwhile: nothing comes back
    assert index.pop_due(later + timedelta(seconds=5)) == []
