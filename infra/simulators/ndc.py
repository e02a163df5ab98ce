"""A simulated IATA NDC 21.3 airline: shopping, pricing and orders as XML over ``POST /ndc/<message>``.

    POST /ndc/AirShopping     AirShoppingRQ  → AirShoppingRS (offers; the order desk remembers what it sold)
    POST /ndc/OfferPrice      OfferPriceRQ   → OfferPriceRS (the live price; a change is a PRICE_CHANGED Warning
                                              with the PreviousTotalAmount; IdentityDocRequiredInd)
    POST /ndc/OrderCreate     OrderCreateRQ  → OrderViewRS (Paxs with Individual and IdentityDoc, ContactInfo, the
                                              accepted total as PaymentProcessingDetails/Amount, the seller's own
                                              reference as a BookingRef whose BookingEntity is its TravelAgency)
    POST /ndc/OrderRetrieve   OrderRetrieveRQ → OrderViewRS, by Order/OrderID or by the seller's BookingRef
    POST /ndc/OrderCancel     OrderCancelRQ  → OrderCancelRS (the order, CLOSED, its item CANCELLED)

Recognisably NDC but only as large as Jetbridge needs: parties, criteria per origin-destination, Paxs,
cabin (PADIS 9873 codes) and currency in; OffersGroup/CarrierOffers/Offer with DataLists
(PaxList, PaxSegmentList, PaxJourneyList, PriceClassList) referenced by id out. Business errors are an
``<Errors><Error>`` answer with HTTP 200, as NDC airlines do; the order desk's problems (infra/simulators/orders.py)
are the codes in `ERROR_CODES` (a PRICE_CHANGED error carries the CurrentTotalAmount).

The airline's own changes (control API: POST /airlines/{code}/orders/{id}/change) are pushed as an
OrderChangeNotifRQ to ``webhook_url``, signed (`ChangePusher`). Every endpoint is business for the gate: counted,
delayed, and subject to the HTTP faults; ``malformed`` cuts any of the answers.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import defusedxml.ElementTree as SafeET
import httpx
from defusedxml import DefusedXmlException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Scope

from connectors.kinds.boundary import api_key
from connectors.orders import sign_body
from infra.simulators.faults import AirlineGate, AirlineState, api_key_of, is_path
from infra.simulators.orders import OrderProblem, PriceMoved, Quote, SimOrder, UnknownOrder
from infra.simulators.schedule import MAX_PASSENGERS, CabinName, FareOffer, Flight, Schedule, ShopQuery
from jetbridge.airlines import load_registry
from jetbridge.errors import ConfigurationError
from jetbridge.log import get_logger

__all__ = [
    "CABIN_CODES",
    "CHANGE_TYPES",
    "ERROR_CODES",
    "NDC_NS",
    "SELLER_AGENCY_ID",
    "ChangePusher",
    "CreateRequest",
    "build_app",
    "render_change_notif",
]

log = get_logger(__name__)

NDC_NS = "http://www.iata.org/IATA/2015/EASD/00/IATA_OffersAndOrdersMessage"
AIR_SHOPPING_PATH = "/ndc/AirShopping"
OFFER_PRICE_PATH = "/ndc/OfferPrice"
ORDER_CREATE_PATH = "/ndc/OrderCreate"
ORDER_RETRIEVE_PATH = "/ndc/OrderRetrieve"
ORDER_CANCEL_PATH = "/ndc/OrderCancel"
XML_TYPE = "application/xml; charset=utf-8"
# The travel agency the simulated airline sells through (the BookingRef entity of the seller's own reference).
SELLER_AGENCY_ID = "JETBRIDGE"

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


def _envelope(echo: str, message: str = "IATA_AirShoppingRS") -> ET.Element:
    root = ET.Element(_q(message))
    payload = _sub(root, "PayloadAttributes")
    if echo:
        _sub(payload, "EchoTokenText", echo[:64])
    _sub(payload, "Timestamp", datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))
    _sub(payload, "VersionNumber", "21.3")
    return root


def render_errors(
    code: str,
    text: str,
    *,
    echo: str = "",
    message: str = "IATA_AirShoppingRS",
    amount: Decimal | None = None,
    currency: str = "",
) -> bytes:
    """An ``<Errors>`` answer in ``message`` (the response the request asked for); ``amount``: the new total of a
    price change."""
    root = _envelope(echo, message)
    errors = _sub(root, "Errors")
    error = _sub(errors, "Error")
    _sub(error, "Code", code)
    _sub(error, "DescText", text[:500])
    _sub(error, "TypeCode", "PLC")
    if amount is not None:
        _money(error, "CurrentTotalAmount", f"{amount:.2f}", currency)
    return _serialise(root)


def _render_flights(data_lists: ET.Element, flights: list[Flight]) -> dict[Flight, str]:
    """PaxJourneyList and PaxSegmentList for the flights (one journey per flight, each listed once); their ids."""
    segment_ids: dict[Flight, str] = {}
    for flight in flights:
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
    return segment_ids


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

    segment_ids = _render_flights(data_lists, [f for offer in offers for f in offer.journeys])

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


# ---- orders: OfferPrice, OrderCreate, OrderRetrieve, OrderCancel, and the airline's OrderChangeNotif ----


def _parse(body: bytes, message: str) -> tuple[ET.Element, str]:
    """The request's root element, checked to be ``message``, and its echo token."""
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except (ET.ParseError, DefusedXmlException) as exc:
        raise _RequestError("911", f"request is not acceptable XML: {type(exc).__name__}") from exc
    if root.tag != _q(message):
        raise _RequestError("911", f"expected {message} in the 21.3 namespace")
    return root, root.findtext(_path("PayloadAttributes", "EchoTokenText"), "").strip()


def _required(parent: ET.Element, path: str, what: str) -> str:
    text = (parent.findtext(path) or "").strip()
    if not text:
        raise _RequestError("911", f"{what} is required")
    return text


def _owned(root: ET.Element, path: str, airline: str) -> None:
    owner = (root.findtext(path) or airline).strip()
    if owner != airline:
        raise _RequestError("911", f"OwnerCode must be {airline}")


def parse_offer_price(body: bytes, airline: str) -> tuple[str, str]:
    """The offer an OfferPriceRQ selects, and its echo token."""
    root, echo = _parse(body, "IATA_OfferPriceRQ")
    selected = _path("Request", "PricedOffer", "SelectedOfferList", "SelectedOffer")
    _owned(root, f"{selected}/{_q('OwnerCode')}", airline)
    return _required(root, f"{selected}/{_q('OfferRefID')}", "SelectedOffer/OfferRefID"), echo


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """What an OrderCreateRQ asks for; passengers and contact as the order desk keeps them (personal data)."""

    offer_id: str
    passengers: list[dict[str, Any]] = field(repr=False)
    contact: dict[str, Any] = field(repr=False)
    accepted_total: Decimal | None
    client_reference: str | None
    echo: str


def _date(text: str, what: str) -> str:
    # Checked, never echoed: it is personal data.
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError as exc:
        raise _RequestError("102", f"{what} must be YYYY-MM-DD") from exc


def parse_order_create(body: bytes, airline: str) -> CreateRequest:
    """An OrderCreateRQ: the selected offer, the passengers (Individual, IdentityDoc), contact, accepted total and
    the seller's own booking reference. Error texts name fields, never their values."""
    root, echo = _parse(body, "IATA_OrderCreateRQ")
    create = _path("Request", "CreateOrder")
    _owned(root, f"{create}/{_path('SelectedOffer', 'OwnerCode')}", airline)
    offer_id = _required(root, f"{create}/{_path('SelectedOffer', 'OfferRefID')}", "SelectedOffer/OfferRefID")
    paxs = root.findall(_path("Request", "DataLists", "PaxList", "Pax"))
    if not 1 <= len(paxs) <= MAX_PASSENGERS:
        raise _RequestError("911", f"PaxList must hold 1 to {MAX_PASSENGERS} Pax")
    passengers: list[dict[str, Any]] = []
    for n, pax in enumerate(paxs, start=1):
        person = pax.find(_q("Individual"))
        if person is None:
            raise _RequestError("911", f"Pax {n}: Individual is required")
        passenger: dict[str, Any] = {
            "given_name": _required(person, _q("GivenName"), f"Pax {n}: Individual/GivenName"),
            "surname": _required(person, _q("Surname"), f"Pax {n}: Individual/Surname"),
            "birthdate": _date(_required(person, _q("Birthdate"), f"Pax {n}: Birthdate"), f"Pax {n}: Birthdate"),
            "document": None,
        }
        doc = pax.find(_q("IdentityDoc"))
        if doc is not None:
            passenger["document"] = {
                "number": _required(doc, _q("IdentityDocID"), f"Pax {n}: IdentityDoc/IdentityDocID"),
                "type": (doc.findtext(_q("IdentityDocTypeCode")) or "PT").strip(),
                "issuing_country": _required(doc, _q("IssuingCountryCode"), f"Pax {n}: IdentityDoc/IssuingCountryCode"),
                "expires_on": _date(
                    _required(doc, _q("ExpiryDate"), f"Pax {n}: IdentityDoc/ExpiryDate"), f"Pax {n}: ExpiryDate"
                ),
            }
        passengers.append(passenger)
    contact_info = root.find(_path("Request", "DataLists", "ContactInfoList", "ContactInfo"))
    contact: dict[str, Any] = {}
    if contact_info is not None:
        contact = {
            "email": (contact_info.findtext(_path("EmailAddress", "EmailAddressText")) or "").strip(),
            "phone": (contact_info.findtext(_path("Phone", "PhoneNumber")) or "").strip(),
        }
    amount = root.find(_path("Request", "PaymentFunctions", "PaymentProcessingDetails", "Amount"))
    accepted: Decimal | None = None
    if amount is not None:
        try:
            accepted = Decimal((amount.text or "").strip())
        except InvalidOperation as exc:
            raise _RequestError("911", "PaymentProcessingDetails/Amount must be a decimal amount") from exc
        if not accepted.is_finite():
            raise _RequestError("911", "PaymentProcessingDetails/Amount must be a decimal amount")
    return CreateRequest(offer_id, passengers, contact, accepted, _seller_reference(root, create), echo)


def _seller_reference(root: ET.Element, under: str) -> str | None:
    """The seller's own reference: a BookingRef whose BookingEntity is a travel agency (ours: JETBRIDGE)."""
    for ref in root.findall(f"{under}/{_q('BookingRef')}"):
        if ref.find(_path("BookingEntity", "TravelAgency")) is not None:
            return (ref.findtext(_q("BookingID")) or "").strip()[:64] or None
    return None


def parse_order_retrieve(body: bytes, airline: str) -> tuple[str | None, str | None, str]:
    """An OrderRetrieveRQ: by OrderID, or by the seller's BookingRef; (order id, reference, echo)."""
    root, echo = _parse(body, "IATA_OrderRetrieveRQ")
    criteria = _path("Request", "OrderFilterCriteria")
    _owned(root, f"{criteria}/{_path('Order', 'OwnerCode')}", airline)
    order_id = (root.findtext(f"{criteria}/{_path('Order', 'OrderID')}") or "").strip() or None
    reference = _seller_reference(root, criteria)
    if order_id is None and reference is None:
        raise _RequestError("911", "OrderFilterCriteria needs Order/OrderID or a seller's BookingRef")
    return order_id, reference, echo


def parse_order_cancel(body: bytes, airline: str) -> tuple[str, str]:
    """The order an OrderCancelRQ cancels, and its echo token."""
    root, echo = _parse(body, "IATA_OrderCancelRQ")
    _owned(root, _path("Request", "Order", "OwnerCode"), airline)
    return _required(root, _path("Request", "Order", "OrderID"), "Order/OrderID"), echo


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render_priced_offer(quote: Quote, *, echo: str = "") -> bytes:
    """OfferPriceRS: the offer at its live price; a price change since shopping is a Warning with the previous
    total (``PRICE_CHANGED``, ``PreviousTotalAmount``)."""
    root = _envelope(echo, "IATA_OfferPriceRS")
    response = _sub(root, "Response")
    data_lists = _sub(response, "DataLists")
    pax_list = _sub(data_lists, "PaxList")
    pax_ids = [f"PAX{n}" for n in range(1, quote.passenger_count + 1)]
    for pax_id in pax_ids:
        _sub(_sub(pax_list, "Pax"), "PaxID", pax_id)
    segment_ids = _render_flights(data_lists, list(quote.offer.journeys))
    offer = quote.offer
    element = _sub(_sub(response, "PricedOffer"), "Offer")
    _sub(element, "OfferID", offer.offer_id)
    _sub(element, "OwnerCode", offer.airline)
    # In whole seconds, as AirShoppingRS says it: the same offer, the same expiry.
    expiry = offer.expires_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    _sub(element, "OfferExpirationTimeLimitDateTime", expiry)
    overview = _sub(element, "JourneyOverview")
    for flight in offer.journeys:
        _sub(_sub(overview, "JourneyPriceClass"), "PaxJourneyRefID", f"PJ{segment_ids[flight][3:]}")
    # Whether every passenger's travel document must come with the order (an international route).
    _sub(element, "IdentityDocRequiredInd", "true" if quote.documents_required else "false")
    item = _sub(element, "OfferItem")
    _sub(item, "OfferItemID", f"{offer.offer_id}-1")
    _sub(item, "MandatoryInd", "true")
    detail = _sub(item, "FareDetail")
    for pax_id in pax_ids:
        _sub(detail, "PaxRefID", pax_id)
    _money(_sub(item, "Price"), "TotalAmount", f"{quote.total:.2f}", offer.currency)
    _money(_sub(element, "TotalPrice"), "TotalAmount", f"{quote.total:.2f}", offer.currency)
    if quote.previous_total is not None and quote.previous_total != quote.total:
        warning = _sub(_sub(root, "Warnings"), "Warning")
        _sub(warning, "Code", "PRICE_CHANGED")
        _sub(
            warning,
            "DescText",
            f"the price changed since shopping: {quote.previous_total:.2f} then, {quote.total:.2f} now",
        )
        _money(warning, "PreviousTotalAmount", f"{quote.previous_total:.2f}", offer.currency)
    return _serialise(root)


# How the order desk's states read in NDC: the order is OPENED until cancelled; its item says what happened.
_ITEM_STATUS = {"CONFIRMED": "CONFIRMED", "CHANGED": "SCHEDULE_CHANGED", "CANCELLED": "CANCELLED"}


def _render_order(parent: ET.Element, order: SimOrder) -> None:
    """DataLists and Order, as in OrderViewRS (and OrderCancelRS, OrderChangeNotifRQ)."""
    data_lists = _sub(parent, "DataLists")
    pax_list = _sub(data_lists, "PaxList")
    pax_ids = [f"PAX{n}" for n in range(1, len(order.passengers) + 1)]
    for pax_id, passenger in zip(pax_ids, order.passengers, strict=True):
        pax = _sub(pax_list, "Pax")
        _sub(pax, "PaxID", pax_id)
        person = _sub(pax, "Individual")
        _sub(person, "GivenName", str(passenger.get("given_name", "")))
        _sub(person, "Surname", str(passenger.get("surname", "")))
    segment_ids = _render_flights(data_lists, list(order.offer.journeys))
    element = _sub(parent, "Order")
    _sub(element, "OrderID", order.order_id)
    _sub(element, "OwnerCode", order.offer.airline)
    _sub(element, "StatusCode", "CLOSED" if order.status == "CANCELLED" else "OPENED")
    airline_ref = _sub(element, "BookingRef")
    _sub(airline_ref, "BookingID", order.order_id)
    _sub(_sub(_sub(airline_ref, "BookingEntity"), "Carrier"), "AirlineDesigCode", order.offer.airline)
    if order.client_reference:
        seller_ref = _sub(element, "BookingRef")
        _sub(seller_ref, "BookingID", order.client_reference)
        _sub(_sub(_sub(seller_ref, "BookingEntity"), "TravelAgency"), "AgencyID", SELLER_AGENCY_ID)
    _sub(element, "CreationDateTime", _stamp(order.created_at))
    _sub(element, "LastModifiedDateTime", _stamp(order.updated_at))
    item = _sub(element, "OrderItem")
    _sub(item, "OrderItemID", f"{order.order_id}-1")
    _sub(item, "StatusCode", _ITEM_STATUS[order.status])
    _money(_sub(item, "Price"), "TotalAmount", f"{order.total:.2f}", order.currency)
    n = 0
    for pax_id in pax_ids:
        for flight in order.offer.journeys:
            n += 1
            service = _sub(item, "Service")
            _sub(service, "ServiceID", f"SRV{n}")
            _sub(service, "PaxRefID", pax_id)
            _sub(_sub(service, "ServiceAssociations"), "PaxJourneyRefID", f"PJ{segment_ids[flight][3:]}")
    _money(_sub(element, "TotalPrice"), "TotalAmount", f"{order.total:.2f}", order.currency)


def render_order_view(order: SimOrder, *, echo: str = "", message: str = "IATA_OrderViewRS") -> bytes:
    """OrderViewRS (or, with ``message``, OrderCancelRS): the order as the airline holds it."""
    root = _envelope(echo, message)
    _render_order(_sub(root, "Response"), order)
    return _serialise(root)


# What the order desk's change names are called in an OrderChangeNotifRQ.
CHANGE_TYPES = {"airline_cancellation": "CANCELLATION", "schedule_change": "SCHEDULE_CHANGE"}


def render_change_notif(order: SimOrder, change: str, reason: str | None, *, at: datetime | None = None) -> bytes:
    """OrderChangeNotifRQ: the airline tells the seller that it changed an order on its own, and why."""
    root = ET.Element(_q("IATA_OrderChangeNotifRQ"))
    _sub(_sub(root, "MessageDoc"), "RefVersionNumber", "21.3")
    party = _sub(root, "Party")
    _sub(_sub(_sub(party, "Sender"), "ORA"), "AirlineDesigCode", order.offer.airline)
    _sub(_sub(_sub(party, "Recipient"), "TravelAgency"), "AgencyID", SELLER_AGENCY_ID)
    payload = _sub(root, "PayloadAttributes")
    _sub(payload, "Timestamp", _stamp(datetime.now(UTC)))
    _sub(payload, "VersionNumber", "21.3")
    request = _sub(root, "Request")
    notice = _sub(request, "ChangeNotification")
    _sub(notice, "ChangeTypeCode", CHANGE_TYPES.get(change, change.upper()))
    if reason:
        _sub(notice, "ReasonText", reason[:200])
    _sub(notice, "ChangeDateTime", _stamp(at or order.updated_at))
    _render_order(request, order)
    return _serialise(root)


# An order problem of the desk → the NDC error code sent back.
ERROR_CODES = {
    "offer_not_found": "OFFER_NOT_FOUND",
    "offer_expired": "OFFER_EXPIRED",
    "sold_out": "SOLD_OUT",
    "price_changed": "PRICE_CHANGED",
    "order_failed": "ORDER_FAILED",
    "order_not_found": "ORDER_NOT_FOUND",
}


def _problem(exc: OrderProblem, *, echo: str, message: str) -> bytes:
    code = ERROR_CODES.get(exc.code, "911")
    if isinstance(exc, PriceMoved):
        return render_errors(code, str(exc), echo=echo, message=message, amount=exc.total, currency=exc.currency)
    return render_errors(code, str(exc), echo=echo, message=message)


# The airline's own changes go to the seller's webhook: tried this many times, waiting this long before each try
# (all within ~5 s), each try given PUSH_TIMEOUT_S.
PUSH_WAITS_S = (0.0, 0.25, 0.5, 1.0, 2.0)
PUSH_TIMEOUT_S = 1.0
# Sellers' keys remembered per order (the latest orders), to sign the changes of each with its seller's key.
MAX_SELLER_KEYS = 50_000


def _registry_key(code: str) -> str:
    """The key the connectors send for ``code``: the registry's credential variable, or the dev key."""
    try:
        airline = load_registry().get(code)
    except ConfigurationError:
        airline = None
    if airline is None:
        return f"dev-key-{code.lower()}"
    return api_key(airline).get_secret_value()


class ChangePusher:
    """The airline's order listener: each change it makes on its own is POSTed (an OrderChangeNotifRQ) to the
    seller's webhook, when ``webhook_url`` is set, signed ``X-Jetbridge-Signature: sha256=<HMAC of the body>``.

    The key is the API key the seller presented when it created the order (an airline signs with the secret
    it shares with that seller); for an order it did not see created, the key the registry's credential variable
    holds (``connectors.kinds.boundary.api_key``: the dev key when unset). Pushes run in background tasks so
    the change itself is never held up; a failed push (no connection, 5xx, 408, 429) is tried again with backoff,
    a refusal (other 4xx) is not.
    """

    def __init__(self, state: AirlineState) -> None:
        self._state = state
        self._keys: OrderedDict[str, str] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivered = 0

    def seller(self, order_id: str, key: str) -> None:
        self._keys[order_id] = key
        self._keys.move_to_end(order_id)
        while len(self._keys) > MAX_SELLER_KEYS:
            self._keys.popitem(last=False)

    async def __call__(self, order: SimOrder, change: str, reason: str | None) -> None:
        url = self._state.config.webhook_url
        if not url:
            return
        # Rendered now: the order may change again before the push goes out.
        body = render_change_notif(order, change, reason)
        key = self._keys.get(order.order_id) or _registry_key(self._state.code)
        headers = {"Content-Type": XML_TYPE, "X-Jetbridge-Signature": sign_body(body, key)}
        task = asyncio.create_task(self._push(url, body, headers, order.order_id, change))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _push(self, url: str, body: bytes, headers: dict[str, str], order_id: str, change: str) -> None:
        context = {"airline": self._state.code, "order_id": order_id, "change": change}
        async with httpx.AsyncClient(timeout=PUSH_TIMEOUT_S, trust_env=False) as client:
            for attempt, wait in enumerate(PUSH_WAITS_S, start=1):
                await asyncio.sleep(wait)
                try:
                    response = await client.post(url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                else:
                    if response.is_success:
                        self.delivered += 1
                        log.info("order change pushed", attempt=attempt, **context)
                        return
                    outcome = f"HTTP {response.status_code}"
                    if response.status_code < 500 and response.status_code not in (408, 429):
                        log.warning("order change refused by the webhook", outcome=outcome, **context)
                        return
                log.info("order change push failed", attempt=attempt, outcome=outcome, **context)
        log.warning("order change not delivered", attempts=len(PUSH_WAITS_S), **context)

    async def aclose(self) -> None:
        """Stop the pushes in flight (the airline's server is going away)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _pusher(state: AirlineState) -> ChangePusher:
    """The airline's one pusher: the app is rebuilt whenever its server starts again, the listener is not."""
    for listener in state.orders.listeners:
        if isinstance(listener, ChangePusher):
            return listener
    pusher = ChangePusher(state)
    state.orders.listeners.append(pusher)
    return pusher


_BUSINESS = [
    is_path("POST", path)
    for path in (AIR_SHOPPING_PATH, OFFER_PRICE_PATH, ORDER_CREATE_PATH, ORDER_RETRIEVE_PATH, ORDER_CANCEL_PATH)
]


def _business(scope: Scope, body: bytes) -> bool:
    """Every NDC message is airline business (counted, delayed, faulted)."""
    return any(check(scope, body) for check in _BUSINESS)


def build_app(state: AirlineState, schedule: Schedule) -> ASGIApp:
    """The airline's NDC endpoints behind its gate: shopping, pricing and orders."""
    pusher = _pusher(state)

    def answer(payload: bytes) -> Response:
        if state.malformed_now():
            # Cut mid-document: unclosed elements make it XML no parser accepts.
            payload = payload[: max(len(payload) // 2, 40)]
        return Response(payload, media_type=XML_TYPE)

    async def air_shopping(request: Request) -> Response:
        body = await request.body()
        try:
            query, echo = parse_request(body, state.code)
        except _RequestError as exc:
            return Response(render_errors(exc.code, exc.text), media_type=XML_TYPE)
        offers = schedule.offers(query, now=datetime.now(UTC), ttl_s=state.config.offer_ttl_s)
        # The order desk remembers what it sold, so it can be priced and booked.
        state.orders.remember(offers, query, documents_required=schedule.international(query.origin, query.destination))
        return answer(render_offers(query, offers, echo=echo))

    async def offer_price(request: Request) -> Response:
        message = "IATA_OfferPriceRS"
        echo = ""
        try:
            offer_id, echo = parse_offer_price(await request.body(), state.code)
            quote = state.orders.price(offer_id)
        except _RequestError as exc:
            return Response(render_errors(exc.code, exc.text, message=message), media_type=XML_TYPE)
        except OrderProblem as exc:
            return answer(_problem(exc, echo=echo, message=message))
        return answer(render_priced_offer(quote, echo=echo))

    async def order_create(request: Request) -> Response:
        message = "IATA_OrderViewRS"
        echo = ""
        try:
            asked = parse_order_create(await request.body(), state.code)
            echo = asked.echo
            order = await state.orders.create(
                asked.offer_id,
                passengers=asked.passengers,
                contact=asked.contact,
                client_reference=asked.client_reference,
                accepted_total=asked.accepted_total,
            )
        except _RequestError as exc:
            return Response(render_errors(exc.code, exc.text, message=message), media_type=XML_TYPE)
        except OrderProblem as exc:
            return answer(_problem(exc, echo=echo, message=message))
        key = api_key_of(request.headers)
        if key is not None:
            pusher.seller(order.order_id, key)
        return answer(render_order_view(order, echo=echo))

    async def order_retrieve(request: Request) -> Response:
        message = "IATA_OrderViewRS"
        echo = ""
        try:
            order_id, reference, echo = parse_order_retrieve(await request.body(), state.code)
            if order_id is not None:
                order = state.orders.get(order_id)
            else:
                found = state.orders.find(reference or "")
                if found is None:
                    raise UnknownOrder(f"no order with that booking reference at {state.code}")
                order = found
        except _RequestError as exc:
            return Response(render_errors(exc.code, exc.text, message=message), media_type=XML_TYPE)
        except OrderProblem as exc:
            return answer(_problem(exc, echo=echo, message=message))
        return answer(render_order_view(order, echo=echo))

    async def order_cancel(request: Request) -> Response:
        message = "IATA_OrderCancelRS"
        echo = ""
        try:
            order_id, echo = parse_order_cancel(await request.body(), state.code)
            order = state.orders.cancel(order_id)
        except _RequestError as exc:
            return Response(render_errors(exc.code, exc.text, message=message), media_type=XML_TYPE)
        except OrderProblem as exc:
            return answer(_problem(exc, echo=echo, message=message))
        return answer(render_order_view(order, echo=echo, message=message))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await pusher.aclose()

    app = Starlette(
        routes=[
            Route(AIR_SHOPPING_PATH, air_shopping, methods=["POST"]),
            Route(OFFER_PRICE_PATH, offer_price, methods=["POST"]),
            Route(ORDER_CREATE_PATH, order_create, methods=["POST"]),
            Route(ORDER_RETRIEVE_PATH, order_retrieve, methods=["POST"]),
            Route(ORDER_CANCEL_PATH, order_cancel, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    return AirlineGate(app, state, is_business=_business)
