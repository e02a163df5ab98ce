"""A simulated IATA NDC 21.3 airline: ``POST /ndc/AirShopping`` taking AirShoppingRQ, answering AirShoppingRS.

Recognisably NDC but only as large as Jetbridge needs: parties, criteria per origin-destination, Paxs,
cabin (PADIS 9873 codes) and currency in; OffersGroup/CarrierOffers/Offer with DataLists
(PaxList, PaxSegmentList, PaxJourneyList, PriceClassList) referenced by id out. Business errors are an
``<Errors><Error>`` answer with HTTP 200, as NDC airlines do.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from infra.simulators.faults import AirlineGate, AirlineState, is_path
from infra.simulators.schedule import CabinName, FareOffer, Flight, Schedule, ShopQuery

__all__ = ["CABIN_CODES", "NDC_NS", "build_app"]

NDC_NS = "http://www.iata.org/IATA/2015/EASD/00/IATA_OffersAndOrdersMessage"
AIR_SHOPPING_PATH = "/ndc/AirShopping"
XML_TYPE = "application/xml; charset=utf-8"

# PADIS codeset 9873, "cabin class of service": what NDC puts in CabinTypeCode.
CABIN_CODES: dict[str, CabinName] = {"1": "first", "2": "business", "4": "premium", "5": "economy"}
_CABIN_NAMES: dict[CabinName, tuple[str, str]] = {
    "first": ("1", "FIRST"),
    "business": ("2", "BUSINESS"),
    "premium": ("4", "PREMIUM ECONOMY"),
    "economy": ("5", "ECONOMY"),
}

ET.register_namespace("", NDC_NS)


class _RequestError(Exception):
    """The request cannot be answered; ``code`` is the NDC error code sent back."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def _q(tag: str) -> str:
    return f"{{{NDC_NS}}}{tag}"


def _path(*tags: str) -> str:
    return "/".join(_q(t) for t in tags)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, _q(tag), attrib)
    if text is not None:
        element.text = text
    return element


def _serialise(root: ET.Element) -> bytes:
    payload: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return payload


def _duration(minutes: int) -> str:
    return f"PT{minutes // 60}H{minutes % 60}M"


def _money(parent: ET.Element, tag: str, amount: object, currency: str) -> None:
    _sub(parent, tag, f"{amount}", CurCode=currency)


def parse_request(body: bytes, airline: str) -> tuple[ShopQuery, str]:
    """Read an AirShoppingRQ into a query and its echo token; raises `_RequestError` when it cannot."""
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except (ET.ParseError, DefusedXmlException) as exc:
        raise _RequestError("911", f"request is not acceptable XML: {type(exc).__name__}") from exc
    if root.tag != _q("IATA_AirShoppingRQ"):
        raise _RequestError("911", "expected IATA_AirShoppingRQ in the 21.3 namespace")
    echo = root.findtext(_path("PayloadAttributes", "EchoTokenText"), "").strip()
    criteria = root.findall(
        _path("Request", "FlightRequest", "FlightRequestOriginDestinationsCriteria", "OriginDestCriteria")
    )
    if not 1 <= len(criteria) <= 2:
        raise _RequestError("911", "one or two OriginDestCriteria are supported")
    legs: list[tuple[str, str, date]] = []
    for od in criteria:
        origin = od.findtext(_path("OriginDepCriteria", "IATA_LocationCode"), "").strip()
        destination = od.findtext(_path("DestArrivalCriteria", "IATA_LocationCode"), "").strip()
        day = od.findtext(_path("OriginDepCriteria", "Date"), "").strip()
        try:
            legs.append((origin, destination, date.fromisoformat(day)))
        except ValueError as exc:
            raise _RequestError("102", "OriginDepCriteria/Date must be YYYY-MM-DD") from exc
    if len(legs) == 2 and (legs[1][0], legs[1][1]) != (legs[0][1], legs[0][0]):
        raise _RequestError("911", "the second origin-destination must be the return of the first")
    ptcs = [p.findtext(_q("PTC"), "").strip() for p in root.findall(_path("Request", "Paxs", "Pax"))]
    if any(p not in ("ADT", "CHD", "INF") for p in ptcs):
        raise _RequestError("911", "PTC must be ADT, CHD or INF")
    cabin_code = root.findtext(_path("Request", "ShoppingCriteria", "CabinTypeCriteria", "CabinTypeCode"), "5").strip()
    if cabin_code not in CABIN_CODES:
        raise _RequestError("911", "CabinTypeCode must be 1, 2, 4 or 5")
    currency = root.findtext(_path("Request", "ResponseParameters", "CurParameter", "CurCode"), "USD").strip()
    query = ShopQuery(
        airline=airline,
        origin=legs[0][0],
        destination=legs[0][1],
        departure_date=legs[0][2],
        return_date=legs[1][2] if len(legs) == 2 else None,
        adults=ptcs.count("ADT"),
        children=ptcs.count("CHD"),
        infants=ptcs.count("INF"),
        cabin=CABIN_CODES[cabin_code],
        currency=currency,
    )
    problems = query.problems(today=datetime.now(UTC).date())
    if problems:
        raise _RequestError("304", "; ".join(problems))
    return query, echo


def _envelope(echo: str) -> ET.Element:
    root = ET.Element(_q("IATA_AirShoppingRS"))
    payload = _sub(root, "PayloadAttributes")
    if echo:
        _sub(payload, "EchoTokenText", echo[:64])
    _sub(payload, "Timestamp", datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))
    _sub(payload, "VersionNumber", "21.3")
    return root


def render_errors(code: str, text: str, *, echo: str = "") -> bytes:
    root = _envelope(echo)
    errors = _sub(root, "Errors")
    error = _sub(errors, "Error")
    _sub(error, "Code", code)
    _sub(error, "DescText", text[:500])
    _sub(error, "TypeCode", "PLC")
    return _serialise(root)


def render_offers(query: ShopQuery, offers: list[FareOffer], *, echo: str = "") -> bytes:
    """AirShoppingRS for the offers, with flights and journeys listed once and referenced by id."""
    root = _envelope(echo)
    response = _sub(root, "Response")
    data_lists = _sub(response, "DataLists")
    pax_list = _sub(data_lists, "PaxList")
    pax_ids: dict[str, list[str]] = {"ADT": [], "CHD": [], "INF": []}
    for ptc, count in (("ADT", query.adults), ("CHD", query.children), ("INF", query.infants)):
        for _ in range(count):
            pax_id = f"PAX{sum(len(v) for v in pax_ids.values()) + 1}"
            pax_ids[ptc].append(pax_id)
            pax = _sub(pax_list, "Pax")
            _sub(pax, "PaxID", pax_id)
            _sub(pax, "PTC", ptc)

    segment_ids: dict[Flight, str] = {}
    for offer in offers:
        for flight in offer.journeys:
            segment_ids.setdefault(flight, f"SEG{len(segment_ids) + 1}")
    journey_list = _sub(data_lists, "PaxJourneyList")
    segment_list = _sub(data_lists, "PaxSegmentList")
    for flight, seg_id in segment_ids.items():
        journey = _sub(journey_list, "PaxJourney")
        _sub(journey, "PaxJourneyID", f"PJ{seg_id[3:]}")
        _sub(journey, "Duration", _duration(flight.duration_minutes))
        _sub(journey, "PaxSegmentRefID", seg_id)
        segment = _sub(segment_list, "PaxSegment")
        _sub(segment, "PaxSegmentID", seg_id)
        dep = _sub(segment, "Dep")
        _sub(dep, "IATA_LocationCode", flight.origin)
        _sub(dep, "AircraftScheduledDateTime", flight.departure.isoformat(timespec="seconds"))
        arrival = _sub(segment, "Arrival")
        _sub(arrival, "IATA_LocationCode", flight.destination)
        _sub(arrival, "AircraftScheduledDateTime", flight.arrival.isoformat(timespec="seconds"))
        carrier = _sub(segment, "MarketingCarrierInfo")
        _sub(carrier, "CarrierDesigCode", flight.carrier)
        _sub(carrier, "MarketingCarrierFlightNumberText", str(flight.number))
        leg = _sub(segment, "DatedOperatingLeg")
        _sub(leg, "DatedOperatingLegID", f"LEG{seg_id[3:]}")
        aircraft = _sub(leg, "IATA_AircraftType")
        _sub(aircraft, "IATA_AircraftTypeCode", flight.aircraft)
        _sub(segment, "Duration", _duration(flight.duration_minutes))

    brand_ids: dict[str, str] = {}
    for offer in offers:
        brand_ids.setdefault(offer.brand, f"PC{len(brand_ids) + 1}")
    price_classes = _sub(data_lists, "PriceClassList")
    for brand, pc_id in brand_ids.items():
        price_class = _sub(price_classes, "PriceClass")
        _sub(price_class, "PriceClassID", pc_id)
        _sub(price_class, "Name", brand)

    carrier_offers = _sub(_sub(response, "OffersGroup"), "CarrierOffers")
    owner = _sub(carrier_offers, "CarrierOffersSummary")
    _sub(owner, "MatchedOfferQty", str(len(offers)))
    for offer in offers:
        _render_offer(carrier_offers, offer, pax_ids, segment_ids, brand_ids)
    return _serialise(root)


def _render_offer(
    parent: ET.Element,
    offer: FareOffer,
    pax_ids: dict[str, list[str]],
    segment_ids: dict[Flight, str],
    brand_ids: dict[str, str],
) -> None:
    element = _sub(parent, "Offer")
    _sub(element, "OfferID", offer.offer_id)
    _sub(element, "OwnerCode", offer.airline)
    expiry = offer.expires_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    _sub(element, "OfferExpirationTimeLimitDateTime", expiry)
    overview = _sub(element, "JourneyOverview")
    for flight in offer.journeys:
        jpc = _sub(overview, "JourneyPriceClass")
        _sub(jpc, "PaxJourneyRefID", f"PJ{segment_ids[flight][3:]}")
        _sub(jpc, "PriceClassRefID", brand_ids[offer.brand])
    cabin_code, cabin_name = _CABIN_NAMES[offer.cabin]
    unit_prices = {"ADT": offer.adult_price, "CHD": offer.child_price, "INF": offer.infant_price}
    for n, (ptc, ids) in enumerate((p for p in pax_ids.items() if p[1]), start=1):
        item = _sub(element, "OfferItem")
        _sub(item, "OfferItemID", f"{offer.offer_id}-{n}")
        _sub(item, "MandatoryInd", "true")
        detail = _sub(item, "FareDetail")
        for pax_id in ids:
            _sub(detail, "PaxRefID", pax_id)
        _money(_sub(_sub(detail, "FarePriceType"), "Price"), "TotalAmount", unit_prices[ptc], offer.currency)
        for flight in offer.journeys:
            component = _sub(detail, "FareComponent")
            _sub(component, "PaxSegmentRefID", segment_ids[flight])
            cabin = _sub(component, "CabinType")
            _sub(cabin, "CabinTypeCode", cabin_code)
            _sub(cabin, "CabinTypeName", cabin_name)
            _sub(component, "PriceClassRefID", brand_ids[offer.brand])
        _money(_sub(item, "Price"), "TotalAmount", unit_prices[ptc] * len(ids), offer.currency)
    _money(_sub(element, "TotalPrice"), "TotalAmount", offer.total, offer.currency)


def build_app(state: AirlineState, schedule: Schedule) -> ASGIApp:
    """The airline's NDC endpoint behind its gate."""

    async def air_shopping(request: Request) -> Response:
        body = await request.body()
        try:
            query, echo = parse_request(body, state.code)
        except _RequestError as exc:
            return Response(render_errors(exc.code, exc.text), media_type=XML_TYPE)
        offers = schedule.offers(query, now=datetime.now(UTC), ttl_s=state.config.offer_ttl_s)
        payload = render_offers(query, offers, echo=echo)
        if state.malformed_now():
            # Cut mid-document: unclosed elements make it XML no parser accepts.
            payload = payload[: max(len(payload) // 2, 40)]
        return Response(payload, media_type=XML_TYPE)

    app = Starlette(routes=[Route(AIR_SHOPPING_PATH, air_shopping, methods=["POST"])])
    return AirlineGate(app, state, is_business=is_path("POST", AIR_SHOPPING_PATH))
