"""The NDC connector against httpx.MockTransport: request shape, parsing, hardening and error mapping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime
from decimal import Decimal

import defusedxml.ElementTree as SafeET
import httpx
import pytest

from connectors.kinds.boundary import CANCEL_SLACK_S
from connectors.kinds.http_call import MAX_BODY_BYTES
from connectors.kinds.ndc import NDC_NS, NdcConnector, build_air_shopping_rq, parse_air_shopping_rs
from jetbridge.airlines import Airline
from jetbridge.errors import (
    AirlineBadResponse,
    AirlineError,
    AirlineRejected,
    AirlineTimeout,
    AirlineUnavailable,
)
from jetbridge.http import build_http_client
from schemas.models import Cabin, Offer, SearchCriteria

BA = Airline(code="BA", name="British Airways", kind="ndc", endpoint="http://ba.test", credential="JB_TEST_KEY_BA")
CRITERIA = SearchCriteria(
    origin="LHR",
    destination="JFK",
    departure_date=date(2026, 12, 14),
    return_date=date(2026, 12, 21),
    adults=2,
    children=1,
    infants=1,
    cabin=Cabin.BUSINESS,
    currency="GBP",
)
N = f"{{{NDC_NS}}}"

GOOD_RS = f"""<?xml version="1.0" encoding="UTF-8"?>
<IATA_AirShoppingRS xmlns="{NDC_NS}">
  <PayloadAttributes><EchoTokenText>req-1</EchoTokenText><VersionNumber>21.3</VersionNumber></PayloadAttributes>
  <Response>
    <DataLists>
      <PaxList><Pax><PaxID>PAX1</PaxID><PTC>ADT</PTC></Pax></PaxList>
      <PaxJourneyList>
        <PaxJourney><PaxJourneyID>PJ1</PaxJourneyID><Duration>PT7H55M</Duration>
          <PaxSegmentRefID>SEG1</PaxSegmentRefID></PaxJourney>
        <PaxJourney><PaxJourneyID>PJ2</PaxJourneyID><Duration>PT6H50M</Duration>
          <PaxSegmentRefID>SEG2</PaxSegmentRefID></PaxJourney>
      </PaxJourneyList>
      <PaxSegmentList>
        <PaxSegment><PaxSegmentID>SEG1</PaxSegmentID>
          <Dep><IATA_LocationCode>LHR</IATA_LocationCode>
            <AircraftScheduledDateTime>2026-12-14T18:25:00</AircraftScheduledDateTime></Dep>
          <Arrival><IATA_LocationCode>JFK</IATA_LocationCode>
            <AircraftScheduledDateTime>2026-12-14T21:20:00</AircraftScheduledDateTime></Arrival>
          <MarketingCarrierInfo><CarrierDesigCode>BA</CarrierDesigCode>
            <MarketingCarrierFlightNumberText>0117</MarketingCarrierFlightNumberText></MarketingCarrierInfo>
          <DatedOperatingLeg><IATA_AircraftType><IATA_AircraftTypeCode>789</IATA_AircraftTypeCode>
            </IATA_AircraftType></DatedOperatingLeg>
        </PaxSegment>
        <PaxSegment><PaxSegmentID>SEG2</PaxSegmentID>
          <Dep><IATA_LocationCode>JFK</IATA_LocationCode>
            <AircraftScheduledDateTime>2026-12-21T19:00:00</AircraftScheduledDateTime></Dep>
          <Arrival><IATA_LocationCode>LHR</IATA_LocationCode>
            <AircraftScheduledDateTime>2026-12-22T06:50:00</AircraftScheduledDateTime></Arrival>
          <MarketingCarrierInfo><CarrierDesigCode>BA</CarrierDesigCode>
            <MarketingCarrierFlightNumberText>112</MarketingCarrierFlightNumberText></MarketingCarrierInfo>
        </PaxSegment>
      </PaxSegmentList>
      <PriceClassList>
        <PriceClass><PriceClassID>PC1</PriceClassID><Name>Club Flex</Name></PriceClass>
      </PriceClassList>
    </DataLists>
    <OffersGroup><CarrierOffers>
      <Offer>
        <OfferID>BA-OFFER-1</OfferID>
        <OwnerCode>BA</OwnerCode>
        <OfferExpirationTimeLimitDateTime>2026-12-01T10:30:00Z</OfferExpirationTimeLimitDateTime>
        <JourneyOverview>
          <JourneyPriceClass><PaxJourneyRefID>PJ1</PaxJourneyRefID><PriceClassRefID>PC1</PriceClassRefID>
          </JourneyPriceClass>
          <JourneyPriceClass><PaxJourneyRefID>PJ2</PaxJourneyRefID><PriceClassRefID>PC1</PriceClassRefID>
          </JourneyPriceClass>
        </JourneyOverview>
        <OfferItem><OfferItemID>I1</OfferItemID>
          <FareDetail><PaxRefID>PAX1</PaxRefID>
            <FareComponent><PaxSegmentRefID>SEG1</PaxSegmentRefID>
              <CabinType><CabinTypeCode>2</CabinTypeCode><CabinTypeName>BUSINESS</CabinTypeName></CabinType>
            </FareComponent>
          </FareDetail>
        </OfferItem>
        <TotalPrice><TotalAmount CurCode="GBP">1234.5</TotalAmount></TotalPrice>
      </Offer>
    </CarrierOffers></OffersGroup>
  </Response>
</IATA_AirShoppingRS>"""

Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


def xml_answer(body: str | bytes, status: int = 200) -> Handler:
    async def handler(_: httpx.Request) -> httpx.Response:
        content = body.encode() if isinstance(body, str) else body
        return httpx.Response(status, content=content, headers={"content-type": "application/xml"})

    return handler


async def search(handler: Handler, *, timeout_s: float = 2.0) -> list[Offer]:
    async with build_http_client(transport=httpx.MockTransport(handler)) as http:
        connector = NdcConnector(BA, http)
        try:
            return await connector.search(CRITERIA, request_id="req-1", timeout_s=timeout_s)
        finally:
            await connector.aclose()


def test_air_shopping_rq_carries_every_criterion() -> None:
    root = SafeET.fromstring(build_air_shopping_rq(CRITERIA, airline="BA", request_id="req-1"))
    assert root.tag == f"{N}IATA_AirShoppingRQ"
    ods = root.findall(f".//{N}OriginDestCriteria")
    assert [
        (
            od.findtext(f"{N}OriginDepCriteria/{N}IATA_LocationCode"),
            od.findtext(f"{N}OriginDepCriteria/{N}Date"),
        )
        for od in ods
    ] == [("LHR", "2026-12-14"), ("JFK", "2026-12-21")]
    assert [p.text for p in root.iter(f"{N}PTC")] == ["ADT", "ADT", "CHD", "INF"]
    assert root.findtext(f".//{N}CabinTypeCriteria/{N}CabinTypeCode") == "2"
    assert root.findtext(f".//{N}CurParameter/{N}CurCode") == "GBP"
    assert root.findtext(f".//{N}EchoTokenText") == "req-1"
    assert root.findtext(f".//{N}Recipient/{N}ORA/{N}AirlineDesigCode") == "BA"


async def test_good_answer_becomes_normalised_offers() -> None:
    (offer,) = await search(xml_answer(GOOD_RS))
    assert offer.offer_id == "BA-OFFER-1"
    assert offer.airline == "BA"
    assert offer.total_amount == Decimal("1234.50")
    assert offer.currency == "GBP"
    assert offer.cabin is Cabin.BUSINESS
    assert offer.fare_brand == "Club Flex"
    assert offer.expires_at == datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    outbound, inbound = offer.slices
    assert (outbound.origin, outbound.destination, outbound.duration_minutes) == ("LHR", "JFK", 475)
    assert (inbound.origin, inbound.destination) == ("JFK", "LHR")
    segment = outbound.segments[0]
    assert (segment.carrier, segment.flight_number) == ("BA", "117")
    assert (segment.departure_local, segment.arrival_local) == ("2026-12-14T18:25", "2026-12-14T21:20")
    assert segment.aircraft == "789"
    assert inbound.segments[0].aircraft is None


async def test_request_is_posted_to_air_shopping_with_the_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JB_TEST_KEY_BA", "s3cret")
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=GOOD_RS.encode())

    await search(handler)
    (request,) = seen
    assert (request.method, str(request.url)) == ("POST", "http://ba.test/ndc/AirShopping")
    assert request.headers["authorization"] == "Bearer s3cret"
    assert SafeET.fromstring(request.content).tag == f"{N}IATA_AirShoppingRQ"


async def test_a_development_key_is_sent_when_the_credential_is_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("JB_TEST_KEY_BA", raising=False)
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(200, content=GOOD_RS.encode())

    await search(handler)
    assert seen == ["Bearer dev-key-ba"]


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_server_errors_and_throttling_are_unavailable(status: int) -> None:
    with pytest.raises(AirlineUnavailable):
        await search(xml_answer("oops", status))


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_client_errors_are_rejected(status: int) -> None:
    with pytest.raises(AirlineRejected):
        await search(xml_answer("no", status))


async def test_ndc_errors_answer_is_rejected_with_the_airlines_code() -> None:
    body = f"""<IATA_AirShoppingRS xmlns="{NDC_NS}"><Errors><Error><Code>304</Code>
        <DescText>origin QQQ is not a known IATA airport code</DescText></Error></Errors>
        </IATA_AirShoppingRS>"""
    with pytest.raises(AirlineRejected, match="304"):
        await search(xml_answer(body))


async def test_21_3_style_error_straight_under_the_root_is_rejected_too() -> None:
    body = f'<IATA_AirShoppingRS xmlns="{NDC_NS}"><Error><Code>911</Code></Error></IATA_AirShoppingRS>'
    with pytest.raises(AirlineRejected, match="911"):
        await search(xml_answer(body))


async def test_truncated_xml_is_a_bad_response() -> None:
    with pytest.raises(AirlineBadResponse):
        await search(xml_answer(GOOD_RS[: len(GOOD_RS) // 2]))


async def test_a_doctype_with_an_external_entity_is_refused_before_it_is_resolved() -> None:
    body = (
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        f'<IATA_AirShoppingRS xmlns="{NDC_NS}"><Errors><Error><Code>&xxe;</Code></Error></Errors>'
        "</IATA_AirShoppingRS>"
    )
    with pytest.raises(AirlineBadResponse, match="refused"):
        await search(xml_answer(body))


async def test_an_entity_expansion_bomb_is_refused() -> None:
    body = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        f'<IATA_AirShoppingRS xmlns="{NDC_NS}"><Response>&lol2;</Response></IATA_AirShoppingRS>'
    )
    with pytest.raises(AirlineBadResponse):
        await search(xml_answer(body))


async def test_a_body_over_five_megabytes_is_refused() -> None:
    with pytest.raises(AirlineBadResponse, match="cap"):
        await search(xml_answer(b"<" + b"a" * (MAX_BODY_BYTES + 1)))


async def test_a_streamed_body_over_the_cap_is_refused_without_a_length() -> None:
    async def chunks() -> object:
        for _ in range(6):
            yield b"x" * 1024 * 1024

    async def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks())  # type: ignore[arg-type]

    with pytest.raises(AirlineBadResponse, match="cap"):
        await search(handler)


async def test_a_reference_to_an_unlisted_journey_is_a_bad_response() -> None:
    with pytest.raises(AirlineBadResponse):
        await search(xml_answer(GOOD_RS.replace("<PaxJourneyRefID>PJ2<", "<PaxJourneyRefID>PJ9<")))


async def test_an_invalid_airport_code_from_the_airline_is_a_bad_response() -> None:
    with pytest.raises(AirlineBadResponse, match="airport"):
        await search(xml_answer(GOOD_RS.replace("<IATA_LocationCode>JFK<", "<IATA_LocationCode>J&lt;K<", 1)))


async def test_an_offer_owned_by_another_airline_is_a_bad_response() -> None:
    with pytest.raises(AirlineBadResponse, match="OwnerCode"):
        await search(xml_answer(GOOD_RS.replace("<OwnerCode>BA<", "<OwnerCode>AA<")))


async def test_a_negative_price_is_a_bad_response() -> None:
    with pytest.raises(AirlineBadResponse, match="TotalAmount"):
        await search(xml_answer(GOOD_RS.replace(">1234.5<", ">-1<")))


async def test_a_foreign_root_element_is_a_bad_response() -> None:
    with pytest.raises(AirlineBadResponse, match="AirShoppingRS"):
        await search(xml_answer("<html><body>maintenance</body></html>"))


async def test_an_httpx_timeout_is_an_airline_timeout() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(AirlineTimeout):
        await search(handler)


async def test_an_answer_that_never_comes_times_out_within_the_budget() -> None:
    async def handler(_: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    started = time.perf_counter()
    with pytest.raises(AirlineTimeout):
        await search(handler, timeout_s=0.3)
    # MockTransport has no timeouts of its own, so this is the backstop: the budget plus its slack.
    assert time.perf_counter() - started < 0.3 + CANCEL_SLACK_S + 0.25


async def test_a_refused_connection_is_unavailable() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(AirlineUnavailable):
        await search(handler)


async def test_an_unexpected_failure_still_leaves_as_an_airline_error() -> None:
    async def handler(_: httpx.Request) -> httpx.Response:
        raise RuntimeError("bug in a transport")

    with pytest.raises(AirlineError) as caught:
        await search(handler)
    assert type(caught.value) is AirlineError


def test_parser_accepts_what_the_simulator_renders() -> None:
    from infra.simulators.ndc import render_offers
    from infra.simulators.schedule import Schedule, ShopQuery

    query = ShopQuery(
        airline="BA", origin="LHR", destination="JFK", departure_date=date(2026, 12, 14), adults=2, children=1
    )
    offers = Schedule().offers(query, now=datetime(2026, 11, 1, tzinfo=UTC))
    parsed = parse_air_shopping_rs(render_offers(query, offers), airline="BA", criteria=CRITERIA)
    assert [(o.offer_id, o.total_amount, o.fare_brand) for o in parsed] == [
        (o.offer_id, o.total, o.brand) for o in offers
    ]
