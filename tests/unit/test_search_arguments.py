"""search_offers' arguments as one model (SearchArguments): every field's bad value is refused naming that
field, the tool's schema shows the process's limits, and a refused call reaches no backend (publishes nothing)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import anyio
import httpx
import pytest
from mcp import Client

from jetbridge.airlines import load_registry
from jetbridge.errors import InvalidInput, JetbridgeError
from jetbridge.kafka import AsyncProducer
from jetbridge.runtime import Runtime
from jetbridge.settings import Settings
from mcp_bridge.correlator import ReplyCorrelator
from mcp_bridge.server import AirlineInfo, build_server
from mcp_bridge.service import SearchResult, SearchService
from mcp_bridge.validation import MAX_PASSENGERS, SearchArguments, SearchRules
from schemas.codec import AvroCodec
from schemas.models import Cabin

TODAY = date(2026, 11, 23)
SOON = (TODAY + timedelta(days=21)).isoformat()
RULES = SearchRules(load_registry(), default_deadline_ms=3000, max_deadline_ms=15000, default_max_offers=20)


def parse(rules: SearchRules = RULES, /, **overrides: object) -> SearchArguments:
    arguments: dict[str, object] = {"origin": "LHR", "destination": "JFK", "departure_date": SOON}
    return SearchArguments.parse(arguments | overrides, rules, today=TODAY)


def test_arguments_left_out_or_null_take_their_defaults_and_the_rules_limits() -> None:
    arguments = parse(children=None, cabin=None, airlines=None, max_offers=None, deadline_ms=None)
    assert (arguments.adults, arguments.children, arguments.infants) == (1, 0, 0)
    assert (arguments.cabin, arguments.airlines, arguments.return_date) == ("economy", None, None)
    assert (arguments.max_offers, arguments.deadline_ms) == (20, 3000)
    tight = SearchRules(RULES.registry, default_deadline_ms=5000, max_deadline_ms=8000, default_max_offers=7)
    assert (parse(tight).max_offers, parse(tight).deadline_ms) == (7, 5000)
    with pytest.raises(InvalidInput, match="between 200 and 8000") as caught:
        parse(tight, deadline_ms=9000)
    assert caught.value.field == "deadline_ms"


def test_arguments_are_normalised_into_the_criteria_of_the_request() -> None:
    back = (TODAY + timedelta(days=28)).isoformat()
    arguments = parse(origin="lhr", destination=" jfk ", return_date=back, cabin="Premium", airlines=["ba", "AA", "BA"])
    assert arguments.airlines == ["BA", "AA"]
    criteria = arguments.criteria("EUR")
    assert (criteria.origin, criteria.destination, criteria.cabin, criteria.currency) == (
        "LHR",
        "JFK",
        Cabin.PREMIUM_ECONOMY,
        "EUR",
    )
    assert (criteria.departure_date, criteria.return_date) == (date(2026, 12, 14), date(2026, 12, 21))


def test_search_arguments_are_only_made_by_parse_which_checks_them_against_the_rules() -> None:
    with pytest.raises(TypeError, match=r"SearchArguments\.parse"):
        SearchArguments(origin="LHR", destination="JFK", departure_date=SOON)


BAD_ARGUMENTS = [
    pytest.param({"origin": "XQX"}, "origin", "not a known IATA airport code", id="origin-unknown"),
    pytest.param({"origin": "LONDON"}, "origin", "3-letter IATA airport code", id="origin-not-a-code"),
    pytest.param({"origin": 123}, "origin", "3-letter IATA airport code", id="origin-not-text"),
    pytest.param({"destination": "QQQ"}, "destination", "not a known IATA airport code", id="destination-unknown"),
    pytest.param({"destination": "lhr"}, "destination", "must differ from origin", id="destination-is-origin"),
    pytest.param({"departure_date": "2026-11-22"}, "departure_date", "in the past", id="departure-past"),
    pytest.param({"departure_date": "23/12/2026"}, "departure_date", "YYYY-MM-DD", id="departure-format"),
    pytest.param({"departure_date": "2028-01-01"}, "departure_date", "days ahead", id="departure-too-far"),
    pytest.param({"departure_date": 20261214}, "departure_date", "YYYY-MM-DD", id="departure-a-number"),
    pytest.param({"return_date": "2026-11-01"}, "return_date", "in the past", id="return-past"),
    pytest.param({"return_date": "2026-12-01"}, "return_date", "on or after departure_date", id="return-early"),
    pytest.param({"adults": 0}, "adults", "at least 1", id="adults-none"),
    pytest.param({"adults": 10}, "adults", f"at most {MAX_PASSENGERS}", id="adults-too-many"),
    pytest.param({"adults": "two"}, "adults", "whole number", id="adults-words"),
    pytest.param({"adults": True}, "adults", "whole number", id="adults-boolean"),
    pytest.param({"adults": 5, "children": 5}, "adults", "passengers in all", id="passengers-over-nine"),
    pytest.param({"children": -1}, "children", "at least 0", id="children-negative"),
    pytest.param({"children": 2.5}, "children", "whole number", id="children-fraction"),
    pytest.param({"infants": 2}, "infants", "one infant per adult", id="infants-over-adults"),
    pytest.param({"infants": -1}, "infants", "at least 0", id="infants-negative"),
    pytest.param({"cabin": "cargo"}, "cabin", "economy, premium_economy, business, first", id="cabin-unknown"),
    pytest.param({"cabin": 1}, "cabin", "economy, premium_economy, business, first", id="cabin-not-text"),
    pytest.param({"airlines": []}, "airlines", "non-empty list", id="airlines-empty"),
    pytest.param({"airlines": ["ZZ"]}, "airlines", "not an airline Jetbridge connects to", id="airlines-unknown"),
    pytest.param({"airlines": "BA"}, "airlines", "non-empty list", id="airlines-not-a-list"),
    pytest.param({"airlines": [7]}, "airlines", "IATA airline codes", id="airlines-not-codes"),
    pytest.param({"max_offers": 0}, "max_offers", "at least 1", id="max-offers-zero"),
    pytest.param({"max_offers": 201}, "max_offers", "at most 200", id="max-offers-over-cap"),
    pytest.param({"deadline_ms": 10}, "deadline_ms", "at least 200", id="deadline-too-short"),
    pytest.param({"deadline_ms": 60_000}, "deadline_ms", "between 200 and 15000", id="deadline-over-cap"),
    pytest.param({"fresh": "yes"}, "fresh", "true or false", id="fresh-words"),
    pytest.param({"fresh": 1}, "fresh", "true or false", id="fresh-number"),
    pytest.param({"passengers": 2}, "passengers", "not an argument of search_offers", id="unknown-argument"),
]


@pytest.mark.parametrize(("overrides", "field", "words"), BAD_ARGUMENTS)
def test_a_bad_argument_is_refused_naming_its_field(overrides: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(**overrides)
    assert caught.value.field == field
    assert words in caught.value.reason
    assert str(caught.value).startswith(f"[invalid_input] {field}: ")


def test_every_argument_has_a_case_of_its_own_above() -> None:
    covered = {param.values[1] for param in BAD_ARGUMENTS}
    assert set(SearchArguments.model_fields) <= covered


def test_a_missing_required_argument_is_named() -> None:
    with pytest.raises(InvalidInput, match="is required") as caught:
        SearchArguments.parse({"origin": "LHR", "destination": "JFK"}, RULES, today=TODAY)
    assert caught.value.field == "departure_date"


class RecordingBackend:
    """A SearchBackend that records what reaches it."""

    def __init__(self, rules: SearchRules) -> None:
        self.rules = rules
        self.calls: list[SearchArguments] = []
        self.refusals: list[tuple[str, str, str]] = []  # (tool, field, client)

    async def search(self, arguments: SearchArguments, *, client_id: str) -> SearchResult:
        self.calls.append(arguments)
        return SearchResult(request_id="r-1", status="complete", offers=[], airlines=[], elapsed_ms=1)

    def refused(
        self, error: JetbridgeError, arguments: Mapping[str, object], *, client_id: str, started: float, tool: str
    ) -> None:
        self.refusals.append((tool, getattr(error, "field", ""), client_id))

    def airlines(self, *, client_id: str) -> list[AirlineInfo]:
        return []

    def health(self) -> dict[str, Any]:
        return {"status": "ok"}


def real_soon() -> str:
    """The tool checks dates against the real today."""
    return (datetime.now(UTC).date() + timedelta(days=21)).isoformat()


async def test_the_tool_schema_shows_every_argument_with_its_description_and_the_processs_limits() -> None:
    rules = SearchRules(RULES.registry, default_deadline_ms=2500, max_deadline_ms=8000, default_max_offers=7)
    with anyio.fail_after(10):
        async with Client(build_server(RecordingBackend(rules))) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
    schema = tools["search_offers"].input_schema
    properties = schema["properties"]
    assert list(properties) == list(SearchArguments.model_fields)
    assert set(schema["required"]) == {"origin", "destination", "departure_date"}
    assert all(p.get("description") for p in properties.values())
    assert (properties["deadline_ms"]["minimum"], properties["deadline_ms"]["maximum"]) == (200, 8000)
    assert properties["deadline_ms"]["default"] == 2500
    assert (properties["max_offers"]["maximum"], properties["max_offers"]["default"]) == (200, 7)
    assert (properties["adults"]["minimum"], properties["adults"]["maximum"]) == (1, MAX_PASSENGERS)
    assert properties["cabin"]["enum"] == ["economy", "premium_economy", "business", "first"]
    assert properties["departure_date"]["format"] == "date"


async def test_a_bad_argument_is_a_tool_error_naming_the_field_and_reaches_no_backend() -> None:
    backend = RecordingBackend(RULES)
    cases: list[tuple[dict[str, object], str]] = [
        ({"origin": "XQX"}, "origin"),
        ({"adults": "two"}, "adults"),
        ({"deadline_ms": 999_999}, "deadline_ms"),
    ]
    with anyio.fail_after(10):
        async with Client(build_server(backend)) as client:
            for overrides, field in cases:
                good: dict[str, object] = {"origin": "LHR", "destination": "JFK", "departure_date": real_soon()}
                arguments = good | overrides
                result = await client.call_tool("search_offers", arguments)
                text = " ".join(getattr(c, "text", "") for c in result.content)
                assert result.is_error, overrides
                assert f"Invalid argument '{field}': " in text, text
                assert "(code invalid_input)" in text
            unknown = await client.call_tool("search_offers", good | {"passengers": 2})
            assert unknown.is_error
    assert backend.calls == []
    # Every refusal reaches the backend's audit trail, the MCP layer's own (an unknown argument) included.
    assert [(tool, field) for tool, field, _ in backend.refusals] == [
        *(("search_offers", field) for _, field in cases),
        ("search_offers", "passengers"),
    ]


async def test_a_good_call_reaches_the_backend_as_checked_search_arguments() -> None:
    backend = RecordingBackend(RULES)
    arguments = {"origin": "lhr", "destination": "JFK", "departure_date": real_soon(), "airlines": '["ba"]'}
    with anyio.fail_after(10):
        async with Client(build_server(backend)) as client:
            result = await client.call_tool("search_offers", arguments)
    assert not result.is_error
    (received,) = backend.calls
    assert (received.origin, received.airlines, received.deadline_ms) == ("LHR", ["BA"], 3000)


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, topic: str, **_: object) -> None:
        self.sent.append(topic)


async def test_the_service_checks_raw_arguments_the_same_way_and_publishes_nothing_for_bad_ones() -> None:
    producer = RecordingProducer()
    runtime = Runtime(
        Settings(),
        RULES.registry,
        cast(httpx.AsyncClient, None),
        cast(AvroCodec, None),
        cast(AsyncProducer, producer),
    )
    service = SearchService(runtime, cast(ReplyCorrelator, None))
    arguments = {"origin": "LHR", "destination": "JFK", "departure_date": real_soon(), "infants": 3, "adults": 2}
    with pytest.raises(InvalidInput) as caught:
        await service.search(arguments, client_id="test")
    assert caught.value.field == "infants"
    assert producer.sent == []
