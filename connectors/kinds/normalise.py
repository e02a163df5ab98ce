"""Airline answers are untrusted text: every value that reaches an `Offer` passes a check here first.

Codes must match their IATA/ISO shape, free text is cleaned of control characters and capped, money is a
finite non-negative decimal with two places, times are parsed rather than copied. A failed check raises
`UntrustedValue` (a ``ValueError``), which the connector boundary reports as `AirlineBadResponse`.
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from jetbridge.errors import AirlineBadResponse
from schemas.models import Cabin, Offer, Segment, Slice

__all__ = [
    "MAX_OFFERS",
    "UntrustedValue",
    "airport",
    "carrier",
    "clean_text",
    "currency",
    "decode_json",
    "flight_number",
    "iso_duration_minutes",
    "local_time",
    "make_offer",
    "make_segment",
    "make_slice",
    "minutes",
    "money",
    "offer_id",
    "utc_time",
]

# More offers than any shopper can read; an airline that sends more gets cut here, not trusted.
MAX_OFFERS = 500
_MAX_SEGMENTS = 8
_MAX_AMOUNT = Decimal("9999999999.99")  # what Offer.total_amount (12 digits, 2 places) can hold
_CENT = Decimal("0.01")

_AIRPORT = re.compile(r"[A-Z]{3}")
_CARRIER = re.compile(r"[A-Z0-9]{2}")
_FLIGHT_NUMBER = re.compile(r"[0-9]{1,4}[A-Z]?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_OFFER_ID = re.compile(r"[A-Za-z0-9._:~+/=-]{1,128}")
_ISO_DURATION = re.compile(r"P(?:(\d{1,2})D)?T?(?:(\d{1,3})H)?(?:(\d{1,4})M)?(?:\d{1,5}S)?")


class UntrustedValue(ValueError):
    """An airline-supplied value failed its check; the message names the field, never echoes the value."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def _no_constants(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not a number")


def decode_json(airline: str, body: bytes) -> Any:
    """The decoded JSON body; NaN and Infinity are refused (they are not JSON, and not prices)."""
    try:
        return json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise AirlineBadResponse(f"{airline}: body is not valid JSON ({type(exc).__name__})") from exc


def _str(value: object, field: str, max_len: int) -> str:
    if not isinstance(value, str):
        raise UntrustedValue(field, f"expected text, got {type(value).__name__}")
    if len(value) > max_len:
        raise UntrustedValue(field, f"longer than {max_len} characters")
    return value.strip()


def _code(value: object, field: str, pattern: re.Pattern[str], what: str) -> str:
    text = _str(value, field, 16).upper()
    if not pattern.fullmatch(text):
        raise UntrustedValue(field, f"not {what}")
    return text


def airport(value: object, field: str = "airport") -> str:
    return _code(value, field, _AIRPORT, "an IATA airport code")


def carrier(value: object, field: str = "carrier") -> str:
    return _code(value, field, _CARRIER, "an IATA airline designator")


def currency(value: object, field: str = "currency") -> str:
    return _code(value, field, _CURRENCY, "an ISO 4217 currency code")


def flight_number(value: object, field: str = "flight_number") -> str:
    """The numeric part of a flight designator, leading zeros dropped (``"0117"`` and ``"117"`` match)."""
    text = _code(value, field, _FLIGHT_NUMBER, "a flight number")
    digits = text.rstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return str(int(digits)) + text[len(digits) :]


def offer_id(value: object, field: str = "offer_id") -> str:
    text = _str(value, field, 128)
    if not _OFFER_ID.fullmatch(text):
        raise UntrustedValue(field, "not an opaque offer id (1-128 URL-safe characters)")
    return text


def clean_text(value: object, field: str, max_len: int = 80) -> str | None:
    """Display text (fare brand, aircraft name): control and format characters removed, then capped."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise UntrustedValue(field, f"expected text, got {type(value).__name__}")
    # Line breaks and odd spaces become one space; control and format characters (bidi overrides,
    # zero-width joiners, NULs) go: they exist in airline text only to confuse whoever reads it next.
    kept = "".join(
        " " if ch.isspace() else ch for ch in value[: max_len * 4] if ch.isspace() or unicodedata.category(ch)[0] != "C"
    )
    text = " ".join(kept.split())[:max_len]
    return text or None


def money(value: object, field: str = "amount") -> Decimal:
    """A price: a finite, non-negative amount that fits the model, rounded half-up to cents."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise UntrustedValue(field, "expected a number")
    try:
        # str() first: a float like 0.1 must become Decimal("0.1"), not its binary expansion.
        amount = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except InvalidOperation as exc:
        raise UntrustedValue(field, "not a decimal number") from exc
    if not amount.is_finite() or amount < 0 or amount > _MAX_AMOUNT:
        raise UntrustedValue(field, "not a finite amount between 0 and 9,999,999,999.99")
    return amount.quantize(_CENT, ROUND_HALF_UP)


def minutes(value: object, field: str = "duration_minutes") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 48 * 60:
        raise UntrustedValue(field, "expected whole minutes between 1 and 2879")
    return value


def iso_duration_minutes(value: object, field: str = "duration") -> int:
    """Minutes in an ISO 8601 duration such as ``PT7H55M`` (what NDC and many APIs send)."""
    text = _str(value, field, 32).upper()
    match = _ISO_DURATION.fullmatch(text)
    if not match or not any(match.groups()):
        raise UntrustedValue(field, "not an ISO 8601 duration")
    days, hours, mins = (int(g) if g else 0 for g in match.groups())
    return minutes(days * 1440 + hours * 60 + mins, field)


def local_time(value: object, field: str) -> str:
    """A local wall-clock time as ``YYYY-MM-DDTHH:MM``; an offset, if sent, is dropped (it is local)."""
    text = _str(value, field, 40)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise UntrustedValue(field, "not an ISO 8601 date-time") from exc
    return parsed.strftime("%Y-%m-%dT%H:%M")


def utc_time(value: object, field: str) -> datetime:
    """An instant; a time without an offset is taken as UTC, as airlines' expiry times are."""
    text = _str(value, field, 40)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise UntrustedValue(field, "not an ISO 8601 date-time") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def make_segment(
    *,
    carrier_code: object,
    number: object,
    origin: object,
    destination: object,
    departs: object,
    arrives: object,
    aircraft: object = None,
) -> Segment:
    return Segment(
        carrier=carrier(carrier_code, "segment.carrier"),
        flight_number=flight_number(number, "segment.flight_number"),
        origin=airport(origin, "segment.origin"),
        destination=airport(destination, "segment.destination"),
        departure_local=local_time(departs, "segment.departure"),
        arrival_local=local_time(arrives, "segment.arrival"),
        aircraft=clean_text(aircraft, "segment.aircraft", 40),
    )


def make_slice(segments: list[Segment], duration_minutes: int) -> Slice:
    """A slice from its segments in flying order; they must join up end to start."""
    if not 1 <= len(segments) <= _MAX_SEGMENTS:
        raise UntrustedValue("slice.segments", f"expected 1 to {_MAX_SEGMENTS} segments")
    for before, after in itertools.pairwise(segments):
        if before.destination != after.origin:
            raise UntrustedValue("slice.segments", "segments do not connect")
    return Slice(
        origin=segments[0].origin,
        destination=segments[-1].destination,
        duration_minutes=duration_minutes,
        segments=segments,
    )


def make_offer(
    *,
    airline: str,
    offer_ref: object,
    amount: Decimal,
    currency_code: object,
    cabin: Cabin,
    brand: object,
    expires: datetime,
    slices: list[Slice],
) -> Offer:
    if not 1 <= len(slices) <= 2:
        raise UntrustedValue("offer.slices", "expected one or two slices")
    return Offer(
        offer_id=offer_id(offer_ref, "offer.offer_id"),
        airline=airline,
        total_amount=amount,
        currency=currency(currency_code, "offer.currency"),
        cabin=cabin,
        fare_brand=clean_text(brand, "offer.fare_brand"),
        expires_at=expires,
        slices=slices,
    )
