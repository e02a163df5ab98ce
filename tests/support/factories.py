"""Valid events with sensible defaults, for tests to vary one field at a time."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from schemas.models import (
    AggregatorControl,
    AirlineCall,
    AirlineResponse,
    Cabin,
    ControlKind,
    Offer,
    ResponseStatus,
    SearchCriteria,
    SearchRequest,
    Segment,
    Slice,
    now_utc,
)


def criteria(**overrides: Any) -> SearchCriteria:
    values: dict[str, Any] = {
        "origin": "LHR",
        "destination": "JFK",
        "departure_date": date.today() + timedelta(days=21),
        "adults": 1,
        "cabin": Cabin.ECONOMY,
    }
    return SearchCriteria(**(values | overrides))


def search_request(**overrides: Any) -> SearchRequest:
    now = now_utc()
    values: dict[str, Any] = {
        "request_id": "req-1",
        "correlation_id": "req-1",
        "client_id": "test-client",
        "reply_to": "bridge-test",
        "criteria": criteria(),
        "max_offers": 10,
        "deadline": now + timedelta(seconds=3),
        "created_at": now,
    }
    return SearchRequest(**(values | overrides))


def airline_call(**overrides: Any) -> AirlineCall:
    now = now_utc()
    values: dict[str, Any] = {
        "request_id": "req-1",
        "correlation_id": "req-1",
        "client_id": "test-client",
        "airline": "BA",
        "criteria": criteria(),
        "deadline": now + timedelta(seconds=3),
        "created_at": now,
    }
    return AirlineCall(**(values | overrides))


def offer(airline: str = "BA", amount: str = "500.00", flight: str = "117", **overrides: Any) -> Offer:
    values: dict[str, Any] = {
        "offer_id": f"{airline}-{flight}-{amount}",
        "airline": airline,
        "total_amount": Decimal(amount),
        "currency": "USD",
        "cabin": Cabin.ECONOMY,
        "fare_brand": "Standard",
        "expires_at": now_utc() + timedelta(minutes=20),
        "slices": [
            Slice(
                origin="LHR",
                destination="JFK",
                duration_minutes=475,
                segments=[
                    Segment(
                        carrier=airline,
                        flight_number=flight,
                        origin="LHR",
                        destination="JFK",
                        departure_local="2026-12-14T08:25",
                        arrival_local="2026-12-14T11:20",
                        aircraft="777",
                    )
                ],
            )
        ],
    }
    return Offer(**(values | overrides))


def response(airline: str = "BA", status: ResponseStatus = ResponseStatus.OK, **overrides: Any) -> AirlineResponse:
    values: dict[str, Any] = {
        "request_id": "req-1",
        "correlation_id": "req-1",
        "airline": airline,
        "status": status,
        "offers": [offer(airline)] if status is ResponseStatus.OK else [],
        "connector_kind": "ndc",
        "latency_ms": 120,
        "produced_at": now_utc(),
    }
    return AirlineResponse(**(values | overrides))


def request(airlines: list[str], **overrides: Any) -> SearchRequest:
    """A search request asking exactly ``airlines`` (all serve LHR-JFK in the default registry)."""
    return search_request(airlines=airlines, **overrides)


def plan(expected: list[str], **overrides: Any) -> AggregatorControl:
    now = now_utc()
    values: dict[str, Any] = {
        "request_id": "req-1",
        "correlation_id": "req-1",
        "kind": ControlKind.PLAN,
        "reply_to": "bridge-test",
        "expected_airlines": expected,
        "max_offers": 10,
        "deadline": now + timedelta(seconds=3),
        "created_at": now,
    }
    return AggregatorControl(**(values | overrides))


# One airline, enough for the airline registry's loader to accept (or refuse) a file around it.
REGISTRY_AIRLINE = """
[airlines.ZZ]
name = "Test Air"
kind = "ndc"
endpoint = "http://127.0.0.1:9"
routes = "none"
"""
# Test airlines (and the simulators) listen on 127.0.0.1, which the registry refuses unless it lists it.
LOCAL_ENDPOINTS = ("127.0.0.1",)


def registry_file(
    tmp_path: Path, text: str, *, private_endpoints_allowed: Sequence[str] | None = LOCAL_ENDPOINTS
) -> Path:
    """``text`` written as an airline registry file in ``tmp_path``, after a ``private_endpoints_allowed`` line
    listing ``private_endpoints_allowed`` (by default 127.0.0.1; None: no such line, for a ``text`` with its own)."""
    head = (
        ""
        if private_endpoints_allowed is None
        else f"private_endpoints_allowed = {json.dumps(list(private_endpoints_allowed))}\n"
    )
    path = tmp_path / "airlines.toml"
    path.write_text(head + text, encoding="utf-8")
    return path
