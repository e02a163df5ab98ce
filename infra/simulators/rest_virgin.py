"""A simulated Virgin Atlantic shopping API: ``GET /api/v2/flights/search`` with query parameters.

Its own dialect on purpose: camelCase parameters (``from``, ``to``, ``departDate``, ``cabinClass``), the
cabins Economy/Premium/Upper Class, and prices in minor units (``totalMinor`` with ``decimals``).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from infra.simulators.faults import AirlineGate, AirlineState, is_path
from infra.simulators.schedule import AIRCRAFT_NAMES, CabinName, FareOffer, Schedule, ShopQuery, stable_seed

__all__ = ["SEARCH_PATH", "build_app"]

SEARCH_PATH = "/api/v2/flights/search"
_CABINS: dict[str, CabinName] = {"economy": "economy", "premium": "premium", "upper": "business"}
_CABIN_OUT: dict[CabinName, str] = {v: k for k, v in _CABINS.items()}


def _invalid(field: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"errorCode": "VALIDATION_ERROR", "errors": [{"field": field, "message": message}]}, status_code=400
    )


def _int(params: dict[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    return default if raw in (None, "") else int(raw)


def _parse(request: Request, airline: str) -> ShopQuery | JSONResponse:
    params = dict(request.query_params)
    try:
        depart = date.fromisoformat(params.get("departDate", ""))
        ret = params.get("returnDate")
        query = ShopQuery(
            airline=airline,
            origin=params.get("from", "").upper(),
            destination=params.get("to", "").upper(),
            departure_date=depart,
            return_date=date.fromisoformat(ret) if ret else None,
            adults=_int(params, "adults", 1),
            children=_int(params, "children", 0),
            infants=_int(params, "infants", 0),
            cabin=_CABINS[params.get("cabinClass", "economy")],
            currency=params.get("currency", "GBP").upper(),
        )
    except KeyError:
        return _invalid("cabinClass", "must be economy, premium or upper")
    except ValueError:
        return _invalid("query", "dates must be YYYY-MM-DD and passenger counts integers")
    problems = query.problems(today=datetime.now(UTC).date())
    return _invalid("query", "; ".join(problems)) if problems else query


def _itinerary(offer: FareOffer) -> dict[str, Any]:
    decimals = 2
    scale = 10**decimals
    return {
        "id": offer.offer_id,
        "fareFamily": offer.brand,
        "cabinClass": _CABIN_OUT[offer.cabin],
        "price": {
            "totalMinor": int(offer.total * scale),
            "currency": offer.currency,
            "decimals": decimals,
            "perPassenger": [
                {"type": "adult", "amountMinor": int(offer.adult_price * scale)},
                {"type": "child", "amountMinor": int(offer.child_price * scale)},
                {"type": "infant", "amountMinor": int(offer.infant_price * scale)},
            ],
        },
        "validUntil": offer.expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "legs": [
            {
                "direction": "outbound" if i == 0 else "inbound",
                "durationMinutes": flight.duration_minutes,
                "flights": [
                    {
                        "flightNo": flight.designator,
                        "from": flight.origin,
                        "to": flight.destination,
                        "departsAt": flight.departure.isoformat(timespec="minutes"),
                        "arrivesAt": flight.arrival.isoformat(timespec="minutes"),
                        "aircraft": {"code": flight.aircraft, "name": AIRCRAFT_NAMES.get(flight.aircraft)},
                    }
                ],
            }
            for i, flight in enumerate(offer.journeys)
        ],
    }


def build_app(state: AirlineState, schedule: Schedule) -> ASGIApp:
    """The airline's REST API behind its gate."""

    async def search(request: Request) -> Response:
        parsed = _parse(request, state.code)
        if isinstance(parsed, JSONResponse):
            return parsed
        offers = schedule.offers(parsed, now=datetime.now(UTC), ttl_s=state.config.offer_ttl_s)
        body = json.dumps(
            {
                "searchId": f"{stable_seed(parsed, datetime.now(UTC).isoformat()):016x}",
                "currency": parsed.currency,
                "itineraries": [_itinerary(o) for o in offers],
            }
        ).encode()
        if state.malformed_now():
            # A body cut short: what a proxy or a crashed serializer leaves behind.
            body = body[: max(len(body) // 2, 10)]
        return Response(body, media_type="application/json")

    app = Starlette(routes=[Route(SEARCH_PATH, search, methods=["GET"])])
    return AirlineGate(app, state, is_business=is_path("GET", SEARCH_PATH))
