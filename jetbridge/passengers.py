"""Who an order is for: passengers and a contact, as the bridge checked them and the connectors send them on.

Personal data: it crosses Kafka only sealed (`jetbridge.pii`), is never logged, and never enters an event's
readable fields, an audit record or a dead letter. ``repr`` of these models names no value, so a stray log
line or traceback cannot leak one.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Contact", "OrderParty", "Passenger", "PassengerType", "TravelDocument", "passenger_type"]

PassengerType = Literal["adult", "child", "infant"]

# Letters of any script, spaces, hyphens, apostrophes and full stops, as names are printed on documents.
NAME_PATTERN = r"^[^\W\d_]+(?:[ '\-.][^\W\d_]+)*\.?$"


class _Private(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<personal data>)"

    __str__ = __repr__


class TravelDocument(_Private):
    kind: Literal["passport", "national_id"] = "passport"
    number: str = Field(min_length=5, max_length=20, pattern=r"^[A-Z0-9]+$")
    issuing_country: str = Field(min_length=2, max_length=2, pattern=r"^[A-Z]{2}$")
    expires_on: date


class Passenger(_Private):
    given_name: str = Field(min_length=1, max_length=40, pattern=NAME_PATTERN)
    family_name: str = Field(min_length=1, max_length=40, pattern=NAME_PATTERN)
    date_of_birth: date
    document: TravelDocument | None = None


class Contact(_Private):
    email: str = Field(max_length=120, pattern=r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
    phone: str = Field(min_length=6, max_length=20, pattern=r"^\+?[0-9 ]{6,19}$")


class OrderParty(_Private):
    """What is sealed into an order call: the passengers, in order, and whom the airline contacts."""

    passengers: list[Passenger] = Field(min_length=1, max_length=9)
    contact: Contact


def passenger_type(born: date, travels: date) -> PassengerType:
    """The fare type of a passenger on the day of travel: infant under 2, child under 12, else adult."""
    age = travels.year - born.year - ((travels.month, travels.day) < (born.month, born.day))
    return "infant" if age < 2 else "child" if age < 12 else "adult"
