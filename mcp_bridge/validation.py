"""The arguments of the `search_offers` tool, as one model: `SearchArguments`.

The MCP tool's parameters and their JSON schema come from it (`mcp_bridge/server.py`), the bridge's service
takes it, and its limits are the process's settings (`SearchRules`). Every failure names its field
(`InvalidInput`), and nothing is published for a call that fails. Typed, closed arguments only (promise 5):
airport codes are checked against reference data and airline codes against the registry, never passed through.
"""

from __future__ import annotations

import re
import reprlib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from jetbridge.airlines import AirlineRegistry
from jetbridge.errors import InvalidInput
from jetbridge.reference import airports
from jetbridge.settings import Settings
from schemas.models import Cabin, SearchCriteria

__all__ = [
    "EXCERPT_CHARS",
    "MAX_DAYS_AHEAD",
    "MAX_OFFERS_CAP",
    "MAX_PASSENGERS",
    "MIN_DEADLINE_MS",
    "SearchArguments",
    "SearchRules",
    "excerpt",
    "field_name",
]

MAX_PASSENGERS = 9
MAX_DAYS_AHEAD = 361  # airlines sell about a year out
MAX_OFFERS_CAP = 200
MIN_DEADLINE_MS = 200  # less leaves no airline time to answer
_IATA_AIRPORT = re.compile(r"^[A-Z]{3}$")
_CABIN_ALIASES = {"premium": "premium_economy"}
# An error quotes at most this much of what the agent sent: enough to see the mistake, never the agent's own
# megabyte back into its context.
EXCERPT_CHARS = 40
_SCAN_CHARS = 1000  # how much of a value is looked at to make its excerpt


class _BoundedRepr(reprlib.Repr):
    """A repr that does bounded work whatever the value: a few items, a few levels, no huge integers."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxdict = 2, 4, 4
        self.maxstring = self.maxother = EXCERPT_CHARS

    def repr_int(self, x: int, level: int) -> str:
        # repr() of an integer of over 4300 digits raises; an agent can send one.
        return super().repr_int(x, level) if x.bit_length() <= 128 else f"<integer of {x.bit_length()} bits>"


_BOUNDED_REPR = _BoundedRepr()


def _printable(text: str) -> str:
    """``text`` without control, format or unassigned characters (newlines, ANSI escapes, bidi overrides)."""
    return "".join(ch for ch in text[:_SCAN_CHARS] if not unicodedata.category(ch).startswith("C"))


def _cut(text: str, length: int | None = None) -> str:
    """``text`` cut to `EXCERPT_CHARS`, saying so; ``length``: how long the agent's own text was."""
    if len(text) <= EXCERPT_CHARS and (length is None or length <= _SCAN_CHARS):
        return text
    return f"{text[:EXCERPT_CHARS]}…" + (f"({length} characters)" if length is not None else "")


def excerpt(value: object) -> str:
    """What an error may quote of an agent's value: printable, at most `EXCERPT_CHARS` characters, and saying
    how long it was when it had to be cut (``'XXXX…(1000000 characters)'``)."""
    if isinstance(value, str):
        return repr(_cut(_printable(value), len(value)))
    return _cut(_printable(_BOUNDED_REPR.repr(value)))


def field_name(name: str) -> str:
    """An argument's name as errors quote it (``'name'``): the agent chose it if it is not one of ours, so it
    is cut too, and loses any quote that would end the quoting early."""
    return _cut(_printable(name).replace("'", ""), len(name)) or "?"


@dataclass(frozen=True, slots=True)
class SearchRules:
    """What a search's arguments are checked against: the airlines this process connects to and its limits."""

    registry: AirlineRegistry
    default_deadline_ms: int
    max_deadline_ms: int
    default_max_offers: int

    @classmethod
    def from_settings(cls, settings: Settings, registry: AirlineRegistry) -> SearchRules:
        return cls(
            registry=registry,
            default_deadline_ms=settings.default_deadline_ms,
            max_deadline_ms=settings.max_deadline_ms,
            default_max_offers=settings.default_max_offers,
        )


@dataclass(frozen=True, slots=True)
class _Context:
    """What `SearchArguments.parse` hands the validators (pydantic's validation context)."""

    rules: SearchRules
    today: date


def _context(info: ValidationInfo) -> _Context:
    if not isinstance(info.context, _Context):
        raise TypeError("build SearchArguments with SearchArguments.parse(arguments, rules)")
    return info.context


def _airport(value: str) -> str:
    code = value.strip().upper()
    if not _IATA_AIRPORT.match(code):
        raise ValueError(f"{excerpt(value)} is not a 3-letter IATA airport code")
    if code not in airports():
        raise ValueError(f"{code} is not a known IATA airport code")
    return code


def _iso_date(value: object) -> object:
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a date as YYYY-MM-DD")
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{excerpt(value)} is not a date as YYYY-MM-DD") from None


def _whole_number(value: object) -> object:
    # pydantic would read true as 1; a passenger count or a deadline is never a yes/no.
    if isinstance(value, bool):
        raise ValueError(f"must be a whole number, got {excerpt(value)}")
    return value


def _cabin(value: object) -> object:
    if isinstance(value, Cabin):
        return value.value.lower()
    if isinstance(value, str):
        name = value.strip().lower()
        return _CABIN_ALIASES.get(name, name)
    return value


AirportCode = Annotated[str, AfterValidator(_airport), Field(json_schema_extra={"pattern": "^[A-Za-z]{3}$"})]
IsoDate = Annotated[date, BeforeValidator(_iso_date)]
Count = Annotated[int, BeforeValidator(_whole_number)]
# Cabin's members as agents write them (criteria() maps them back).
CabinName = Annotated[Literal["economy", "premium_economy", "business", "first"], BeforeValidator(_cabin)]

# What a field must be, for errors about its type (the bounds and rules have their own messages).
_EXPECTED = {
    "origin": "a 3-letter IATA airport code",
    "destination": "a 3-letter IATA airport code",
    "departure_date": "a date as YYYY-MM-DD",
    "return_date": "a date as YYYY-MM-DD",
    "cabin": f"one of {', '.join(c.value.lower() for c in Cabin)}",
    "airlines": "a non-empty list of IATA airline codes",
    "fresh": "true or false",
}


class SearchArguments(BaseModel):
    """A flight search as an agent asks for it: the `search_offers` tool's arguments, checked.

    Made by `SearchArguments.parse(arguments, rules)`, since the checks need the registry, the limits and
    today's date: an instance always holds arguments that passed them, normalised (codes upper-case, every
    default filled in).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    origin: AirportCode = Field(description="IATA airport code of departure, e.g. LHR")
    destination: AirportCode = Field(description="IATA airport code of arrival, e.g. JFK; not the origin")
    departure_date: IsoDate = Field(
        description=f"Outbound date, YYYY-MM-DD, today or later (at most {MAX_DAYS_AHEAD} days ahead)"
    )
    return_date: IsoDate | None = Field(
        default=None, description="Return date, YYYY-MM-DD, on or after departure_date; omit for one way"
    )
    adults: Count = Field(
        default=1, ge=1, le=MAX_PASSENGERS, description=f"Adults; at most {MAX_PASSENGERS} passengers in all"
    )
    children: Count = Field(default=0, ge=0, le=MAX_PASSENGERS, description="Children aged 2-11")
    infants: Count = Field(default=0, ge=0, le=MAX_PASSENGERS, description="Infants under 2, at most one per adult")
    cabin: CabinName = Field(default="economy", description="Cabin class")
    airlines: Annotated[list[str], Field(min_length=1)] | None = Field(
        default=None, description="Only these IATA airline codes (see list_airlines); omit for every airline"
    )
    # The defaults of these two are the process's (SearchRules); the ones here are Settings' own.
    max_offers: Count = Field(
        default=Settings.model_fields["default_max_offers"].default,
        ge=1,
        le=MAX_OFFERS_CAP,
        description=f"At most this many offers, cheapest first (1-{MAX_OFFERS_CAP})",
    )
    deadline_ms: Count = Field(
        default=Settings.model_fields["default_deadline_ms"].default,
        ge=MIN_DEADLINE_MS,
        description="How long to wait for airlines, in ms",
    )
    # Strict: a yes/no is true or false, never "yes", 1 or "false" read as something else.
    fresh: bool = Field(
        default=False,
        strict=True,
        description="true: live offers only, every airline is called (no answer from the offer cache); "
        "default false: airlines that answered the same search moments ago answer from the cache, "
        "flagged source cache with their age_ms",
    )

    @classmethod
    def parse(cls, arguments: Mapping[str, object], rules: SearchRules, *, today: date | None = None) -> Self:
        """Check an agent's arguments; raise `InvalidInput` naming the first bad field.

        A missing argument and ``null`` are the same: the default.
        """
        context = _Context(rules, today or datetime.now(UTC).date())
        try:
            return cls.model_validate(arguments, context=context)
        except ValidationError as exc:
            raise _invalid_input(exc) from None

    @classmethod
    def json_schema_for(cls, rules: SearchRules) -> dict[str, Any]:
        """The JSON schema agents see: the model's, with this process's deadline and offer limits."""
        schema = cls.model_json_schema()
        properties = schema["properties"]
        properties["deadline_ms"] |= {
            "maximum": rules.max_deadline_ms,
            "default": rules.default_deadline_ms,
            "description": f"How long to wait for airlines, in ms ({MIN_DEADLINE_MS}-{rules.max_deadline_ms}, "
            f"default {rules.default_deadline_ms})",
        }
        properties["max_offers"]["default"] = rules.default_max_offers
        return schema

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any, info: ValidationInfo) -> Any:
        rules = _context(info).rules
        if not isinstance(data, Mapping):
            return data
        given = {name: value for name, value in data.items() if value is not None}
        return {"max_offers": rules.default_max_offers, "deadline_ms": rules.default_deadline_ms} | given

    @field_validator("departure_date", "return_date")
    @classmethod
    def _bookable(cls, value: date | None, info: ValidationInfo) -> date | None:
        today = _context(info).today
        if value is not None and value < today:
            raise ValueError(f"{value.isoformat()} is in the past (today is {today.isoformat()})")
        if value is not None and value > today + timedelta(days=MAX_DAYS_AHEAD):
            raise ValueError(f"{value.isoformat()} is more than {MAX_DAYS_AHEAD} days ahead")
        return value

    @field_validator("airlines")
    @classmethod
    def _connected(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is None:
            return None
        registry = _context(info).rules.registry
        codes: list[str] = []
        for item in value:
            code = item.strip().upper()
            if code not in registry:
                raise ValueError(f"{excerpt(item)} is not an airline Jetbridge connects to")
            if code not in codes:
                codes.append(code)
        return codes

    @field_validator("deadline_ms")
    @classmethod
    def _within_cap(cls, value: int, info: ValidationInfo) -> int:
        cap = _context(info).rules.max_deadline_ms
        if value > cap:
            raise ValueError(f"must be between {MIN_DEADLINE_MS} and {cap}, got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # Rules across fields name the field an agent would change. Raised as InvalidInput (pydantic lets it
        # through), since a model-level ValueError could not say which field it is about.
        if self.destination == self.origin:
            raise InvalidInput("destination", "must differ from origin")
        if self.return_date is not None and self.return_date < self.departure_date:
            raise InvalidInput("return_date", "must be on or after departure_date")
        if self.adults + self.children + self.infants > MAX_PASSENGERS:
            raise InvalidInput("adults", f"at most {MAX_PASSENGERS} passengers in all (adults + children + infants)")
        if self.infants > self.adults:
            raise InvalidInput("infants", "at most one infant per adult")
        return self

    def criteria(self, currency: str) -> SearchCriteria:
        """The search as the request event carries it."""
        return SearchCriteria(
            origin=self.origin,
            destination=self.destination,
            departure_date=self.departure_date,
            return_date=self.return_date,
            adults=self.adults,
            children=self.children,
            infants=self.infants,
            cabin=Cabin(self.cabin.upper()),
            currency=currency,
        )


def _invalid_input(exc: ValidationError) -> InvalidInput:
    """The first error (fields are checked in order) as an `InvalidInput` naming its field."""
    error = exc.errors(include_url=False)[0]
    field = field_name(str(error["loc"][0])) if error["loc"] else "arguments"
    return InvalidInput(field, _reason(field, error))


def _reason(field: str, error: ErrorDetails) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx", {})
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not an argument of search_offers"
    if kind == "too_short":
        return f"must be {_EXPECTED.get(field, 'non-empty')}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}, got {excerpt(value)}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}, got {excerpt(value)}"
    return f"must be {_EXPECTED.get(field, 'a whole number')}, got {excerpt(value)}"
