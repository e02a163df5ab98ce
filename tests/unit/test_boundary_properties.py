"""Property: whatever arguments an agent sends to search_offers or list_airlines, through the real MCP server,
the answer is a result or a refusal naming a field (never an internal error), a refusal is short, and
nothing reaches the backend (nothing would be published) for a call that was refused."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from mcp_bridge.server import build_server
from mcp_bridge.validation import SearchArguments, field_name
from tests.unit.test_search_arguments import RULES, RecordingBackend

ERROR = re.compile(r"Invalid argument '(?P<field>[^']*)': .* \(code invalid_input\)$", re.DOTALL)
FIELDS = list(SearchArguments.model_fields)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=60),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
today = datetime.now(UTC).date()
dates = st.integers(min_value=-3, max_value=400).map(lambda d: (today + timedelta(days=d)).isoformat())
plausible = {
    "origin": st.sampled_from(["LHR", "jfk", "CDG", "XQX", "LONDON", ""]),
    "destination": st.sampled_from(["JFK", "LHR", "NRT", "QQQ"]),
    "departure_date": dates,
    "return_date": st.none() | dates,
    "adults": st.integers(min_value=-1, max_value=10),
    "children": st.integers(min_value=-1, max_value=10),
    "infants": st.integers(min_value=-1, max_value=10),
    "cabin": st.sampled_from(["economy", "Business", "premium", "cargo"]),
    "airlines": st.lists(st.sampled_from(["BA", "aa", "ZZ", "AF"]), max_size=3),
    "max_offers": st.integers(min_value=-1, max_value=300),
    "deadline_ms": st.integers(min_value=0, max_value=20_000),
    "fresh": st.booleans(),
}


@st.composite
def search_arguments(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly plausible values with some garbage in any field, sometimes an argument that does not exist."""
    arguments: dict[str, Any] = {}
    for name in FIELDS:
        choice = draw(st.sampled_from(["plausible", "plausible", "plausible", "garbage", "absent"]))
        if choice == "plausible":
            arguments[name] = draw(plausible[name])
        elif choice == "garbage":
            arguments[name] = draw(json_values)
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        arguments[draw(st.text(min_size=1, max_size=80).filter(lambda k: k not in FIELDS))] = draw(json_values)
    return arguments


@pytest.fixture(scope="module")
def bridge() -> Iterator[tuple[BlockingPortal, Client, RecordingBackend]]:
    backend = RecordingBackend(RULES)
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(Client(build_server(backend))) as client:
        yield portal, client, backend


def call(bridge: tuple[BlockingPortal, Client, RecordingBackend], tool: str, arguments: dict[str, Any]) -> Any:
    portal, client, _ = bridge

    async def with_deadline() -> Any:
        with anyio.fail_after(10):
            return await client.call_tool(tool, arguments)

    return portal.call(with_deadline)


def text_of(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arguments=search_arguments())
def test_search_offers_answers_any_arguments_with_a_result_or_a_refusal_naming_its_field(
    bridge: tuple[BlockingPortal, Client, RecordingBackend], arguments: dict[str, Any]
) -> None:
    backend = bridge[2]
    calls_before = len(backend.calls)
    result = call(bridge, "search_offers", arguments)
    if not result.is_error:
        assert len(backend.calls) == calls_before + 1
        received = backend.calls[-1]
        assert received.deadline_ms <= RULES.max_deadline_ms
        assert set(arguments) <= set(FIELDS)
        return
    text = text_of(result)
    assert len(backend.calls) == calls_before, "a refused search reached the backend"
    match = ERROR.search(text)
    assert match is not None, f"not a refusal naming a field: {text[:300]}"
    assert match["field"] in FIELDS or match["field"] in {field_name(k) for k in arguments}, text[:300]
    assert len(text) < 400, text[:400]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arguments=st.dictionaries(st.text(min_size=1, max_size=80), json_values, max_size=3))
def test_list_airlines_takes_no_arguments_and_names_the_first_one_it_refuses(
    bridge: tuple[BlockingPortal, Client, RecordingBackend], arguments: dict[str, Any]
) -> None:
    result = call(bridge, "list_airlines", arguments)
    if not arguments:
        assert not result.is_error
        return
    match = ERROR.search(text_of(result))
    assert result.is_error
    assert match is not None, text_of(result)[:300]
    assert match["field"] == field_name(next(iter(arguments)))
