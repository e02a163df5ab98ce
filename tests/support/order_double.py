"""A fake airline order system behind the `connectors.orders.OrderConnector` interface, for the order worker's tests.

Like the simulators' `OrderDesk` it does not deduplicate: the same client reference twice makes two orders (so a
test can count them). Each operation can be scripted to fail: ``create_script`` takes one step per create
(``ok``, ``made_then_timeout``: the order is made and the caller times out; ``timeout``: not made;
``unavailable``: a 5xx, not made; ``price_changed``; ``sold_out``), ``find_failures`` fails that many lookups
(``lookups_fail_after_create``: every one after the first create); ``find_takes_s`` moves the fake clock.
``calls`` records every operation in order, e.g. ``["find", "create", "find"]``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from connectors.orders import OrderChange, verify_signature
from jetbridge.errors import (
    AirlineBadResponse,
    AirlineTimeout,
    AirlineUnavailable,
    OfferUnavailable,
    OrderNotFound,
    PriceChanged,
    SeatsUnavailable,
)
from jetbridge.passengers import Contact, OrderParty, Passenger, TravelDocument
from schemas.models import OrderState, OrderStatus, PricedOffer

__all__ = ["WEBHOOK_SECRET", "FakeOrderAirline", "WebhookAirline", "party", "party_json"]

PRICE = Decimal("420.00")
WEBHOOK_SECRET = "test-webhook-key"  # signs nothing real


def party(given: str = "Ingrid", family: str = "Marlowe-Quist", count: int = 1) -> OrderParty:
    """Passengers whose names are unusual enough to grep raw bytes for."""
    people = [
        Passenger(
            given_name=f"{given}{'a' * i}",
            family_name=family,
            date_of_birth=datetime(1984, 3, 9, tzinfo=UTC).date(),
            document=TravelDocument(
                number=f"XK99{i}7731", issuing_country="NO", expires_on=datetime(2031, 1, 1).date()
            ),
        )
        for i in range(count)
    ]
    return OrderParty(passengers=people, contact=Contact(email="ingrid.mq@example.org", phone="+47 912 34 567"))


def party_json(value: OrderParty) -> bytes:
    return value.model_dump_json().encode()


@dataclass
class _Made:
    state: OrderState
    party: OrderParty = field(repr=False)


class FakeOrderAirline:
    """An in-memory airline order system; ``advance`` (a fake clock's) is moved on by a timeout's length."""

    kind = "fake"

    def __init__(
        self,
        code: str = "ZZ",
        *,
        create_script: list[str] | None = None,
        find_failures: int = 0,
        lookups_fail_after_create: bool = False,
        find_takes_s: float = 0.0,
        retrieve_failures: int = 0,
        cancel_script: list[str] | None = None,
        advance: Callable[[float], None] | None = None,
        create_hold: asyncio.Event | None = None,
    ) -> None:
        self.code = code
        self.create_script = list(create_script or [])
        self.find_failures = find_failures
        self.lookups_fail_after_create = lookups_fail_after_create
        self.find_takes_s = find_takes_s
        self.retrieve_failures = retrieve_failures
        self.cancel_script = list(cancel_script or [])
        self.advance = advance
        self.create_hold = create_hold
        self.orders: dict[str, _Made] = {}
        self.calls: list[str] = []
        self.price_amount = PRICE
        self.closed = False

    # ---- helpers for tests ----
    def orders_for(self, reference: str) -> list[OrderState]:
        return [m.state for m in self.orders.values() if m.state.client_reference == reference]

    def change(self, order_id: str, status: OrderStatus, flights: list[str] | None = None) -> OrderState:
        made = self.orders[order_id]
        update: dict[str, object] = {"status": status, "updated_at": datetime.now(UTC)}
        if flights is not None:
            update["flights"] = flights
        made.state = made.state.model_copy(update=update)
        return made.state

    def _timeout(self, timeout_s: float) -> AirlineTimeout:
        if self.advance is not None:
            self.advance(timeout_s)
        return AirlineTimeout(f"{self.code} did not answer within {timeout_s:.2f} s")

    # ---- OrderConnector ----
    async def price(self, offer_id: str, *, request_id: str, timeout_s: float) -> PricedOffer:
        self.calls.append("price")
        if offer_id.startswith("gone"):
            raise OfferUnavailable(f"offer {offer_id} is not known to {self.code}")
        return PricedOffer(
            offer_id=offer_id,
            total_amount=self.price_amount,
            currency="EUR",
            expires_at=datetime.now(UTC) + timedelta(minutes=20),
            passenger_count=1,
            flights=[f"{self.code}100 OSL-LHR 2026-12-01T08:30"],
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
        self.calls.append("create")
        step = self.create_script.pop(0) if self.create_script else "ok"
        if self.create_hold is not None:
            await self.create_hold.wait()
        if step == "timeout":
            raise self._timeout(timeout_s)
        if step == "unavailable":
            raise AirlineUnavailable(f"{self.code} answered 502")
        if step == "price_changed" or self.price_amount > accepted_total:
            raise PriceChanged(
                f"{self.code}: the price is now above the accepted {accepted_total}", amount="455.10", currency="EUR"
            )
        if step == "sold_out":
            raise SeatsUnavailable(f"no seats left on {offer_id}")
        now = datetime.now(UTC)
        order_id = f"P{len(self.orders) + 1:05d}"
        state = OrderState(
            order_id=order_id,
            airline=self.code,
            status=OrderStatus.CONFIRMED,
            offer_id=offer_id,
            total_amount=self.price_amount,
            currency=currency,
            passenger_count=len(party.passengers),
            flights=[f"{self.code}100 OSL-LHR 2026-12-01T08:30"],
            client_reference=client_reference,
            created_at=now,
            updated_at=now,
        )
        self.orders[order_id] = _Made(state, party)
        if step == "made_then_timeout":
            raise self._timeout(timeout_s)
        if step == "made_then_garbled":
            raise AirlineBadResponse(f"{self.code} answered something that is not an order")
        return state

    async def find_order(self, client_reference: str, *, request_id: str, timeout_s: float) -> OrderState | None:
        self.calls.append("find")
        if self.advance is not None and self.find_takes_s:
            self.advance(self.find_takes_s)
        if self.find_failures > 0 or (self.lookups_fail_after_create and "create" in self.calls):
            self.find_failures = max(0, self.find_failures - 1)
            raise AirlineUnavailable(f"{self.code} answered 503 to the lookup")
        found = self.orders_for(client_reference)
        return max(found, key=lambda s: s.created_at or s.updated_at) if found else None

    async def retrieve_order(self, order_id: str, *, request_id: str, timeout_s: float) -> OrderState:
        self.calls.append("retrieve")
        if self.retrieve_failures > 0:
            self.retrieve_failures -= 1
            raise AirlineUnavailable(f"{self.code} answered 503")
        made = self.orders.get(order_id)
        if made is None:
            raise OrderNotFound(f"order {order_id} is not known to {self.code}")
        return made.state

    async def cancel_order(self, order_id: str, *, request_id: str, timeout_s: float) -> OrderState:
        self.calls.append("cancel")
        if order_id not in self.orders:
            raise OrderNotFound(f"order {order_id} is not known to {self.code}")
        step = self.cancel_script.pop(0) if self.cancel_script else "ok"
        if step == "not_done_timeout":
            raise self._timeout(timeout_s)
        state = self.change(order_id, OrderStatus.CANCELLED)
        if step == "done_then_timeout":
            raise self._timeout(timeout_s)
        return state

    async def search(self, *args: object, **kwargs: object) -> list[object]:
        return []

    async def aclose(self) -> None:
        self.closed = True


class WebhookAirline(FakeOrderAirline):
    """A fake airline that pushes its changes to a webhook: JSON bodies signed with ``secret``."""

    def __init__(self, code: str = "ZZ", *, secret: str = WEBHOOK_SECRET) -> None:
        super().__init__(code)
        self.secret = secret

    def parse_order_change(self, body: bytes, headers: Mapping[str, str]) -> OrderChange:
        verify_signature(self.code, body, headers, self.secret)
        try:
            data = json.loads(body)
            return OrderChange(
                order=OrderState.model_validate(data["order"]),
                change=str(data["change"]),
                reason=data.get("reason"),
                at=datetime.fromisoformat(data["at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AirlineBadResponse(f"{self.code}: webhook body is not an order change") from exc

    @staticmethod
    def body(state: OrderState, change: str = "schedule_change", reason: str | None = "retimed") -> bytes:
        return json.dumps(
            {
                "order": state.model_dump(mode="json"),
                "change": change,
                "reason": reason,
                "at": state.updated_at.isoformat(),
            }
        ).encode()
