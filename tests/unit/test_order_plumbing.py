"""The pieces under the order tools: the passenger-data seal, the quotes and spend memory (without Redis), and
the order book's view of jb.orders.v1."""

from __future__ import annotations

import base64
import os
import stat
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from jetbridge.errors import ConfigurationError, DecodeError
from jetbridge.order_book import OrderBook
from jetbridge.passengers import OrderParty
from jetbridge.pii import PiiSeal, load_seal
from jetbridge.settings import Settings
from mcp_bridge.order_memory import OrderMemory, Quote
from schemas.models import ChangeSource, OrderEvent, OrderState, OrderStatus


def test_sealed_data_opens_only_for_its_call_and_key() -> None:
    seal = PiiSeal(os.urandom(32))
    sealed = seal.seal(b'{"family_name": "Lovelace"}', bound_to="req-1")
    assert b"Lovelace" not in sealed
    assert seal.open(sealed, bound_to="req-1") == b'{"family_name": "Lovelace"}'
    with pytest.raises(DecodeError, match="moved from another call"):
        seal.open(sealed, bound_to="req-2")
    with pytest.raises(DecodeError, match="JB_PII_KEY differs"):
        PiiSeal(os.urandom(32)).open(sealed, bound_to="req-1")
    with pytest.raises(DecodeError, match="JBP1"):
        seal.open(b"plain text", bound_to="req-1")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(DecodeError):
        seal.open(tampered, bound_to="req-1")


def test_the_key_comes_from_the_environment_or_a_private_file(tmp_path: Path) -> None:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    given = load_seal(Settings(JB_PII_KEY=key, JB_HOME=tmp_path))
    assert given.key_id == PiiSeal(base64.urlsafe_b64decode(key)).key_id
    assert not (tmp_path / "secrets").exists()
    made = load_seal(Settings(JB_HOME=tmp_path))
    path = tmp_path / "secrets" / "pii.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_seal(Settings(JB_HOME=tmp_path)).key_id == made.key_id, "every process of the machine: one key"
    with pytest.raises(ConfigurationError, match="32 bytes"):
        load_seal(Settings(JB_PII_KEY=base64.urlsafe_b64encode(b"short").decode(), JB_HOME=tmp_path))


def test_personal_data_never_prints() -> None:
    party = OrderParty.model_validate(
        {
            "passengers": [{"given_name": "Ada", "family_name": "Lovelace", "date_of_birth": "1985-12-10"}],
            "contact": {"email": "ada@example.org", "phone": "+44 20 7946 0000"},
        }
    )
    shown = f"{party!r} {party} {party.passengers[0]!r} {party.contact}"
    assert "Lovelace" not in shown
    assert "ada@example.org" not in shown


def _quote(offer_id: str = "BA:O1", minutes: int = 20) -> Quote:
    return Quote(
        offer_id=offer_id,
        airline="BA",
        total_amount=Decimal("420.00"),
        currency="USD",
        expires_at=datetime.now(UTC) + timedelta(minutes=minutes),
        passenger_count=1,
        documents_required=False,
        flights=["BA117 LHR-JFK 2030-06-01T08:30"],
    )


async def test_quotes_are_per_client_and_expire() -> None:
    memory = OrderMemory(None)
    await memory.put_quote("acme", _quote())
    got = await memory.quote("acme", "BA:O1")
    assert got is not None
    assert got.total_amount == Decimal("420.00")
    assert await memory.quote("rival", "BA:O1") is None
    await memory.put_quote("acme", _quote("BA:O2", minutes=-1))
    assert await memory.quote("acme", "BA:O2") is None, "an expired offer's price is no quote"


async def test_spend_is_capped_and_released() -> None:
    memory = OrderMemory(None)
    assert await memory.reserve("acme", Decimal("300.00"), Decimal("500")) == (True, Decimal("300"))
    assert await memory.reserve("acme", Decimal("250.00"), Decimal("500")) == (False, Decimal("300"))
    assert await memory.reserve("rival", Decimal("250.00"), Decimal("500")) == (True, Decimal("250"))
    await memory.release("acme", Decimal("300.00"))
    assert await memory.spent("acme") == Decimal(0)
    assert (await memory.reserve("acme", Decimal("9999.99"), Decimal(0)))[0], "0: no cap"


def _event(status: OrderStatus, at: datetime, reference: str = "jbo_1") -> OrderEvent:
    return OrderEvent(
        order_id="BA:PNR001",
        client_id="acme",
        order=OrderState(
            order_id="PNR001",
            airline="BA",
            status=status,
            total_amount=Decimal("420.00"),
            currency="USD",
            passenger_count=1,
            client_reference=reference,
            updated_at=at,
        ),
        change="created",
        changed_by=ChangeSource.AGENT,
        at=at,
    )


async def test_the_book_keeps_the_latest_state_and_tells_listeners() -> None:
    book = OrderBook("jb.orders.v1", codec=None, consumer_config={"bootstrap.servers": "127.0.0.1:1"})  # type: ignore[arg-type]
    heard: list[OrderEvent] = []
    book.subscribe(heard.append)
    now = datetime.now(UTC)
    book.note(_event(OrderStatus.CONFIRMED, now))
    book.note(_event(OrderStatus.CANCELLED, now + timedelta(seconds=1)))
    book.note(_event(OrderStatus.CONFIRMED, now))  # read late: older than what is known
    assert book.get("BA:PNR001").order.status is OrderStatus.CANCELLED  # type: ignore[union-attr]
    assert book.by_reference("jbo_1") == book.get("BA:PNR001")
    assert [e.order.status for e in heard] == [OrderStatus.CONFIRMED, OrderStatus.CANCELLED]
    assert await book.wait_for("BA:PNR001", 0.1) is not None
    assert await book.wait_for("BA:NONE", 0.05) is None


async def test_a_booking_starts_the_look_to_book_window_again() -> None:
    from mcp_bridge.allowances import LocalLedger, Spend

    ledger = LocalLedger(clock=lambda: 1000.0)
    spend = Spend("acme", rate_per_s=100, burst=100, daily_quota=0, window_searches=2, window_s=3600)
    assert await ledger.spend(spend) is None
    assert await ledger.spend(spend) is None
    refused = await ledger.spend(spend)
    assert refused is not None
    assert refused.limit == "window"
    await ledger.booked("acme")
    assert await ledger.spend(spend) is None, "the booking paid for the searches before it"
