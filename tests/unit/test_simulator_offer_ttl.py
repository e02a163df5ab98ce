"""The simulators' ``offer_ttl_s``: every protocol's offers expire that many seconds after pricing, as the
connectors read them, so a test can watch offers expire; 0 or a reset gives the schedule's 20-30 minutes back.
Real simulator servers on free ports, no broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from connectors.base import build_connector
from infra.simulators import Simulators
from infra.simulators.faults import FaultConfig, FaultPatch
from infra.simulators.schedule import Schedule, ShopQuery
from jetbridge.http import build_http_client
from schemas.models import Offer, now_utc
from tests.integration.simulators_fixture import control_client, running_simulators
from tests.support import factories as f

KINDS = ["BA", "VS", "DL", "AY"]


@pytest.fixture(scope="module")
async def sims() -> AsyncIterator[Simulators]:
    async with running_simulators(KINDS) as running:
        yield running


async def offers_of(sims: Simulators, code: str) -> list[Offer]:
    http = build_http_client(timeout_s=5.0)
    connector = build_connector(sims.airline(code), http)
    try:
        criteria = f.criteria(departure_date=(datetime.now(UTC) + timedelta(days=20)).date())
        return await connector.search(criteria, request_id="req-ttl", timeout_s=3.0)
    finally:
        await connector.aclose()
        await http.aclose()


def test_the_schedule_prices_offers_that_expire_after_the_given_seconds() -> None:
    now = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    query = ShopQuery(airline="BA", origin="LHR", destination="JFK", departure_date=now.date() + timedelta(days=21))
    offers = Schedule().offers(query, now=now, ttl_s=3)
    assert offers
    assert {o.expires_at for o in offers} == {now + timedelta(seconds=3)}
    usual = Schedule().offers(query, now=now)
    assert all(timedelta(minutes=20) <= o.expires_at - now <= timedelta(minutes=30) for o in usual)


def test_a_patch_of_zero_gives_the_schedules_own_expiry_back() -> None:
    short = FaultPatch(offer_ttl_s=3).apply(FaultConfig())
    assert short.offer_ttl_s == 3
    assert FaultPatch(latency_ms=5).apply(short).offer_ttl_s == 3, "a field left out keeps its value"
    assert FaultPatch(offer_ttl_s=0).apply(short).offer_ttl_s is None


@pytest.mark.parametrize("code", KINDS, ids=["ndc", "rest-virgin", "rest-delta", "mcp"])
async def test_every_protocols_offers_expire_within_offer_ttl_s(sims: Simulators, code: str) -> None:
    async with control_client(sims) as control:
        answer = await control.put(f"/airlines/{code}", json={"offer_ttl_s": 3})
        assert answer.status_code == 200
        assert answer.json()[code]["offer_ttl_s"] == 3
        before = now_utc()
        offers = await offers_of(sims, code)
        assert offers
        # The protocols give whole seconds: an offer expires within the 3 s, never after them.
        assert all(before + timedelta(seconds=1) < o.expires_at <= now_utc() + timedelta(seconds=3) for o in offers)
        await control.put(f"/airlines/{code}", json={"offer_ttl_s": 0})
        usual = await offers_of(sims, code)
        assert all(o.expires_at > now_utc() + timedelta(minutes=19) for o in usual)
