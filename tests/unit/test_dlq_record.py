"""A dead letter an operator can use: the error's class, its tries and times, a message without secrets or
personal data, the payload byte-for-byte; and only failures for good are dead letters."""

from __future__ import annotations

import io
import json
import struct
from datetime import timedelta

import fastavro
import pytest

from jetbridge.dlq import belongs_in_dlq, dead_letter, scrub
from jetbridge.errors import (
    AirlineBadResponse,
    AirlineRejected,
    AirlineThrottled,
    AirlineTimeout,
    AirlineUnavailable,
    CircuitOpen,
    DeadlineExceeded,
    DecodeError,
    RateLimited,
    RequestExpired,
)
from schemas.codec import AvroCodec, load_schema
from schemas.models import DeadLetter, DlqReplay, now_utc
from schemas.registry import SchemaRegistryClient
from tests.support.registry_double import RegistryDouble

PAYLOAD = bytes(range(256)) + b"\x00 not utf-8 \xff"


def letter(error: BaseException, **kwargs: object) -> tuple[DeadLetter, dict[str, str]]:
    record, headers = dead_letter(
        topic="jb.airline.VS.calls.v1",
        partition=1,
        offset=7,
        key=b"req-1",
        value=PAYLOAD,
        headers={"request_id": "req-1", "correlation_id": "corr-1", "deadline_ms": "1", "dlq.stage": "old"},
        stage="connector.VS",
        error=error,
        **kwargs,  # type: ignore[arg-type]  # the keyword arguments under test
    )
    return record, {k: v.decode() for k, v in headers}


def test_the_record_names_the_error_class_and_keeps_the_payload_byte_for_byte() -> None:
    record, headers = letter(AirlineBadResponse("VS answered malformed JSON"))
    assert record.payload == PAYLOAD
    assert record.original_key == b"req-1"
    assert record.error_code == "airline_bad_response"
    assert record.error_class == "AirlineBadResponse"
    assert headers["dlq.error_class"] == "AirlineBadResponse"
    assert headers["dlq.stage"] == "connector.VS"  # the original's stale dlq.* header is not carried over
    assert record.request_id == "req-1"
    assert record.correlation_id == "corr-1"


def test_a_foreign_exception_is_internal_with_its_class_named() -> None:
    record, _ = letter(ValueError("boom"))
    assert (record.error_code, record.error_class, record.retriable) == ("internal", "ValueError", False)


def test_callers_pass_the_tries_and_the_first_failure_time() -> None:
    first = now_utc() - timedelta(seconds=3)
    record, headers = letter(AirlineUnavailable("VS answered 503"), attempts=3, first_failed_at=first)
    assert record.attempts == 3
    assert record.first_failed_at == first
    assert record.failed_at >= first
    assert headers["dlq.attempts"] == "3"
    assert headers["dlq.first_failed_at"] == first.isoformat()
    assert headers["dlq.failed_at"] == record.failed_at.isoformat()


def test_one_try_failed_once_has_one_time() -> None:
    record, _ = letter(DecodeError("bad bytes"))
    assert record.attempts == 1
    assert record.first_failed_at == record.failed_at


def test_the_message_is_scrubbed_in_the_record_and_the_header() -> None:
    body = json.dumps({"passengers": [{"given_name": "Ann", "surname": "Lee", "email": "ann.lee@example.com"}]})
    record, headers = letter(AirlineBadResponse(f"VS answered 422 to api_key=sk-live-abcdef123456: {body}"))
    for secret in ("sk-live", "abcdef123456", "Ann", "Lee", "ann.lee"):
        assert secret not in record.error_message
        assert secret not in headers["dlq.error_message"]
    assert record.error_message.startswith("VS answered 422 to api_key=[redacted]: ")


def test_a_long_message_is_scrubbed_before_it_is_cut() -> None:
    # Cut first, the address would end as "ann.lee@e", which no pattern recognises as an e-mail address.
    record, _ = letter(AirlineBadResponse("x" * 990 + " ann.lee@example.com"))
    assert len(record.error_message) == 1000
    assert "ann" not in record.error_message


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("GET /search?apikey=k3y-VALUE-1&origin=LHR", ["k3y-VALUE-1"]),
        ("X-Api-Key: dev-key-BA-123", ["dev-key-BA-123"]),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", ["eyJhbGciOiJIUzI1NiJ9", "c2ln"]),
        ("upstream said: bearer abcdefghijklmnop1234", ["abcdefghijklmnop1234"]),
        ("login failed: password=hunter2 for user", ["hunter2"]),
        ('{"client_secret": "s3cr3t", "token": "t0k3n"}', ["s3cr3t", "t0k3n"]),
        ("{'password': 'hunter2'}", ["hunter2"]),
        ("contact ann.lee+trips@mail.example.co.uk now", ["ann.lee", "example.co.uk"]),
        ("call +44 20 7946 0958 or +1-555-123-4567", ["7946", "0958", "555-123"]),
        ("call (020) 7946 0958 or 555-123-4567 today", ["7946 0958", "555-123-4567"]),
        ('{"name": "Ann Lee", "firstName": "Ann", "last_name": "Lee", "phone": 447700900123}', ["Ann", "Lee", "4477"]),
        ('{\\"givenName\\":\\"Ann\\",\\"familyName\\":\\"Lee\\"}', ["Ann", "Lee"]),
        ("<Pax><GivenName>Ann</GivenName><ns:Surname>Lee</ns:Surname></Pax>", ["Ann", "Lee"]),
        ('<Contact EmailAddress="ann@example.com" Phone="+447700900123"/>', ["ann@", "447700900123"]),
        (
            "<EmailAddressText>ann@example.com</EmailAddressText><PhoneNumber>07700900123</PhoneNumber>",
            ["ann@", "0770"],
        ),
        ("date_of_birth=1990-01-02 passport_number=X1234567", ["1990-01-02", "X1234567"]),
    ],
)
def test_scrub_removes_secrets_and_personal_data(text: str, gone: list[str]) -> None:
    scrubbed = scrub(text)
    assert "[redacted]" in scrubbed
    for fragment in gone:
        assert fragment not in scrubbed, scrubbed


@pytest.mark.parametrize(
    "text",
    [
        "VS did not answer within 2.75 s",
        "bytes do not decode with schema id 9: SchemaResolutionError('Schema mismatch')",
        "request 0ef8db73-2b6c-4858-8f52-406cc88eb382 met again 612 s after its deadline, beyond the window",
        "produce to jb.dlq.v1 failed at 2026-11-25T10:00:00.123+00:00 via 127.0.0.1:9092 (10.1.200.300)",
        "topic name: jb.airline.VS.calls.v1 partition 2 offset 1234567 fare brand Basic Economy",
        "12345678-1234-1234-1234-123456789012",
    ],
)
def test_scrub_leaves_ordinary_error_text_alone(text: str) -> None:
    assert scrub(text) == text


def test_scrub_keeps_the_field_names_so_the_message_still_says_what_was_there() -> None:
    assert scrub('{"email": "a@b.co", "origin": "LHR"}') == '{"email": "[redacted]", "origin": "LHR"}'
    assert scrub("<GivenName>Ann</GivenName>") == "<GivenName>[redacted]</GivenName>"
    assert scrub("api_key=abc&cabin=economy") == "api_key=[redacted]&cabin=economy"


@pytest.mark.parametrize(
    ("error", "belongs"),
    [
        (DecodeError("poison"), True),  # poison
        (AirlineBadResponse("malformed"), True),
        (AirlineUnavailable("503 after 3 tries"), True),  # a call that failed after its retries
        (AirlineRejected("fare not found"), True),
        (RequestExpired("met again 900 s after its deadline"), True),  # expired requests
        (ValueError("a bug"), True),
        # Delivered in the airline's answer (TIMEOUT or an error status), not lost:
        (DeadlineExceeded("deadline passed before the call"), False),
        (AirlineTimeout("no answer within the deadline"), False),
        (CircuitOpen("VS circuit open"), False),
        (RateLimited("no room in VS's rate limit before the deadline"), False),
        (AirlineThrottled("VS asked us to slow down", retry_after_s=5), False),
    ],
)
def test_only_failures_for_good_belong_in_the_dlq(error: BaseException, belongs: bool) -> None:
    assert belongs_in_dlq(error) is belongs


async def test_records_written_before_error_class_existed_still_decode() -> None:
    double = RegistryDouble()
    async with double.client() as http:
        codec = AvroCodec(SchemaRegistryClient("http://registry.test", http))
        old = json.loads(load_schema(DeadLetter.SCHEMA))
        old["fields"] = [f for f in old["fields"] if f["name"] != "error_class"]
        old_id = await codec.registry.register("jb.dlq.v1-value", json.dumps(old, separators=(",", ":")))
        await codec.register("jb.dlq.v1", DeadLetter)
        record, _ = letter(AirlineBadResponse("x"))
        framed = codec.encode("jb.dlq.v1", record)
        assert (await codec.decode(framed, DeadLetter)) == record
        # Same body under the old writer schema, without the new field: it decodes with error_class None.
        body = record.model_dump()
        body.pop("error_class")
        buffer = io.BytesIO()
        buffer.write(struct.pack(">bI", 0, old_id))
        fastavro.schemaless_writer(buffer, fastavro.parse_schema(old), body)
        decoded = await codec.decode(buffer.getvalue(), DeadLetter)
        assert decoded.error_class is None
        assert decoded.payload == PAYLOAD


async def test_the_replay_record_round_trips_through_its_schema() -> None:
    double = RegistryDouble()
    async with double.client() as http:
        codec = AvroCodec(SchemaRegistryClient("http://registry.test", http))
        await codec.register("jb.dlq-replays.v1", DlqReplay)
        replay = DlqReplay(
            dlq_id="2:41",
            dlq_topic="jb.dlq.v1",
            replay_id="r-1",
            replayed_at=now_utc(),
            operator="alice",
            target_topic="jb.airline.VS.calls.v1",
            target_partition=1,
            target_offset=99,
            error_code="airline_bad_response",
            forced=True,
        )
        assert await codec.decode(codec.encode("jb.dlq-replays.v1", replay), DlqReplay) == replay
