"""Each model round-trips through its Avro schema in the Confluent wire format."""

from __future__ import annotations

import json
import struct
from decimal import Decimal

import pytest

from jetbridge.errors import DecodeError
from schemas.codec import AVRO_DIR, AvroCodec, schema_id_of
from schemas.models import (
    AirlineOutcome,
    AirlineStatus,
    AuditRecord,
    ChangeSource,
    DeadLetter,
    ErrorInfo,
    Event,
    OrderCall,
    OrderEvent,
    OrderOperation,
    OrderReply,
    OrderReplyStatus,
    OrderState,
    OrderStatus,
    PricedOffer,
    ReplyStatus,
    ResponseStatus,
    SearchReply,
    now_utc,
)
from schemas.registry import SchemaRegistryClient
from tests.support import factories as f
from tests.support.registry_double import RegistryDouble


def samples() -> list[Event]:
    now = now_utc()
    return [
        f.search_request(),
        f.search_request(airlines=["BA", "AA"], criteria=f.criteria(return_date=f.criteria().departure_date)),
        f.airline_call(),
        f.response("BA"),
        f.response("VS", ResponseStatus.ERROR, error=ErrorInfo(code="x", message="y", retriable=True)),
        f.plan(["BA", "AA"]),
        SearchReply(
            request_id="r",
            correlation_id="r",
            reply_to="b",
            status=ReplyStatus.PARTIAL,
            offers=[f.offer("BA"), f.offer("AA", "99.99")],
            airlines=[AirlineStatus(airline="BA", status=AirlineOutcome.OK, offer_count=1, latency_ms=3)],
            deadline=now,
            completed_at=now,
        ),
        DeadLetter(
            original_topic="jb.requests.v1",
            original_partition=2,
            original_offset=41,
            original_key=b"k",
            original_headers={"request_id": "r"},
            payload=b"\x00\xff raw",
            stage="router",
            error_code="decode",
            error_message="bad",
            retriable=False,
            attempts=1,
            first_failed_at=now,
            failed_at=now,
        ),
        AuditRecord(
            client_id="c",
            request_id="r",
            correlation_id="r",
            tool="search_offers",
            outcome="ok",
            duration_ms=12,
            at=now,
        ),
        OrderCall(
            request_id="r",
            correlation_id="r",
            client_id="c",
            reply_to="b",
            airline="BA",
            operation=OrderOperation.CREATE,
            offer_id="OFFER1",
            idempotency_key="jbo_1",
            accepted_total=Decimal("420.10"),
            currency="USD",
            passenger_count=2,
            passengers_sealed=b"JBP1\x00sealed",
            deadline=now,
            created_at=now,
        ),
        OrderReply(
            request_id="r",
            correlation_id="r",
            reply_to="b",
            airline="BA",
            operation=OrderOperation.PRICE,
            status=OrderReplyStatus.OK,
            price=PricedOffer(
                offer_id="OFFER1",
                total_amount=Decimal("455.50"),
                currency="USD",
                previous_amount=Decimal("420.10"),
                expires_at=now,
                passenger_count=2,
                documents_required=True,
                flights=["BA117 LHR-JFK 2030-06-01T08:30"],
            ),
            connector_kind="ndc",
            latency_ms=12,
            produced_at=now,
        ),
        OrderEvent(
            order_id="BA:PNR001",
            client_id="c",
            order=OrderState(
                order_id="PNR001",
                airline="BA",
                status=OrderStatus.CANCELLED,
                total_amount=Decimal("420.10"),
                currency="USD",
                passenger_count=2,
                flights=["BA117 LHR-JFK 2030-06-01T08:30"],
                client_reference="jbo_1",
                created_at=now,
                updated_at=now,
            ),
            change="airline_cancellation",
            changed_by=ChangeSource.AIRLINE,
            reason="Flight cancelled",
            at=now,
        ),
    ]


@pytest.mark.parametrize("event", samples(), ids=lambda e: type(e).__name__)
async def test_model_round_trips_through_its_schema(event: Event) -> None:
    double = RegistryDouble()
    async with double.client() as http:
        codec = AvroCodec(SchemaRegistryClient("http://registry.test", http))
        schema_id = await codec.register("topic.test", type(event))
        data = codec.encode("topic.test", event)
        assert data[0] == 0
        assert schema_id_of(data) == schema_id
        assert await codec.decode(data, type(event)) == event


def test_every_avsc_file_has_a_model() -> None:
    names = {p.name for p in AVRO_DIR.glob("*.avsc")}
    modelled = {cls.SCHEMA for cls in Event.__subclasses__()}
    assert names == modelled


def test_models_mirror_their_schema_fields() -> None:
    for cls in Event.__subclasses__():
        schema = json.loads((AVRO_DIR / cls.SCHEMA).read_text())
        assert [fld["name"] for fld in schema["fields"]] == list(cls.model_fields), cls.__name__


async def test_garbage_bytes_are_a_decode_error() -> None:
    double = RegistryDouble()
    async with double.client() as http:
        codec = AvroCodec(SchemaRegistryClient("http://registry.test", http))
        await codec.register("t", type(f.search_request()))
        for data in (
            b"",
            b"\x01\x00\x00\x00\x01abc",
            struct.pack(">bI", 0, 999) + b"x",
            b"\x00\x00\x00\x00\x01\xff",
        ):
            with pytest.raises(DecodeError):
                await codec.decode(data, type(f.search_request()))
