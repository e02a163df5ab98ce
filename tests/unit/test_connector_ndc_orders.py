"""The NDC connector's order side: message builders, parsers, error mapping, webhooks; against httpx.MockTransport
and the NDC simulator in memory (httpx.ASGITransport)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import defusedxml.ElementTree as SafeET
import httpx
import pytest
from structlog.testing import capture_logs

from connectors.kinds.ndc import (
    NDC_NS,
    NdcConnector,
    build_offer_price_rq,
    build_order_cancel_rq,
    build_order_create_rq,
    build_order_retrieve_rq,
    parse_offer_price_rs,
    parse_order_change_notif,
    parse_order_view_rs,
)
from connectors.orders import OrderChangeParser, sign_body
from infra.simulators import ndc as sim
from infra.simulators.faults import AirlineState, FaultConfig
from infra.simulators.schedule import Schedule
from jetbridge.airlines import Airline
from jetbridge.errors import (
    AirlineBadResponse,
    AirlineRejected,
    AirlineTimeout,
    AirlineUnavailable,
    OfferExpired,
    OfferUnavailable,
    OrderNotFound,
    OrderRefused,
    PriceChanged,
    SeatsUnavailable,
)
from jetbridge.http import build_http_client
from jetbridge.passengers import Contact, OrderParty, Passenger, TravelDocument
from schemas.models import Cabin, OrderStatus, SearchCriteria

BA = Airline(code="BA", name="British Airways", kind="ndc", endpoint="http://ba.test", credential="JB_TEST_KEY_BA")
N = f"{{{NDC_NS}}}"
PARTY = OrderParty(
    passengers=[
        Passenger(
            given_name="Amelia",
            family_name="Quixote",
            date_of_birth=date(1984, 3, 9),
            document=TravelDocument(number="P1234567", issuing_country="GB", expires_on=date(2031, 1, 31)),
        ),
        Passenger(given_name="Bram", family_name="Quixote", date_of_birth=date(2016, 7, 1)),
    ],
    contact=Contact(email="amelia@example.org", phone="+44 20 7946 0018"),
)
PERSONAL = ("Amelia", "Quixote", "Bram", "1984-03-09", "2016-07-01", "P1234567", "amelia@example.org", "7946")

Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


def answer(body: str | bytes, status: int = 200) -> Handler:
    async def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body.encode() if isinstance(body, str) else body)

    return handler


async def connector_for(handler: Handler) -> AsyncIterator[NdcConnector]:
    async with build_http_client(transport=httpx.MockTransport(handler)) as http:
        yield NdcConnector(BA, http)


async def call(handler: Handler, operation: str, *, timeout_s: float = 2.0) -> object:
    async for connector in connector_for(handler):
        if operation == "price":
            return await connector.price("BAOFFER1", request_id="r1", timeout_s=timeout_s)
        if operation == "create":
            return await connector.create_order(
                "BAOFFER1",
                PARTY,
                accepted_total=Decimal("1200.50"),
                currency="USD",
                client_reference="idem-1",
                request_id="r1",
                timeout_s=timeout_s,
            )
        if operation == "find":
            return await connector.find_order("idem-1", request_id="r1", timeout_s=timeout_s)
        if operation == "retrieve":
            return await connector.retrieve_order("ABC123", request_id="r1", timeout_s=timeout_s)
        if operation == "cancel":
            return await connector.cancel_order("ABC123", request_id="r1", timeout_s=timeout_s)
    raise AssertionError(operation)


def errors_rs(message: str, code: str, text: str = "no", extra: str = "") -> str:
    return f"""<?xml version="1.0"?><{message} xmlns="{NDC_NS}"><Errors><Error><Code>{code}</Code>
      <DescText>{text}</DescText>{extra}</Error></Errors></{message}>"""


PRICE_RS = f"""<?xml version="1.0"?>
<IATA_OfferPriceRS xmlns="{NDC_NS}">
  <Response>
    <DataLists>
      <PaxList><Pax><PaxID>PAX1</PaxID></Pax><Pax><PaxID>PAX2</PaxID></Pax></PaxList>
      <PaxJourneyList><PaxJourney><PaxJourneyID>PJ1</PaxJourneyID><Duration>PT7H55M</Duration>
        <PaxSegmentRefID>SEG1</PaxSegmentRefID></PaxJourney></PaxJourneyList>
      <PaxSegmentList><PaxSegment><PaxSegmentID>SEG1</PaxSegmentID>
        <Dep><IATA_LocationCode>LHR</IATA_LocationCode>
          <AircraftScheduledDateTime>2026-12-01T08:30:00</AircraftScheduledDateTime></Dep>
        <Arrival><IATA_LocationCode>JFK</IATA_LocationCode>
          <AircraftScheduledDateTime>2026-12-01T11:25:00</AircraftScheduledDateTime></Arrival>
        <MarketingCarrierInfo><CarrierDesigCode>BA</CarrierDesigCode>
          <MarketingCarrierFlightNumberText>0117</MarketingCarrierFlightNumberText></MarketingCarrierInfo>
      </PaxSegment></PaxSegmentList>
    </DataLists>
    <PricedOffer><Offer>
      <OfferID>BAOFFER1</OfferID><OwnerCode>BA</OwnerCode>
      <OfferExpirationTimeLimitDateTime>2026-11-20T10:00:00Z</OfferExpirationTimeLimitDateTime>
      <JourneyOverview><JourneyPriceClass><PaxJourneyRefID>PJ1</PaxJourneyRefID></JourneyPriceClass></JourneyOverview>
      <IdentityDocRequiredInd>true</IdentityDocRequiredInd>
      <OfferItem><OfferItemID>BAOFFER1-1</OfferItemID><FareDetail><PaxRefID>PAX1</PaxRefID><PaxRefID>PAX2</PaxRefID>
        </FareDetail><Price><TotalAmount CurCode="USD">1320.55</TotalAmount></Price></OfferItem>
      <TotalPrice><TotalAmount CurCode="USD">1320.55</TotalAmount></TotalPrice>
    </Offer></PricedOffer>
  </Response>
  WARNINGS
</IATA_OfferPriceRS>"""
PRICE_WARNING = """<Warnings><Warning><Code>PRICE_CHANGED</Code><DescText>was 1200.50</DescText>
  <PreviousTotalAmount CurCode="USD">1200.50</PreviousTotalAmount></Warning></Warnings>"""


def order_rs(
    *,
    message: str = "IATA_OrderViewRS",
    status: str = "OPENED",
    item: str = "CONFIRMED",
    owner: str = "BA",
    journey_ref: str = "PJ1",
    reference: str = "idem-1",
) -> str:
    body = order_body(status, item, owner, journey_ref, reference)
    return f"""<?xml version="1.0"?><{message} xmlns="{NDC_NS}"><Response>{body}</Response></{message}>"""


def order_body(status: str, item: str, owner: str, journey_ref: str, reference: str) -> str:
    return f"""
    <DataLists>
      <PaxList><Pax><PaxID>PAX1</PaxID><Individual><GivenName>Amelia</GivenName><Surname>Quixote</Surname>
        </Individual></Pax><Pax><PaxID>PAX2</PaxID></Pax></PaxList>
      <PaxJourneyList><PaxJourney><PaxJourneyID>PJ1</PaxJourneyID><Duration>PT7H55M</Duration>
        <PaxSegmentRefID>SEG1</PaxSegmentRefID></PaxJourney></PaxJourneyList>
      <PaxSegmentList><PaxSegment><PaxSegmentID>SEG1</PaxSegmentID>
        <Dep><IATA_LocationCode>LHR</IATA_LocationCode>
          <AircraftScheduledDateTime>2026-12-01T08:30:00</AircraftScheduledDateTime></Dep>
        <Arrival><IATA_LocationCode>JFK</IATA_LocationCode>
          <AircraftScheduledDateTime>2026-12-01T11:25:00</AircraftScheduledDateTime></Arrival>
        <MarketingCarrierInfo><CarrierDesigCode>BA</CarrierDesigCode>
          <MarketingCarrierFlightNumberText>117</MarketingCarrierFlightNumberText></MarketingCarrierInfo>
      </PaxSegment></PaxSegmentList>
    </DataLists>
    <Order>
      <OrderID>ABC123</OrderID><OwnerCode>{owner}</OwnerCode><StatusCode>{status}</StatusCode>
      <BookingRef><BookingID>ABC123</BookingID><BookingEntity><Carrier><AirlineDesigCode>BA</AirlineDesigCode>
        </Carrier></BookingEntity></BookingRef>
      <BookingRef><BookingID>{reference}</BookingID><BookingEntity><TravelAgency><AgencyID>JETBRIDGE</AgencyID>
        </TravelAgency></BookingEntity></BookingRef>
      <CreationDateTime>2026-11-20T09:00:00.123Z</CreationDateTime>
      <LastModifiedDateTime>2026-11-20T09:05:00Z</LastModifiedDateTime>
      <OrderItem><OrderItemID>ABC123-1</OrderItemID><StatusCode>{item}</StatusCode>
        <Service><ServiceID>S1</ServiceID><PaxRefID>PAX1</PaxRefID>
          <ServiceAssociations><PaxJourneyRefID>{journey_ref}</PaxJourneyRefID></ServiceAssociations></Service>
        <Service><ServiceID>S2</ServiceID><PaxRefID>PAX2</PaxRefID>
          <ServiceAssociations><PaxJourneyRefID>{journey_ref}</PaxJourneyRefID></ServiceAssociations></Service>
      </OrderItem>
      <TotalPrice><TotalAmount CurCode="USD">1320.55</TotalAmount></TotalPrice>
    </Order>"""


def notif(change: str = "SCHEDULE_CHANGE", reason: str = "Aircraft change", item: str = "SCHEDULE_CHANGED") -> bytes:
    return f"""<?xml version="1.0"?><IATA_OrderChangeNotifRQ xmlns="{NDC_NS}"><Request>
      <ChangeNotification><ChangeTypeCode>{change}</ChangeTypeCode><ReasonText>{reason}</ReasonText>
        <ChangeDateTime>2026-11-21T07:00:00Z</ChangeDateTime></ChangeNotification>
      {order_body("OPENED", item, "BA", "PJ1", "idem-1")}</Request></IATA_OrderChangeNotifRQ>""".encode()


# ---- builders ----


def test_offer_price_rq_selects_the_offer_of_the_airline() -> None:
    root = SafeET.fromstring(build_offer_price_rq("BAOFFER1", airline="BA", request_id="r1"))
    assert root.tag == f"{N}IATA_OfferPriceRQ"
    selected = root.find(f"{N}Request/{N}PricedOffer/{N}SelectedOfferList/{N}SelectedOffer")
    assert selected is not None
    assert (selected.findtext(f"{N}OfferRefID"), selected.findtext(f"{N}OwnerCode")) == ("BAOFFER1", "BA")
    assert root.findtext(f"{N}PayloadAttributes/{N}EchoTokenText") == "r1"
    assert root.findtext(f"{N}Party/{N}Sender/{N}TravelAgency/{N}AgencyID") == "JETBRIDGE"


def test_order_create_rq_carries_passengers_contact_total_and_our_reference() -> None:
    body = build_order_create_rq(
        "BAOFFER1",
        PARTY,
        airline="BA",
        accepted_total=Decimal("1200.5"),
        currency="USD",
        client_reference="idem-1",
        request_id="r1",
    )
    root = SafeET.fromstring(body)
    assert root.tag == f"{N}IATA_OrderCreateRQ"
    create = root.find(f"{N}Request/{N}CreateOrder")
    assert create is not None
    assert create.findtext(f"{N}SelectedOffer/{N}OfferRefID") == "BAOFFER1"
    assert create.findtext(f"{N}BookingRef/{N}BookingID") == "idem-1"
    assert create.findtext(f"{N}BookingRef/{N}BookingEntity/{N}TravelAgency/{N}AgencyID") == "JETBRIDGE"
    paxs = root.findall(f"{N}Request/{N}DataLists/{N}PaxList/{N}Pax")
    assert [(p.findtext(f"{N}Individual/{N}GivenName"), p.findtext(f"{N}Individual/{N}Surname")) for p in paxs] == [
        ("Amelia", "Quixote"),
        ("Bram", "Quixote"),
    ]
    assert [p.findtext(f"{N}Individual/{N}Birthdate") for p in paxs] == ["1984-03-09", "2016-07-01"]
    doc = paxs[0].find(f"{N}IdentityDoc")
    assert doc is not None
    assert [doc.findtext(f"{N}{t}") for t in ("IdentityDocID", "IdentityDocTypeCode", "IssuingCountryCode")] == [
        "P1234567",
        "PT",
        "GB",
    ]
    assert doc.findtext(f"{N}ExpiryDate") == "2031-01-31"
    assert paxs[1].find(f"{N}IdentityDoc") is None
    contact = root.find(f"{N}Request/{N}DataLists/{N}ContactInfoList/{N}ContactInfo")
    assert contact is not None
    assert contact.findtext(f"{N}EmailAddress/{N}EmailAddressText") == "amelia@example.org"
    assert contact.findtext(f"{N}Phone/{N}PhoneNumber") == "+44 20 7946 0018"
    amount = root.find(f"{N}Request/{N}PaymentFunctions/{N}PaymentProcessingDetails/{N}Amount")
    assert amount is not None
    assert (amount.text, amount.get("CurCode")) == ("1200.50", "USD")


def test_order_retrieve_rq_by_order_id_or_by_our_reference_but_not_both() -> None:
    by_id = SafeET.fromstring(build_order_retrieve_rq(airline="BA", request_id="r", order_id="ABC123"))
    assert by_id.findtext(f"{N}Request/{N}OrderFilterCriteria/{N}Order/{N}OrderID") == "ABC123"
    by_ref = SafeET.fromstring(build_order_retrieve_rq(airline="BA", request_id="r", client_reference="idem-1"))
    assert by_ref.findtext(f"{N}Request/{N}OrderFilterCriteria/{N}BookingRef/{N}BookingID") == "idem-1"
    assert by_ref.find(f"{N}Request/{N}OrderFilterCriteria/{N}Order") is None
    with pytest.raises(ValueError, match="exactly one"):
        build_order_retrieve_rq(airline="BA", request_id="r", order_id="A", client_reference="b")
    with pytest.raises(ValueError, match="exactly one"):
        build_order_retrieve_rq(airline="BA", request_id="r")


def test_order_cancel_rq_names_the_order() -> None:
    root = SafeET.fromstring(build_order_cancel_rq("ABC123", airline="BA", request_id="r"))
    assert root.tag == f"{N}IATA_OrderCancelRQ"
    assert root.findtext(f"{N}Request/{N}Order/{N}OrderID") == "ABC123"
    assert root.findtext(f"{N}Request/{N}Order/{N}OwnerCode") == "BA"


# ---- parsers ----


def test_a_priced_offer_has_its_total_passengers_documents_and_flights() -> None:
    priced = parse_offer_price_rs(PRICE_RS.replace("WARNINGS", "").encode(), airline="BA")
    assert priced.offer_id == "BAOFFER1"
    assert (priced.total_amount, priced.currency) == (Decimal("1320.55"), "USD")
    assert priced.previous_amount is None
    assert priced.expires_at == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert priced.passenger_count == 2
    assert priced.documents_required is True
    assert priced.flights == ["BA117 LHR-JFK 2026-12-01T08:30"]


def test_a_price_change_warning_gives_the_previous_total() -> None:
    priced = parse_offer_price_rs(PRICE_RS.replace("WARNINGS", PRICE_WARNING).encode(), airline="BA")
    assert (priced.total_amount, priced.previous_amount) == (Decimal("1320.55"), Decimal("1200.50"))


def test_a_previous_total_in_another_currency_is_a_bad_response() -> None:
    body = PRICE_RS.replace("WARNINGS", PRICE_WARNING.replace('CurCode="USD">1200', 'CurCode="EUR">1200'))
    with pytest.raises(ValueError, match="PreviousTotalAmount"):
        parse_offer_price_rs(body.encode(), airline="BA")


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("OFFER_NOT_FOUND", OfferUnavailable),
        ("OFFER_EXPIRED", OfferExpired),
        ("SOLD_OUT", SeatsUnavailable),
        ("911", AirlineRejected),
    ],
)
async def test_price_errors_map_onto_the_order_errors(code: str, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        await call(answer(errors_rs("IATA_OfferPriceRS", code, "the reason")), "price")
    assert type(caught.value) is error
    assert f"{code} the reason" in str(caught.value)


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("OFFER_NOT_FOUND", OfferUnavailable),
        ("OFFER_EXPIRED", OfferExpired),
        ("SOLD_OUT", SeatsUnavailable),
        ("ORDER_FAILED", OrderRefused),
        ("REFUSED_BY_RULE", OrderRefused),
    ],
)
async def test_create_errors_map_onto_the_order_errors(code: str, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        await call(answer(errors_rs("IATA_OrderViewRS", code)), "create")
    assert type(caught.value) is error


async def test_a_price_change_at_create_carries_the_new_amount() -> None:
    body = errors_rs(
        "IATA_OrderViewRS",
        "PRICE_CHANGED",
        "now higher",
        '<CurrentTotalAmount CurCode="USD">1320.5</CurrentTotalAmount>',
    )
    with pytest.raises(PriceChanged) as caught:
        await call(answer(body), "create")
    assert (caught.value.amount, caught.value.currency) == ("1320.50", "USD")
    assert "1320.50 USD" in caught.value.message
    with pytest.raises(PriceChanged) as without:
        await call(answer(errors_rs("IATA_OrderViewRS", "PRICE_CHANGED")), "create")
    assert without.value.amount is None


def test_an_order_view_becomes_the_order_state() -> None:
    order = parse_order_view_rs(order_rs().encode(), airline="BA")
    assert order is not None
    assert (order.order_id, order.airline, order.status) == ("ABC123", "BA", OrderStatus.CONFIRMED)
    assert (order.total_amount, order.currency, order.passenger_count) == (Decimal("1320.55"), "USD", 2)
    assert order.flights == ["BA117 LHR-JFK 2026-12-01T08:30"]
    assert order.client_reference == "idem-1"
    assert order.created_at == datetime(2026, 11, 20, 9, 0, 0, 123000, tzinfo=UTC)
    assert order.updated_at == datetime(2026, 11, 20, 9, 5, tzinfo=UTC)
    assert order.offer_id is None


@pytest.mark.parametrize(
    ("status", "item", "expected"),
    [
        ("OPENED", "CONFIRMED", OrderStatus.CONFIRMED),
        ("OPENED", "SCHEDULE_CHANGED", OrderStatus.CHANGED),
        ("CLOSED", "CANCELLED", OrderStatus.CANCELLED),
        ("OPENED", "CANCELLED", OrderStatus.CANCELLED),
    ],
)
def test_order_statuses_read_as_ours(status: str, item: str, expected: OrderStatus) -> None:
    order = parse_order_view_rs(order_rs(status=status, item=item).encode(), airline="BA")
    assert order is not None
    assert order.status is expected


@pytest.mark.parametrize(
    "broken",
    [
        {"status": "WEIRD"},
        {"item": "LOST_IN_SPACE"},
        {"owner": "AA"},
        {"journey_ref": "PJ9"},
    ],
)
async def test_an_order_view_that_breaks_the_contract_is_a_bad_response(broken: dict[str, str]) -> None:
    with pytest.raises(AirlineBadResponse) as caught:
        await call(answer(order_rs(**broken)), "retrieve")
    assert "Quixote" not in str(caught.value)


@pytest.mark.parametrize("operation", ["price", "create", "find", "retrieve", "cancel"])
@pytest.mark.parametrize(
    "body",
    [
        "<IATA_OrderViewRS><unclosed>",
        "<html>maintenance</html>",
        '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        f'<IATA_OrderViewRS xmlns="{NDC_NS}">&e;</IATA_OrderViewRS>',
    ],
)
async def test_junk_answers_are_bad_responses(operation: str, body: str) -> None:
    with pytest.raises(AirlineBadResponse):
        await call(answer(body), operation)


async def test_an_answer_with_neither_response_nor_errors_is_a_bad_response() -> None:
    with pytest.raises(AirlineBadResponse, match="neither"):
        await call(answer(f'<IATA_OrderViewRS xmlns="{NDC_NS}"/>'), "retrieve")
    with pytest.raises(AirlineBadResponse, match="neither"):
        await call(answer(f'<IATA_OfferPriceRS xmlns="{NDC_NS}"/>'), "price")


# ---- the connector over HTTP ----


async def test_each_operation_posts_its_message_to_its_path_with_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JB_TEST_KEY_BA", "s3cret")
    seen: list[tuple[str, str, str]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        root = SafeET.fromstring(request.content)
        seen.append((request.url.path, root.tag.removeprefix(N), request.headers["authorization"]))
        if request.url.path.endswith("OfferPrice"):
            return httpx.Response(200, content=PRICE_RS.replace("WARNINGS", "").encode())
        message = "IATA_OrderCancelRS" if request.url.path.endswith("Cancel") else "IATA_OrderViewRS"
        return httpx.Response(200, content=order_rs(message=message).encode())

    for operation in ("price", "create", "find", "retrieve", "cancel"):
        await call(handler, operation)
    assert seen == [
        ("/ndc/OfferPrice", "IATA_OfferPriceRQ", "Bearer s3cret"),
        ("/ndc/OrderCreate", "IATA_OrderCreateRQ", "Bearer s3cret"),
        ("/ndc/OrderRetrieve", "IATA_OrderRetrieveRQ", "Bearer s3cret"),
        ("/ndc/OrderRetrieve", "IATA_OrderRetrieveRQ", "Bearer s3cret"),
        ("/ndc/OrderCancel", "IATA_OrderCancelRQ", "Bearer s3cret"),
    ]


async def test_not_found_is_none_for_find_and_order_not_found_for_retrieve_and_cancel() -> None:
    missing = answer(errors_rs("IATA_OrderViewRS", "ORDER_NOT_FOUND", "no such order"))
    assert await call(missing, "find") is None
    with pytest.raises(OrderNotFound):
        await call(missing, "retrieve")
    with pytest.raises(OrderNotFound):
        await call(answer(errors_rs("IATA_OrderCancelRS", "ORDER_NOT_FOUND")), "cancel")


async def test_a_cancel_the_airline_refuses_is_order_refused() -> None:
    with pytest.raises(OrderRefused, match="NON_REFUNDABLE"):
        await call(answer(errors_rs("IATA_OrderCancelRS", "NON_REFUNDABLE")), "cancel")


async def test_a_create_that_gets_no_answer_in_time_is_an_airline_timeout() -> None:
    async def slow(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        raise AssertionError("unreachable")

    async def read_timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    for handler in (slow, read_timeout):
        with pytest.raises(AirlineTimeout):
            await call(handler, "create", timeout_s=0.2)


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_server_errors_on_orders_are_unavailable(status: int) -> None:
    with pytest.raises(AirlineUnavailable):
        await call(answer("oops", status), "create")


async def test_passenger_data_the_airline_echoes_stays_out_of_errors_and_logs() -> None:
    text = "Pax AMELIA QUIXOTE born 1984-03-09 passport p1234567 mail amelia@example.org +442079460018 refused"
    with capture_logs() as logs, pytest.raises(OrderRefused) as caught:
        await call(answer(errors_rs("IATA_OrderViewRS", "ORDER_FAILED", text)), "create")
    said = str(caught.value) + repr(logs)
    assert "refused" in str(caught.value)
    for value in (*PERSONAL, "+442079460018"):
        assert value.lower() not in said.lower(), value
    assert logs, "the failure is logged"


async def test_a_successful_create_logs_no_passenger_data() -> None:
    with capture_logs() as logs:
        order = await call(answer(order_rs()), "create")
    assert order is not None
    for value in PERSONAL:
        assert value not in repr(logs)


# ---- webhooks ----


def signed(body: bytes, key: str = "dev-key-ba") -> dict[str, str]:
    return {"X-Jetbridge-Signature": sign_body(body, key), "Content-Type": "application/xml"}


def test_the_connector_parses_webhooks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JB_TEST_KEY_BA", raising=False)
    connector = NdcConnector(BA, httpx.AsyncClient())
    assert isinstance(connector, OrderChangeParser)
    body = notif()
    change = connector.parse_order_change(body, signed(body))
    assert change.change == "schedule_change"
    assert change.reason == "Aircraft change"
    assert change.at == datetime(2026, 11, 21, 7, 0, tzinfo=UTC)
    assert (change.order.order_id, change.order.status) == ("ABC123", OrderStatus.CHANGED)
    assert change.order.flights == ["BA117 LHR-JFK 2026-12-01T08:30"]


def test_a_webhook_is_checked_against_the_credential_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JB_TEST_KEY_BA", "s3cret")
    connector = NdcConnector(BA, httpx.AsyncClient())
    body = notif(change="CANCELLATION", item="CANCELLED")
    assert connector.parse_order_change(body, signed(body, "s3cret")).change == "airline_cancellation"
    with pytest.raises(AirlineRejected, match="signature"):
        connector.parse_order_change(body, signed(body, "dev-key-ba"))


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Jetbridge-Signature": "sha256=00"}, {"X-Jetbridge-Signature": sign_body(b"other body", "dev-key-ba")}],
)
def test_a_webhook_without_the_right_signature_is_refused(
    monkeypatch: pytest.MonkeyPatch, headers: dict[str, str]
) -> None:
    monkeypatch.delenv("JB_TEST_KEY_BA", raising=False)
    with pytest.raises(AirlineRejected):
        NdcConnector(BA, httpx.AsyncClient()).parse_order_change(notif(), headers)


def test_a_signed_webhook_that_cannot_be_read_is_a_bad_response(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JB_TEST_KEY_BA", raising=False)
    connector = NdcConnector(BA, httpx.AsyncClient())
    for body in (b"<not xml", notif().replace(b"<OwnerCode>BA</OwnerCode>", b"<OwnerCode>AA</OwnerCode>")):
        with pytest.raises(AirlineBadResponse) as caught:
            connector.parse_order_change(body, signed(body))
        assert "Quixote" not in str(caught.value)


def test_the_airlines_reason_is_cleaned_and_capped_and_an_unknown_change_is_named_generically() -> None:
    reason = "Ops\u202e\u200b\n reason\t " + "x" * 500
    change = parse_order_change_notif(notif(change="REROUTE", reason=reason), airline="BA")
    assert change.change == "airline_change"
    assert change.reason is not None
    assert change.reason.startswith("Ops reason x")
    assert len(change.reason) == 160


# ---- against the NDC simulator in memory ----


@pytest.fixture
def state() -> AirlineState:
    return AirlineState("BA", FaultConfig())


@pytest.fixture
async def simulated(state: AirlineState) -> AsyncIterator[NdcConnector]:
    app = sim.build_app(state, Schedule())
    async with build_http_client(transport=httpx.ASGITransport(app=app)) as http:
        yield NdcConnector(BA, http)


async def test_the_simulator_understands_every_message_and_counts_each_as_business(
    simulated: NdcConnector, state: AirlineState
) -> None:
    criteria = SearchCriteria(
        origin="LHR",
        destination="JFK",
        departure_date=(datetime.now(UTC) + timedelta(days=21)).date(),
        adults=1,
        children=1,
        cabin=Cabin.ECONOMY,
    )
    offers = await simulated.search(criteria, request_id="r0", timeout_s=2)
    priced = await simulated.price(offers[0].offer_id, request_id="r1", timeout_s=2)
    assert (priced.total_amount, priced.passenger_count, priced.documents_required) == (
        offers[0].total_amount,
        2,
        True,
    )
    made = await simulated.create_order(
        priced.offer_id,
        PARTY,
        accepted_total=priced.total_amount,
        currency=priced.currency,
        client_reference="idem-9",
        request_id="r2",
        timeout_s=2,
    )
    assert made.flights == priced.flights
    assert await simulated.find_order("idem-9", request_id="r3", timeout_s=2) == made
    assert await simulated.retrieve_order(made.order_id, request_id="r4", timeout_s=2) == made
    cancelled = await simulated.cancel_order(made.order_id, request_id="r5", timeout_s=2)
    assert cancelled.status is OrderStatus.CANCELLED
    assert state.calls == 6
    (kept,) = state.orders.orders.values()
    assert [p["given_name"] for p in kept.passengers] == ["Amelia", "Bram"]
    assert kept.passengers[0]["document"]["number"] == "P1234567"
    assert kept.passengers[1]["document"] is None
    assert kept.contact == {"email": "amelia@example.org", "phone": "+44 20 7946 0018"}


async def test_the_simulator_refuses_requests_it_cannot_read_with_an_ndc_error() -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.build_app(AirlineState("BA", FaultConfig()), Schedule())),
        base_url="http://sim",
        headers={"X-API-Key": "k"},
    ) as client:
        for path in ("/ndc/OfferPrice", "/ndc/OrderCreate", "/ndc/OrderRetrieve", "/ndc/OrderCancel"):
            response = await client.post(path, content=b"<nope/>")
            assert response.status_code == 200
            root = SafeET.fromstring(response.content)
            assert root.findtext(f"{N}Errors/{N}Error/{N}Code") == "911", path
        create = build_order_create_rq(
            "BAOFFER1",
            PARTY,
            airline="BA",
            accepted_total=Decimal(1),
            currency="USD",
            client_reference="c",
            request_id="r",
        ).replace(b"1984-03-09", b"1984-13-09")
        refused = SafeET.fromstring((await client.post("/ndc/OrderCreate", content=create)).content)
        assert refused.findtext(f"{N}Errors/{N}Error/{N}Code") == "102"
        assert "1984" not in (refused.findtext(f"{N}Errors/{N}Error/{N}DescText") or "")
