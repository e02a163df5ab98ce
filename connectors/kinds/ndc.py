"""The NDC connector kind: IATA NDC 21.3 messages as XML over HTTP POST, shopping and orders.

    search          AirShoppingRQ   → AirShoppingRS   ``{endpoint}/ndc/AirShopping``
    price           OfferPriceRQ    → OfferPriceRS    ``/ndc/OfferPrice`` (a PRICE_CHANGED Warning: the previous total)
    create_order    OrderCreateRQ   → OrderViewRS     ``/ndc/OrderCreate`` (our client reference is a BookingRef whose
                                                      BookingEntity is our TravelAgency, ``JETBRIDGE``)
    find_order      OrderRetrieveRQ → OrderViewRS     ``/ndc/OrderRetrieve`` by that BookingRef (not found: None)
    retrieve_order  OrderRetrieveRQ → OrderViewRS     by Order/OrderID
    cancel_order    OrderCancelRQ   → OrderCancelRS   ``/ndc/OrderCancel``
    webhook         OrderChangeNotifRQ, the airline's own change, signed: `NdcConnector.parse_order_change`

The key goes as ``Authorization: Bearer``. Answers are parsed by a hardened parser: bodies over 5 MB are refused
before parsing, defusedxml forbids DTDs, entity declarations and external references, and every id reference is
resolved or the answer is rejected. An ``<Errors>`` answer (HTTP 200, as NDC does) is the airline saying no:
`AirlineRejected` for shopping; for orders the codes in `ORDER_ERRORS` map onto the order errors listed in
`connectors.orders`, and any other code is the operation's refusal (``OrderRefused`` for create and cancel).

Passengers go to the airline in the OrderCreateRQ and nowhere else: never logged, and the airline's error text
for a create is scrubbed of their names, dates, document numbers and contact details (`redactor`) before it
enters an exception's message.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

import defusedxml.ElementTree as SafeET
import httpx
from defusedxml import DefusedXmlException

from connectors.base import AirlineConnector, register_kind
from connectors.kinds import normalise as N
from connectors.kinds.boundary import MAPPING_ERRORS, api_key, guarded_call, guarded_search
from connectors.kinds.http_call import exchange
from connectors.orders import OrderChange, verify_signature
from jetbridge.airlines import Airline, ConnectorKind
from jetbridge.errors import (
    AirlineBadResponse,
    AirlineError,
    AirlineRejected,
    OfferExpired,
    OfferUnavailable,
    OrderNotFound,
    OrderRefused,
    PriceChanged,
    SeatsUnavailable,
)
from jetbridge.log import get_logger
from jetbridge.passengers import OrderParty
from schemas.models import Cabin, Offer, OrderState, OrderStatus, PricedOffer, SearchCriteria, Segment, Slice

__all__ = [
    "AGENCY_ID",
    "NDC_NS",
    "ORDER_ERRORS",
    "NdcConnector",
    "build_air_shopping_rq",
    "build_offer_price_rq",
    "build_order_cancel_rq",
    "build_order_create_rq",
    "build_order_retrieve_rq",
    "parse_air_shopping_rs",
    "parse_offer_price_rs",
    "parse_order_change_notif",
    "parse_order_view_rs",
    "redactor",
]

log = get_logger(__name__)

NDC_NS: Final = "http://www.iata.org/IATA/2015/EASD/00/IATA_OffersAndOrdersMessage"
AIR_SHOPPING_PATH: Final = "/ndc/AirShopping"
OFFER_PRICE_PATH: Final = "/ndc/OfferPrice"
ORDER_CREATE_PATH: Final = "/ndc/OrderCreate"
ORDER_RETRIEVE_PATH: Final = "/ndc/OrderRetrieve"
ORDER_CANCEL_PATH: Final = "/ndc/OrderCancel"
# Who we are to the airline: the Sender of our messages, and the BookingEntity of our own booking references.
AGENCY_ID: Final = "JETBRIDGE"
# PADIS codeset 9873, the cabin codes NDC uses in CabinTypeCode.
CABIN_CODES: Final[dict[Cabin, str]] = {
    Cabin.FIRST: "1",
    Cabin.BUSINESS: "2",
    Cabin.PREMIUM_ECONOMY: "4",
    Cabin.ECONOMY: "5",
}
_CABINS_BY_CODE: Final = {code: cabin for cabin, code in CABIN_CODES.items()}


def _q(tag: str) -> str:
    return f"{{{NDC_NS}}}{tag}"


def _path(*tags: str) -> str:
    return "/".join(_q(t) for t in tags)


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, _q(tag))
    if text is not None:
        element.text = text
    return element


def build_air_shopping_rq(criteria: SearchCriteria, *, airline: str, request_id: str) -> bytes:
    """An AirShoppingRQ for the criteria: one OriginDestCriteria per direction, one Pax per passenger."""
    root, request = _request("IATA_AirShoppingRQ", airline=airline, request_id=request_id)
    ods = _sub(_sub(request, "FlightRequest"), "FlightRequestOriginDestinationsCriteria")
    legs = [(criteria.origin, criteria.destination, criteria.departure_date)]
    if criteria.return_date is not None:
        legs.append((criteria.destination, criteria.origin, criteria.return_date))
    for n, (origin, destination, day) in enumerate(legs, start=1):
        od = _sub(ods, "OriginDestCriteria")
        dep = _sub(od, "OriginDepCriteria")
        _sub(dep, "Date", day.isoformat())
        _sub(dep, "IATA_LocationCode", origin)
        _sub(_sub(od, "DestArrivalCriteria"), "IATA_LocationCode", destination)
        _sub(od, "OriginDestID", f"OD{n}")
    paxs = _sub(request, "Paxs")
    ptcs = ["ADT"] * criteria.adults + ["CHD"] * criteria.children + ["INF"] * criteria.infants
    for n, ptc in enumerate(ptcs, start=1):
        pax = _sub(paxs, "Pax")
        _sub(pax, "PaxID", f"PAX{n}")
        _sub(pax, "PTC", ptc)
    _sub(_sub(_sub(request, "ResponseParameters"), "CurParameter"), "CurCode", criteria.currency)
    cabin = _sub(_sub(request, "ShoppingCriteria"), "CabinTypeCriteria")
    _sub(cabin, "CabinTypeCode", CABIN_CODES[criteria.cabin])
    return _serialise(root)


def _request(message: str, *, airline: str, request_id: str) -> tuple[ET.Element, ET.Element]:
    """A request's envelope (MessageDoc, Party: us to the airline, PayloadAttributes); its root and Request."""
    root = ET.Element(_q(message))
    _sub(_sub(root, "MessageDoc"), "RefVersionNumber", "21.3")
    party = _sub(root, "Party")
    agency = _sub(_sub(party, "Sender"), "TravelAgency")
    _sub(agency, "AgencyID", AGENCY_ID)
    _sub(agency, "Name", "Jetbridge")
    _sub(_sub(_sub(party, "Recipient"), "ORA"), "AirlineDesigCode", airline)
    payload = _sub(root, "PayloadAttributes")
    _sub(payload, "EchoTokenText", request_id[:64])
    _sub(payload, "Timestamp", datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))
    _sub(payload, "VersionNumber", "21.3")
    return root, _sub(root, "Request")


def _serialise(root: ET.Element) -> bytes:
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


def _text(parent: ET.Element, path: str, field: str) -> str:
    found = parent.find(path)
    if found is None or found.text is None or not found.text.strip():
        raise N.UntrustedValue(field, "missing")
    return found.text.strip()


@dataclass(frozen=True, slots=True)
class _NdcError:
    code: str
    text: str
    element: ET.Element


def _ndc_errors(root: ET.Element, redact: Callable[[str], str] | None = None) -> list[_NdcError]:
    # 17.2 nests <Error> in <Errors>; 21.3 puts <Error> straight under the root. Accept both.
    found = root.findall(_path("Errors", "Error")) + root.findall(_q("Error"))
    described: list[_NdcError] = []
    for error in found[:5]:
        code = N.clean_text(error.findtext(_q("Code")) or error.get("Code"), "Error.Code", 16) or "?"
        raw = error.findtext(_q("DescText")) or error.text
        text = N.clean_text(redact(raw) if redact is not None and raw else raw, "Error.DescText", 160) or ""
        described.append(_NdcError(code, text, error))
    return described


def _errors(root: ET.Element) -> list[str]:
    return [f"{e.code} {e.text}".strip() for e in _ndc_errors(root)]


def _document(body: bytes, *, airline: str, messages: tuple[str, ...]) -> ET.Element:
    """The answer's root element, one of ``messages``; `AirlineBadResponse` for anything else."""
    try:
        root: ET.Element = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise AirlineBadResponse(f"{airline}: XML refused ({type(exc).__name__})") from exc
    except ET.ParseError as exc:
        raise AirlineBadResponse(f"{airline}: not well-formed XML (line {exc.position[0]})") from exc
    if root.tag not in {_q(m) for m in messages}:
        raise AirlineBadResponse(f"{airline}: expected {' or '.join(messages)} in the NDC 21.3 namespace")
    return root


def parse_air_shopping_rs(body: bytes, *, airline: str, criteria: SearchCriteria) -> list[Offer]:
    """Offers in an AirShoppingRS; raises `AirlineRejected` on NDC errors, `AirlineBadResponse` on junk."""
    root = _document(body, airline=airline, messages=("IATA_AirShoppingRS",))
    errors = _errors(root)
    if errors:
        raise AirlineRejected(f"{airline}: NDC error {'; '.join(errors)}")
    response = root.find(_q("Response"))
    if response is None:
        raise AirlineBadResponse(f"{airline}: AirShoppingRS has neither Response nor Errors")
    data = response.find(_q("DataLists"))
    segments = _segments(data)
    journeys = _journeys(data, segments)
    brands = {
        _text(pc, _q("PriceClassID"), "PriceClassID"): pc.findtext(_q("Name"))
        for pc in (data.findall(_path("PriceClassList", "PriceClass")) if data is not None else [])
    }
    offers: list[Offer] = []
    elements = response.findall(_path("OffersGroup", "CarrierOffers", "Offer"))
    if len(elements) > N.MAX_OFFERS:
        log.warning("airline sent too many offers; keeping the first", sent=len(elements), kept=N.MAX_OFFERS)
    for element in elements[: N.MAX_OFFERS]:
        offers.append(_offer(element, airline=airline, criteria=criteria, journeys=journeys, brands=brands))
    return offers


def _segments(data: ET.Element | None) -> dict[str, Segment]:
    found: dict[str, Segment] = {}
    for seg in data.findall(_path("PaxSegmentList", "PaxSegment")) if data is not None else []:
        found[_text(seg, _q("PaxSegmentID"), "PaxSegmentID")] = N.make_segment(
            carrier_code=_text(seg, _path("MarketingCarrierInfo", "CarrierDesigCode"), "CarrierDesigCode"),
            number=_text(seg, _path("MarketingCarrierInfo", "MarketingCarrierFlightNumberText"), "FlightNumberText"),
            origin=_text(seg, _path("Dep", "IATA_LocationCode"), "Dep.IATA_LocationCode"),
            destination=_text(seg, _path("Arrival", "IATA_LocationCode"), "Arrival.IATA_LocationCode"),
            departs=_text(seg, _path("Dep", "AircraftScheduledDateTime"), "Dep.AircraftScheduledDateTime"),
            arrives=_text(seg, _path("Arrival", "AircraftScheduledDateTime"), "Arrival.AircraftScheduledDateTime"),
            aircraft=seg.findtext(_path("DatedOperatingLeg", "IATA_AircraftType", "IATA_AircraftTypeCode")),
        )
    return found


def _journeys(data: ET.Element | None, segments: dict[str, Segment]) -> dict[str, Slice]:
    found: dict[str, Slice] = {}
    for journey in data.findall(_path("PaxJourneyList", "PaxJourney")) if data is not None else []:
        refs = [(r.text or "").strip() for r in journey.findall(_q("PaxSegmentRefID"))]
        unknown = [r for r in refs if r not in segments]
        if unknown or not refs:
            raise N.UntrustedValue("PaxJourney.PaxSegmentRefID", "refers to no listed PaxSegment")
        found[_text(journey, _q("PaxJourneyID"), "PaxJourneyID")] = N.make_slice(
            [segments[r] for r in refs],
            N.iso_duration_minutes(_text(journey, _q("Duration"), "PaxJourney.Duration"), "PaxJourney.Duration"),
        )
    return found


def _offer(
    element: ET.Element,
    *,
    airline: str,
    criteria: SearchCriteria,
    journeys: dict[str, Slice],
    brands: dict[str, str | None],
) -> Offer:
    owner = N.carrier(_text(element, _q("OwnerCode"), "Offer.OwnerCode"), "Offer.OwnerCode")
    if owner != airline:
        raise N.UntrustedValue("Offer.OwnerCode", "offer owned by another airline")
    journey_refs = element.findall(_path("JourneyOverview", "JourneyPriceClass"))
    slices: list[Slice] = []
    brand: str | None = None
    for jpc in journey_refs:
        ref = _text(jpc, _q("PaxJourneyRefID"), "JourneyPriceClass.PaxJourneyRefID")
        if ref not in journeys:
            raise N.UntrustedValue("JourneyPriceClass.PaxJourneyRefID", "refers to no listed PaxJourney")
        slices.append(journeys[ref])
        brand_ref = (jpc.findtext(_q("PriceClassRefID")) or "").strip()
        if brand_ref and brand is None:
            if brand_ref not in brands:
                raise N.UntrustedValue("JourneyPriceClass.PriceClassRefID", "refers to no listed PriceClass")
            brand = brands[brand_ref]
    total = element.find(_path("TotalPrice", "TotalAmount"))
    if total is None:
        raise N.UntrustedValue("Offer.TotalPrice.TotalAmount", "missing")
    cabin_code = (element.findtext(".//" + _path("FareComponent", "CabinType", "CabinTypeCode")) or "").strip()
    return N.make_offer(
        airline=airline,
        offer_ref=_text(element, _q("OfferID"), "OfferID"),
        amount=N.money(total.text, "TotalAmount"),
        currency_code=total.get("CurCode"),
        # An airline that leaves the cabin out answers in the cabin asked for.
        cabin=_CABINS_BY_CODE.get(cabin_code, criteria.cabin),
        brand=brand,
        expires=N.utc_time(
            _text(element, _q("OfferExpirationTimeLimitDateTime"), "OfferExpirationTimeLimitDateTime"),
            "OfferExpirationTimeLimitDateTime",
        ),
        slices=slices,
    )


# ---- orders ----

# The airline's error codes for orders → our errors (connectors/orders.py). ORDER_NOT_FOUND is not here: it is an
# answer (find_order: None; retrieve_order, cancel_order: OrderNotFound), not a failure of the call.
ORDER_ERRORS: Final[dict[str, type[AirlineError]]] = {
    "OFFER_NOT_FOUND": OfferUnavailable,
    "OFFER_EXPIRED": OfferExpired,
    "SOLD_OUT": SeatsUnavailable,
    "PRICE_CHANGED": PriceChanged,
    "ORDER_FAILED": OrderRefused,
}
_NOT_FOUND: Final = "ORDER_NOT_FOUND"
# The airline's own change codes (OrderChangeNotifRQ) → OrderChange.change; any other code is "airline_change".
_CHANGES: Final = {"CANCELLATION": "airline_cancellation", "SCHEDULE_CHANGE": "schedule_change"}
_DOCUMENT_TYPES: Final = {"passport": "PT", "national_id": "NI"}
_MAX_PASSENGERS: Final = 9
_REASON_CHARS: Final = 160


def redactor(party: OrderParty) -> Callable[[str], str]:
    """Scrubs the party's personal data (names, birth dates, documents, email, phone) out of airline text."""
    values: set[str] = set()
    for person in party.passengers:
        values |= {person.given_name, person.family_name, person.date_of_birth.isoformat()}
        values.add(f"{person.given_name} {person.family_name}")
        if person.document is not None:
            values.add(person.document.number)
    values |= {party.contact.email, party.contact.phone, party.contact.phone.replace(" ", "")}
    # Longest first, so a full name goes as one; single characters would scrub everything and identify no one.
    kept = sorted((v for v in values if len(v) > 1), key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(v) for v in kept), re.IGNORECASE)

    def redact(text: str) -> str:
        return pattern.sub("<passenger data>", text)

    return redact


def build_offer_price_rq(offer_id: str, *, airline: str, request_id: str) -> bytes:
    """An OfferPriceRQ for one offer the airline sold us."""
    root, request = _request("IATA_OfferPriceRQ", airline=airline, request_id=request_id)
    selected = _sub(_sub(_sub(request, "PricedOffer"), "SelectedOfferList"), "SelectedOffer")
    _sub(selected, "OfferRefID", offer_id)
    _sub(selected, "OwnerCode", airline)
    return _serialise(root)


def _booking_ref(parent: ET.Element, reference: str) -> None:
    # Our own reference for the order: a BookingRef whose BookingEntity is us, the travel agency.
    ref = _sub(parent, "BookingRef")
    _sub(ref, "BookingID", reference)
    _sub(_sub(_sub(ref, "BookingEntity"), "TravelAgency"), "AgencyID", AGENCY_ID)


def build_order_create_rq(
    offer_id: str,
    party: OrderParty,
    *,
    airline: str,
    accepted_total: Decimal,
    currency: str,
    client_reference: str,
    request_id: str,
) -> bytes:
    """An OrderCreateRQ: the offer, each passenger (Individual, IdentityDoc when given), the contact, the total we
    accept to pay and our own reference. The body holds personal data: it is sent, never logged."""
    root, request = _request("IATA_OrderCreateRQ", airline=airline, request_id=request_id)
    create = _sub(request, "CreateOrder")
    selected = _sub(create, "SelectedOffer")
    _sub(selected, "OfferRefID", offer_id)
    _sub(selected, "OwnerCode", airline)
    _booking_ref(create, client_reference)
    data_lists = _sub(request, "DataLists")
    contact = _sub(_sub(data_lists, "ContactInfoList"), "ContactInfo")
    _sub(contact, "ContactInfoID", "CI1")
    _sub(_sub(contact, "EmailAddress"), "EmailAddressText", party.contact.email)
    _sub(_sub(contact, "Phone"), "PhoneNumber", party.contact.phone)
    pax_list = _sub(data_lists, "PaxList")
    for n, person in enumerate(party.passengers, start=1):
        pax = _sub(pax_list, "Pax")
        _sub(pax, "PaxID", f"PAX{n}")
        individual = _sub(pax, "Individual")
        _sub(individual, "Birthdate", person.date_of_birth.isoformat())
        _sub(individual, "GivenName", person.given_name)
        _sub(individual, "Surname", person.family_name)
        if person.document is not None:
            doc = _sub(pax, "IdentityDoc")
            _sub(doc, "IdentityDocID", person.document.number)
            _sub(doc, "IdentityDocTypeCode", _DOCUMENT_TYPES[person.document.kind])
            _sub(doc, "IssuingCountryCode", person.document.issuing_country)
            _sub(doc, "ExpiryDate", person.document.expires_on.isoformat())
        _sub(pax, "ContactInfoRefID", "CI1")
    payment = _sub(_sub(request, "PaymentFunctions"), "PaymentProcessingDetails")
    amount = _sub(payment, "Amount", f"{accepted_total:.2f}")
    amount.set("CurCode", currency)
    _sub(payment, "TypeCode", "CA")
    return _serialise(root)


def build_order_retrieve_rq(
    *, airline: str, request_id: str, order_id: str | None = None, client_reference: str | None = None
) -> bytes:
    """An OrderRetrieveRQ by the airline's order id, or by our own reference (a BookingRef of ours)."""
    if (order_id is None) == (client_reference is None):
        raise ValueError("retrieve by exactly one of order_id and client_reference")
    root, request = _request("IATA_OrderRetrieveRQ", airline=airline, request_id=request_id)
    criteria = _sub(request, "OrderFilterCriteria")
    if order_id is not None:
        order = _sub(criteria, "Order")
        _sub(order, "OrderID", order_id)
        _sub(order, "OwnerCode", airline)
    else:
        _booking_ref(criteria, client_reference or "")
    return _serialise(root)


def build_order_cancel_rq(order_id: str, *, airline: str, request_id: str) -> bytes:
    """An OrderCancelRQ for the whole order."""
    root, request = _request("IATA_OrderCancelRQ", airline=airline, request_id=request_id)
    order = _sub(request, "Order")
    _sub(order, "OrderID", order_id)
    _sub(order, "OwnerCode", airline)
    return _serialise(root)


def _raise_for_errors(
    airline: str,
    root: ET.Element,
    *,
    refusal: type[AirlineError],
    redact: Callable[[str], str] | None = None,
) -> bool:
    """Raise the order error the answer's ``<Errors>`` mean; True when it says the order does not exist."""
    errors = _ndc_errors(root, redact)
    if not errors:
        return False
    first = errors[0]
    code = first.code.upper()
    if code == _NOT_FOUND:
        return True
    said = "; ".join(f"{e.code} {e.text}".strip() for e in errors)
    error = ORDER_ERRORS.get(code, refusal)
    if error is PriceChanged:
        now = first.element.find(_q("CurrentTotalAmount"))
        if now is None:
            raise PriceChanged(f"{airline}: the price changed (NDC {said})")
        amount = N.money(now.text, "Error.CurrentTotalAmount")
        currency = N.currency(now.get("CurCode"), "Error.CurrentTotalAmount.CurCode")
        raise PriceChanged(
            f"{airline}: the price is now {amount:.2f} {currency} (NDC {said})",
            amount=f"{amount:.2f}",
            currency=currency,
        )
    raise error(f"{airline}: NDC error {said}")


def _flight_line(segment: Segment) -> str:
    return f"{segment.carrier}{segment.flight_number} {segment.origin}-{segment.destination} {segment.departure_local}"


def _passenger_count(count: int, field: str) -> int:
    if not 1 <= count <= _MAX_PASSENGERS:
        raise N.UntrustedValue(field, f"expected 1 to {_MAX_PASSENGERS} passengers")
    return count


def parse_offer_price_rs(body: bytes, *, airline: str) -> PricedOffer:
    """The priced offer in an OfferPriceRS; a PRICE_CHANGED Warning gives the previous total."""
    root = _document(body, airline=airline, messages=("IATA_OfferPriceRS",))
    _raise_for_errors(airline, root, refusal=AirlineRejected)
    response = root.find(_q("Response"))
    offer = response.find(_path("PricedOffer", "Offer")) if response is not None else None
    if response is None or offer is None:
        raise AirlineBadResponse(f"{airline}: OfferPriceRS has neither a PricedOffer nor Errors")
    data = response.find(_q("DataLists"))
    journeys = _journeys(data, _segments(data))
    owner = N.carrier(_text(offer, _q("OwnerCode"), "Offer.OwnerCode"), "Offer.OwnerCode")
    if owner != airline:
        raise N.UntrustedValue("Offer.OwnerCode", "offer owned by another airline")
    flights: list[str] = []
    for jpc in offer.findall(_path("JourneyOverview", "JourneyPriceClass")):
        ref = _text(jpc, _q("PaxJourneyRefID"), "JourneyPriceClass.PaxJourneyRefID")
        if ref not in journeys:
            raise N.UntrustedValue("JourneyPriceClass.PaxJourneyRefID", "refers to no listed PaxJourney")
        flights += [_flight_line(s) for s in journeys[ref].segments]
    total = offer.find(_path("TotalPrice", "TotalAmount"))
    if total is None:
        raise N.UntrustedValue("Offer.TotalPrice.TotalAmount", "missing")
    currency = N.currency(total.get("CurCode"), "Offer.TotalPrice.CurCode")
    pax_refs = {(r.text or "").strip() for r in offer.iter(_q("PaxRefID"))} - {""}
    listed = data.findall(_path("PaxList", "Pax")) if data is not None else []
    return PricedOffer(
        offer_id=N.offer_id(_text(offer, _q("OfferID"), "Offer.OfferID"), "Offer.OfferID"),
        total_amount=N.money(total.text, "Offer.TotalPrice.TotalAmount"),
        currency=currency,
        previous_amount=_previous_total(root, currency),
        expires_at=N.utc_time(
            _text(offer, _q("OfferExpirationTimeLimitDateTime"), "OfferExpirationTimeLimitDateTime"),
            "OfferExpirationTimeLimitDateTime",
        ),
        passenger_count=_passenger_count(len(pax_refs) or len(listed), "Offer.PaxRefID"),
        documents_required=(offer.findtext(_q("IdentityDocRequiredInd")) or "").strip().lower() == "true",
        flights=flights,
    )


def _previous_total(root: ET.Element, currency: str) -> Decimal | None:
    for warning in root.findall(_path("Warnings", "Warning")) + root.findall(_q("Warning")):
        if (warning.findtext(_q("Code")) or "").strip().upper() != "PRICE_CHANGED":
            continue
        previous = warning.find(_q("PreviousTotalAmount"))
        if previous is None:
            return None
        if N.currency(previous.get("CurCode") or currency, "Warning.PreviousTotalAmount.CurCode") != currency:
            raise N.UntrustedValue("Warning.PreviousTotalAmount", "in another currency than the offer")
        return N.money(previous.text, "Warning.PreviousTotalAmount")
    return None


# How an order's NDC status reads as ours: the order is OPENED until CLOSED; its items say what happened.
_CANCELLED_ITEMS: Final = frozenset({"CANCELLED"})
_CHANGED_ITEMS: Final = frozenset({"SCHEDULE_CHANGED", "CHANGED"})
_ACTIVE_ITEMS: Final = frozenset({"CONFIRMED", "ACTIVE", "TICKETED", "OPENED"})


def _status(order: ET.Element) -> OrderStatus:
    overall = (order.findtext(_q("StatusCode")) or "OPENED").strip().upper()
    items = [(i.findtext(_q("StatusCode")) or "").strip().upper() for i in order.findall(_q("OrderItem"))]
    if overall == "CLOSED" or (items and all(i in _CANCELLED_ITEMS for i in items)):
        return OrderStatus.CANCELLED
    if overall != "OPENED":
        raise N.UntrustedValue("Order.StatusCode", "not OPENED or CLOSED")
    known = _CANCELLED_ITEMS | _CHANGED_ITEMS | _ACTIVE_ITEMS
    if any(i not in known for i in items):
        raise N.UntrustedValue("OrderItem.StatusCode", "not a known item status")
    return OrderStatus.CHANGED if any(i in _CHANGED_ITEMS for i in items) else OrderStatus.CONFIRMED


def _order(parent: ET.Element, *, airline: str) -> OrderState:
    """The OrderState in an element holding DataLists and Order (OrderViewRS's Response, a notification's Request)."""
    order = parent.find(_q("Order"))
    if order is None:
        raise N.UntrustedValue("Order", "missing")
    owner = N.carrier(_text(order, _q("OwnerCode"), "Order.OwnerCode"), "Order.OwnerCode")
    if owner != airline:
        raise N.UntrustedValue("Order.OwnerCode", "order owned by another airline")
    data = parent.find(_q("DataLists"))
    journeys = _journeys(data, _segments(data))
    pax_ids = {
        _text(p, _q("PaxID"), "Pax.PaxID") for p in (data.findall(_path("PaxList", "Pax")) if data is not None else [])
    }
    flown: list[str] = []
    for service in order.findall(_path("OrderItem", "Service")):
        pax_ref = (service.findtext(_q("PaxRefID")) or "").strip()
        if pax_ref and pax_ref not in pax_ids:
            raise N.UntrustedValue("Service.PaxRefID", "refers to no listed Pax")
        for ref in service.findall(_path("ServiceAssociations", "PaxJourneyRefID")):
            journey = (ref.text or "").strip()
            if journey not in journeys:
                raise N.UntrustedValue("ServiceAssociations.PaxJourneyRefID", "refers to no listed PaxJourney")
            if journey not in flown:
                flown.append(journey)
    total = order.find(_path("TotalPrice", "TotalAmount"))
    if total is None:
        raise N.UntrustedValue("Order.TotalPrice.TotalAmount", "missing")
    created = order.findtext(_q("CreationDateTime"))
    created_at = N.utc_time(created, "Order.CreationDateTime") if created else None
    modified = order.findtext(_q("LastModifiedDateTime"))
    return OrderState(
        order_id=N.offer_id(_text(order, _q("OrderID"), "Order.OrderID"), "Order.OrderID"),
        airline=airline,
        status=_status(order),
        total_amount=N.money(total.text, "Order.TotalPrice.TotalAmount"),
        currency=N.currency(total.get("CurCode"), "Order.TotalPrice.CurCode"),
        passenger_count=_passenger_count(len(pax_ids), "PaxList.Pax"),
        flights=[_flight_line(s) for j in flown for s in journeys[j].segments],
        client_reference=_our_reference(order),
        created_at=created_at,
        updated_at=N.utc_time(modified, "Order.LastModifiedDateTime") if modified else created_at or datetime.now(UTC),
    )


def _our_reference(order: ET.Element) -> str | None:
    for ref in order.findall(_q("BookingRef")):
        if (ref.findtext(_path("BookingEntity", "TravelAgency", "AgencyID")) or "").strip() == AGENCY_ID:
            return N.clean_text(ref.findtext(_q("BookingID")), "BookingRef.BookingID", 128)
    return None


def parse_order_view_rs(
    body: bytes,
    *,
    airline: str,
    refusal: type[AirlineError] = AirlineRejected,
    redact: Callable[[str], str] | None = None,
) -> OrderState | None:
    """The order in an OrderViewRS (or OrderCancelRS); None when the airline answers ORDER_NOT_FOUND. Other
    ``<Errors>``: `ORDER_ERRORS`, else ``refusal``; ``redact`` scrubs the airline's error text."""
    root = _document(body, airline=airline, messages=("IATA_OrderViewRS", "IATA_OrderCancelRS"))
    if _raise_for_errors(airline, root, refusal=refusal, redact=redact):
        return None
    response = root.find(_q("Response"))
    if response is None:
        raise AirlineBadResponse(f"{airline}: the answer has neither Response nor Errors")
    return _order(response, airline=airline)


def parse_order_change_notif(body: bytes, *, airline: str) -> OrderChange:
    """The airline's own change in an OrderChangeNotifRQ (its signature is checked by the caller first);
    `AirlineBadResponse` when it cannot be read."""
    root = _document(body, airline=airline, messages=("IATA_OrderChangeNotifRQ",))
    try:
        request = root.find(_q("Request"))
        if request is None:
            raise N.UntrustedValue("Request", "missing")
        notice = request.find(_q("ChangeNotification"))
        code = (notice.findtext(_q("ChangeTypeCode")) if notice is not None else None) or ""
        when = notice.findtext(_q("ChangeDateTime")) if notice is not None else None
        reason = notice.findtext(_q("ReasonText")) if notice is not None else None
        return OrderChange(
            order=_order(request, airline=airline),
            change=_CHANGES.get(code.strip().upper(), "airline_change"),
            reason=N.clean_text(reason, "ChangeNotification.ReasonText", _REASON_CHARS),
            at=N.utc_time(when, "ChangeNotification.ChangeDateTime") if when else datetime.now(UTC),
        )
    except MAPPING_ERRORS as exc:
        # UntrustedValue names the field, never the value; anything else only by its type.
        what = str(exc) if isinstance(exc, N.UntrustedValue) else type(exc).__name__
        raise AirlineBadResponse(f"{airline}: OrderChangeNotif breaks the contract ({what[:160]})") from exc


class NdcConnector:
    """Shops and books with one NDC airline over the shared HTTP client (`connectors.orders.OrderConnector`,
    `connectors.orders.OrderChangeParser`)."""

    kind = "ndc"

    def __init__(self, airline: Airline, http: httpx.AsyncClient) -> None:
        self._airline = airline
        self._http = http
        self._base = airline.endpoint.rstrip("/")
        self._url = self._base + AIR_SHOPPING_PATH

    async def _post(self, path: str, content: bytes, *, timeout_s: float) -> bytes:
        reply = await exchange(
            self._http,
            self._airline.code,
            "POST",
            self._base + path,
            timeout_s=timeout_s,
            headers={
                "Authorization": f"Bearer {api_key(self._airline).get_secret_value()}",
                "Content-Type": "application/xml; charset=utf-8",
                "Accept": "application/xml",
            },
            content=content,
        )
        return reply.body

    async def search(self, criteria: SearchCriteria, *, request_id: str, timeout_s: float) -> list[Offer]:
        async def call() -> list[Offer]:
            body = build_air_shopping_rq(criteria, airline=self._airline.code, request_id=request_id)
            answer = await self._post(AIR_SHOPPING_PATH, body, timeout_s=timeout_s)
            return parse_air_shopping_rs(answer, airline=self._airline.code, criteria=criteria)

        return await guarded_search(self._airline, self.kind, request_id=request_id, timeout_s=timeout_s, search=call)

    async def price(self, offer_id: str, *, request_id: str, timeout_s: float) -> PricedOffer:
        code = self._airline.code

        async def call() -> PricedOffer:
            body = build_offer_price_rq(offer_id, airline=code, request_id=request_id)
            return parse_offer_price_rs(await self._post(OFFER_PRICE_PATH, body, timeout_s=timeout_s), airline=code)

        return await guarded_call(
            self._airline, self.kind, "price", request_id=request_id, timeout_s=timeout_s, call=call
        )

    async def create_order(
        self,
        offer_id: str,
        party: OrderParty,
        *,
        accepted_total: Decimal,
        currency: str,
        client_reference: str,
        request_id: str,
        timeout_s: float,
    ) -> OrderState:
        """Book the offer. A timeout or a dropped connection leaves the outcome unknown: the caller must
        ``find_order(client_reference)`` before trying again (the airline does not deduplicate)."""
        code = self._airline.code
        redact = redactor(party)

        async def call() -> OrderState | None:
            body = build_order_create_rq(
                offer_id,
                party,
                airline=code,
                accepted_total=accepted_total,
                currency=currency,
                client_reference=client_reference,
                request_id=request_id,
            )
            answer = await self._post(ORDER_CREATE_PATH, body, timeout_s=timeout_s)
            return parse_order_view_rs(answer, airline=code, refusal=OrderRefused, redact=redact)

        order = await guarded_call(
            self._airline, self.kind, "create_order", request_id=request_id, timeout_s=timeout_s, call=call
        )
        if order is None:
            raise OrderRefused(f"{code}: OrderCreate answered that the order does not exist")
        return order

    async def find_order(self, client_reference: str, *, request_id: str, timeout_s: float) -> OrderState | None:
        return await self._retrieve("find_order", request_id, timeout_s, client_reference=client_reference)

    async def retrieve_order(self, order_id: str, *, request_id: str, timeout_s: float) -> OrderState:
        order = await self._retrieve("retrieve_order", request_id, timeout_s, order_id=order_id)
        if order is None:
            raise OrderNotFound(f"{self._airline.code}: no order {order_id[:20]}")
        return order

    async def _retrieve(
        self,
        operation: str,
        request_id: str,
        timeout_s: float,
        *,
        order_id: str | None = None,
        client_reference: str | None = None,
    ) -> OrderState | None:
        code = self._airline.code

        async def call() -> OrderState | None:
            body = build_order_retrieve_rq(
                airline=code, request_id=request_id, order_id=order_id, client_reference=client_reference
            )
            return parse_order_view_rs(await self._post(ORDER_RETRIEVE_PATH, body, timeout_s=timeout_s), airline=code)

        return await guarded_call(
            self._airline, self.kind, operation, request_id=request_id, timeout_s=timeout_s, call=call
        )

    async def cancel_order(self, order_id: str, *, request_id: str, timeout_s: float) -> OrderState:
        code = self._airline.code

        async def call() -> OrderState | None:
            body = build_order_cancel_rq(order_id, airline=code, request_id=request_id)
            answer = await self._post(ORDER_CANCEL_PATH, body, timeout_s=timeout_s)
            return parse_order_view_rs(answer, airline=code, refusal=OrderRefused)

        order = await guarded_call(
            self._airline, self.kind, "cancel_order", request_id=request_id, timeout_s=timeout_s, call=call
        )
        if order is None:
            raise OrderNotFound(f"{code}: no order {order_id[:20]}")
        return order

    def parse_order_change(self, body: bytes, headers: Mapping[str, str]) -> OrderChange:
        """A change the airline pushed (OrderChangeNotifRQ): refused (`AirlineRejected`) unless signed with the
        airline's credential; `AirlineBadResponse` when it cannot be read."""
        code = self._airline.code
        verify_signature(code, body, headers, api_key(self._airline).get_secret_value())
        change = parse_order_change_notif(body, airline=code)
        log.info("airline changed an order", airline=code, order_id=change.order.order_id, change=change.change)
        return change

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client belongs to whoever built it."""


def _factory(airline: Airline, http: httpx.AsyncClient) -> AirlineConnector:
    return NdcConnector(airline, http)


register_kind(ConnectorKind.NDC, _factory)
