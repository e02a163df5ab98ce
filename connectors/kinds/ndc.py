"""The NDC connector kind: IATA NDC 21.3 AirShoppingRQ out, AirShoppingRS in (XML over HTTP POST).

Requests go to ``{endpoint}/ndc/AirShopping`` with the key as ``Authorization: Bearer``. The answer is
parsed by a hardened parser: bodies over 5 MB are refused before parsing, defusedxml forbids DTDs, entity
declarations and external references, and every id reference is resolved or the answer is rejected.
An ``<Errors>`` answer (HTTP 200, as NDC does) is the airline saying no: `AirlineRejected`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Final

import defusedxml.ElementTree as SafeET
import httpx
from defusedxml import DefusedXmlException

from connectors.base import AirlineConnector, register_kind
from connectors.kinds import normalise as N
from connectors.kinds.boundary import api_key, guarded_search
from connectors.kinds.http_call import exchange
from jetbridge.airlines import Airline, ConnectorKind
from jetbridge.errors import AirlineBadResponse, AirlineRejected
from jetbridge.log import get_logger
from schemas.models import Cabin, Offer, SearchCriteria, Segment, Slice

__all__ = ["NDC_NS", "NdcConnector", "build_air_shopping_rq", "parse_air_shopping_rs"]

log = get_logger(__name__)

NDC_NS: Final = "http://www.iata.org/IATA/2015/EASD/00/IATA_OffersAndOrdersMessage"
AIR_SHOPPING_PATH: Final = "/ndc/AirShopping"
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
    root = ET.Element(_q("IATA_AirShoppingRQ"))
    _sub(_sub(root, "MessageDoc"), "RefVersionNumber", "21.3")
    party = _sub(root, "Party")
    agency = _sub(_sub(party, "Sender"), "TravelAgency")
    _sub(agency, "AgencyID", "JETBRIDGE")
    _sub(agency, "Name", "Jetbridge")
    _sub(_sub(_sub(party, "Recipient"), "ORA"), "AirlineDesigCode", airline)
    payload = _sub(root, "PayloadAttributes")
    _sub(payload, "EchoTokenText", request_id[:64])
    _sub(payload, "Timestamp", datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))
    _sub(payload, "VersionNumber", "21.3")
    request = _sub(root, "Request")
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
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


def _text(parent: ET.Element, path: str, field: str) -> str:
    found = parent.find(path)
    if found is None or found.text is None or not found.text.strip():
        raise N.UntrustedValue(field, "missing")
    return found.text.strip()


def _errors(root: ET.Element) -> list[str]:
    # 17.2 nests <Error> in <Errors>; 21.3 puts <Error> straight under the root. Accept both.
    found = root.findall(_path("Errors", "Error")) + root.findall(_q("Error"))
    described: list[str] = []
    for error in found[:5]:
        code = N.clean_text(error.findtext(_q("Code")) or error.get("Code"), "Error.Code", 16) or "?"
        text = N.clean_text(error.findtext(_q("DescText")) or error.text, "Error.DescText", 160) or ""
        described.append(f"{code} {text}".strip())
    return described


def parse_air_shopping_rs(body: bytes, *, airline: str, criteria: SearchCriteria) -> list[Offer]:
    """Offers in an AirShoppingRS; raises `AirlineRejected` on NDC errors, `AirlineBadResponse` on junk."""
    try:
        root = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise AirlineBadResponse(f"{airline}: XML refused ({type(exc).__name__})") from exc
    except ET.ParseError as exc:
        raise AirlineBadResponse(f"{airline}: not well-formed XML (line {exc.position[0]})") from exc
    if root.tag != _q("IATA_AirShoppingRS"):
        raise AirlineBadResponse(f"{airline}: expected IATA_AirShoppingRS in the NDC 21.3 namespace")
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


class NdcConnector:
    """Shops one NDC airline over the shared HTTP client."""

    kind = "ndc"

    def __init__(self, airline: Airline, http: httpx.AsyncClient) -> None:
        self._airline = airline
        self._http = http
        self._url = airline.endpoint.rstrip("/") + AIR_SHOPPING_PATH

    async def search(self, criteria: SearchCriteria, *, request_id: str, timeout_s: float) -> list[Offer]:
        async def call() -> list[Offer]:
            reply = await exchange(
                self._http,
                self._airline.code,
                "POST",
                self._url,
                timeout_s=timeout_s,
                headers={
                    "Authorization": f"Bearer {api_key(self._airline).get_secret_value()}",
                    "Content-Type": "application/xml; charset=utf-8",
                    "Accept": "application/xml",
                },
                content=build_air_shopping_rq(criteria, airline=self._airline.code, request_id=request_id),
            )
            return parse_air_shopping_rs(reply.body, airline=self._airline.code, criteria=criteria)

        return await guarded_search(self._airline, self.kind, request_id=request_id, timeout_s=timeout_s, search=call)

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client belongs to whoever built it."""


def _factory(airline: Airline, http: httpx.AsyncClient) -> AirlineConnector:
    return NdcConnector(airline, http)


register_kind(ConnectorKind.NDC, _factory)
