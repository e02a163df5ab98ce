"""What an agent sees of an airline whose circuit is open: the router's skipped airlines and the connectors'
fast failures become status CIRCUIT_OPEN at once, not at the deadline; and the contracts that carry it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jetbridge.health_board import merge
from schemas.codec import AvroCodec
from schemas.models import (
    AirlineHealth,
    AirlineOutcome,
    AirlineStatus,
    CircuitState,
    ErrorInfo,
    Event,
    ReplyStatus,
    ResponseStatus,
    SearchReply,
    now_utc,
)
from schemas.registry import SchemaRegistryClient
from streams.aggregation import Aggregation
from tests.support import factories as f
from tests.support.registry_double import RegistryDouble


def fresh() -> Aggregation:
    return Aggregation(request_id="req-1", first_seen=now_utc())


def test_a_skipped_airline_is_reported_circuit_open_without_waiting_for_the_deadline() -> None:
    agg = fresh()
    deadline = now_utc() + timedelta(seconds=3)
    agg.add_plan(f.plan(["BA"], skipped={"VS": "circuit_open"}, deadline=deadline))
    agg.add_response(f.response("BA"))
    assert agg.is_due(now_utc()), "due as soon as every airline actually called answered"
    reply = agg.complete(now_utc())
    statuses = {a.airline: a for a in reply.airlines}
    assert statuses["VS"].status is AirlineOutcome.CIRCUIT_OPEN
    assert statuses["VS"].error_code == "circuit_open"
    assert reply.status is ReplyStatus.PARTIAL, "an airline that was not asked is missing from the answer"


def test_every_airline_skipped_is_answered_at_once_as_unanswered_not_as_no_airlines() -> None:
    agg = fresh()
    agg.add_plan(f.plan([], skipped={"VS": "circuit_open", "DL": "airline_throttled"}))
    assert agg.is_due(now_utc())
    reply = agg.complete(now_utc())
    assert reply.status is ReplyStatus.UNANSWERED
    statuses = {a.airline: (a.status, a.error_code) for a in reply.airlines}
    assert statuses == {
        "VS": (AirlineOutcome.CIRCUIT_OPEN, "circuit_open"),
        "DL": (AirlineOutcome.ERROR, "airline_throttled"),
    }


def test_a_connectors_fast_failure_on_an_open_circuit_is_reported_circuit_open() -> None:
    agg = fresh()
    agg.add_plan(f.plan(["BA", "VS"]))
    agg.add_response(f.response("BA"))
    failed = ErrorInfo(code="circuit_open", message="VS circuit open", retriable=False)
    agg.add_response(f.response("VS", ResponseStatus.ERROR, error=failed, attempts=0))
    reply = agg.complete(now_utc())
    assert {a.airline: a.status for a in reply.airlines}["VS"] is AirlineOutcome.CIRCUIT_OPEN


def health(state: CircuitState, since_s: float, *, throttled_s: float | None = None) -> AirlineHealth:
    base = now_utc()
    return AirlineHealth(
        airline="VS",
        state=state,
        since=base + timedelta(seconds=since_s),
        until=base + timedelta(seconds=since_s + 10) if state is CircuitState.OPEN else None,
        throttled_until=base + timedelta(seconds=throttled_s) if throttled_s is not None else None,
        reporter="connectors-1",
        reported_at=base,
    )


def test_the_board_keeps_the_state_that_began_last_and_the_latest_throttle_whatever_the_order() -> None:
    opened = health(CircuitState.OPEN, 5, throttled_s=2)
    stale = health(CircuitState.CLOSED, 0, throttled_s=4)
    kept = merge(opened, stale)
    assert kept.state is CircuitState.OPEN
    assert kept.throttled_until == stale.throttled_until
    assert merge(stale, opened).state is CircuitState.OPEN


@pytest.mark.parametrize(
    "event",
    [
        health(CircuitState.OPEN, 0, throttled_s=2),
        health(CircuitState.CLOSED, 0),
        f.plan(["BA"], skipped={"VS": "circuit_open"}),
        SearchReply(
            request_id="r",
            correlation_id="r",
            reply_to="b",
            status=ReplyStatus.UNANSWERED,
            offers=[],
            airlines=[AirlineStatus(airline="VS", status=AirlineOutcome.CIRCUIT_OPEN, error_code="circuit_open")],
            deadline=now_utc(),
            completed_at=now_utc(),
        ),
    ],
    ids=["health-open", "health-closed", "plan-skipped", "reply-circuit-open"],
)
async def test_the_new_records_and_fields_round_trip_through_their_schemas(event: Event) -> None:
    double = RegistryDouble()
    async with double.client() as http:
        codec = AvroCodec(SchemaRegistryClient("http://registry.test", http))
        await codec.register("topic.test", type(event))
        assert await codec.decode(codec.encode("topic.test", event), type(event)) == event
