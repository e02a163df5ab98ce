"""The shared routing rules (``jetbridge/routing.py``): who a search is sent to, and each call's time budget."""

from __future__ import annotations

from datetime import datetime, timedelta

from jetbridge.airlines import Airline, AirlineRegistry
from jetbridge.routing import attempt_timeout_s, call_budget_s, route
from schemas.models import now_utc

LHR_JFK = frozenset({("LHR", "JFK")})
DEADLINE = now_utc() + timedelta(seconds=3)


def airline(
    code: str, *, routes: frozenset[tuple[str, str]] = LHR_JFK, enabled: bool = True, timeout_ms: int = 2500
) -> Airline:
    return Airline(
        code=code,
        name=code,
        kind="rest",
        endpoint=f"http://{code.lower()}.test",
        routes=routes,
        enabled=enabled,
        timeout_ms=timeout_ms,
    )


REGISTRY = AirlineRegistry(
    [
        airline("BA"),
        airline("AA"),
        airline("VS", routes=frozenset({("LHR", "LAX")})),
        airline("DL", enabled=False),
        airline("AY"),
    ]
)


def test_every_enabled_airline_flying_the_route_is_called_in_registry_order() -> None:
    chosen = route(REGISTRY, "LHR", "JFK", None, deadline=DEADLINE)
    assert chosen.codes == ["BA", "AA", "AY"]
    assert chosen.not_served == []
    assert chosen.skipped == {}


def test_a_requested_subset_narrows_the_call_and_names_the_rest_not_served_in_the_agents_order() -> None:
    chosen = route(REGISTRY, "LHR", "JFK", ["AY", "VS", "BA", "DL", "ZZ"], deadline=DEADLINE)
    assert chosen.codes == ["BA", "AY"]  # registry order, whatever order the agent asked in
    assert chosen.not_served == ["VS", "DL", "ZZ"]


def test_an_empty_subset_calls_nobody() -> None:
    chosen = route(REGISTRY, "LHR", "JFK", [], deadline=DEADLINE)
    assert chosen.codes == []
    assert chosen.not_served == []


def test_an_airline_the_health_board_says_to_skip_is_asked_but_not_called() -> None:
    asked: list[tuple[str, datetime]] = []

    def skip_reason(code: str, deadline: datetime) -> str | None:
        asked.append((code, deadline))
        return {"AA": "circuit_open", "AY": "airline_throttled"}.get(code)

    chosen = route(REGISTRY, "LHR", "JFK", None, deadline=DEADLINE, skip_reason=skip_reason)
    assert chosen.codes == ["BA"]
    assert chosen.skipped == {"AA": "circuit_open", "AY": "airline_throttled"}
    assert asked == [("BA", DEADLINE), ("AA", DEADLINE), ("AY", DEADLINE)]  # only airlines that would be called


def test_an_airline_not_requested_is_never_reported_skipped() -> None:
    chosen = route(REGISTRY, "LHR", "JFK", ["BA"], deadline=DEADLINE, skip_reason=lambda code, _: "circuit_open")
    assert chosen.codes == []
    assert chosen.skipped == {"BA": "circuit_open"}
    assert chosen.not_served == []


def test_a_route_nobody_flies_calls_nobody() -> None:
    assert route(REGISTRY, "JFK", "LHR", None, deadline=DEADLINE).codes == []


def test_a_calls_budget_is_the_deadline_less_the_connector_margin() -> None:
    now = now_utc()
    assert call_budget_s(now + timedelta(seconds=3), timedelta(milliseconds=250), now) == 2.75


def test_a_call_past_its_deadline_less_the_margin_has_a_negative_budget() -> None:
    now = now_utc()
    assert call_budget_s(now + timedelta(milliseconds=100), timedelta(milliseconds=250), now) == -0.15


def test_one_attempt_is_capped_by_the_airlines_timeout() -> None:
    slow = airline("BA", timeout_ms=2500)
    assert attempt_timeout_s(slow, 10.0) == 2.5
    assert attempt_timeout_s(slow, 1.2) == 1.2
    assert attempt_timeout_s(slow, -0.1) == -0.1  # no time left: the caller fails fast
