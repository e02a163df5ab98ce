"""search_offers argument validation: every bad input names its field."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from jetbridge.airlines import load_registry
from jetbridge.errors import InvalidInput
from mcp_bridge.validation import ValidatedSearch, validate_search
from schemas.models import Cabin

TODAY = date(2026, 11, 23)
SOON = (TODAY + timedelta(days=21)).isoformat()


def run(**overrides: Any) -> ValidatedSearch:
    arguments: dict[str, Any] = {
        "origin": "LHR",
        "destination": "JFK",
        "departure_date": SOON,
        "return_date": None,
        "adults": 1,
        "children": None,
        "infants": None,
        "cabin": None,
        "airlines": None,
        "max_offers": None,
        "deadline_ms": None,
    }
    return validate_search(
        **(arguments | overrides),
        registry=load_registry(),
        today=TODAY,
        currency="USD",
        default_max_offers=20,
        default_deadline_ms=3000,
        max_deadline_ms=15000,
    )


def test_valid_search_is_normalised() -> None:
    valid = run(origin="lhr", destination=" jfk ", cabin="Business", airlines=["ba", "AA", "BA"])
    assert valid.criteria.origin == "LHR"
    assert valid.criteria.destination == "JFK"
    assert valid.criteria.cabin is Cabin.BUSINESS
    assert valid.airlines == ["BA", "AA"]
    assert valid.max_offers == 20
    assert valid.deadline_ms == 3000


BAD_INPUTS = [
    pytest.param({"origin": "XXX"}, "origin", id="unknown-origin"),
    pytest.param({"origin": "LONDON"}, "origin", id="origin-not-a-code"),
    pytest.param({"destination": "QQQ"}, "destination", id="unknown-destination"),
    pytest.param({"destination": "LHR"}, "destination", id="same-as-origin"),
    pytest.param({"departure_date": "2026-11-22"}, "departure_date", id="departure-in-past"),
    pytest.param({"departure_date": "23/12/2026"}, "departure_date", id="departure-bad-format"),
    pytest.param({"departure_date": "2028-01-01"}, "departure_date", id="departure-too-far"),
    pytest.param(
        {"return_date": (TODAY + timedelta(days=10)).isoformat()}, "return_date", id="return-before-departure"
    ),
    pytest.param({"return_date": "2026-11-01"}, "return_date", id="return-in-past"),
    pytest.param({"adults": 0}, "adults", id="no-adult"),
    pytest.param({"adults": 10}, "adults", id="too-many-adults"),
    pytest.param({"adults": 5, "children": 5}, "adults", id="more-than-nine-passengers"),
    pytest.param({"children": -1}, "children", id="negative-children"),
    pytest.param({"adults": 1, "infants": 2}, "infants", id="more-infants-than-adults"),
    pytest.param({"cabin": "cargo"}, "cabin", id="unknown-cabin"),
    pytest.param({"airlines": ["ZZ"]}, "airlines", id="unknown-airline"),
    pytest.param({"airlines": []}, "airlines", id="empty-airlines"),
    pytest.param({"max_offers": 0}, "max_offers", id="zero-offers"),
    pytest.param({"deadline_ms": 60_000}, "deadline_ms", id="deadline-above-cap"),
    pytest.param({"deadline_ms": 10}, "deadline_ms", id="deadline-too-short"),
]


@pytest.mark.parametrize(("overrides", "field"), BAD_INPUTS)
def test_bad_input_names_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        run(**overrides)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"[invalid_input] {field}:")
