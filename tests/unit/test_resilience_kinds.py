"""Every connector kind surfaces an airline's Retry-After (AirlineThrottled.retry_after_s), and the simulators
throttle (429 with Retry-After) and count the calls they receive. Real simulator servers on free ports, no
broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from connectors.base import build_connector
from connectors.kinds.http_call import error_for_status, retry_after_s
from infra.simulators import Simulators
from jetbridge.errors import AirlineThrottled, AirlineUnavailable
from jetbridge.http import build_http_client
from tests.integration.simulators_fixture import control_client, running_simulators
from tests.support import factories as f


def test_retry_after_reads_seconds_and_http_dates_and_ignores_nonsense() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert retry_after_s("2") == 2.0
    assert retry_after_s(" 120 ") == 120.0
    assert retry_after_s("Wed, 25 Nov 2026 12:00:30 GMT", now=now) == 30.0
    assert retry_after_s("Wed, 25 Nov 2026 11:00:00 GMT", now=now) == 0.0, "a date in the past: at once"
    assert retry_after_s("999999") == 600.0, "capped"
    assert retry_after_s("soon") is None
    assert retry_after_s(None) is None


def test_429_and_503_with_retry_after_are_throttles_other_5xx_are_unavailable() -> None:
    throttled = error_for_status("ZZ", 429, "2")
    assert isinstance(throttled, AirlineThrottled)
    assert throttled.retry_after_s == 2.0
    assert throttled.retriable
    bare = error_for_status("ZZ", 429)
    assert isinstance(bare, AirlineThrottled)
    assert bare.retry_after_s is None
    busy = error_for_status("ZZ", 503, "5")
    assert isinstance(busy, AirlineThrottled)
    assert busy.retry_after_s == 5.0
    down = error_for_status("ZZ", 503)
    assert type(down) is AirlineUnavailable


@pytest.fixture(scope="module")
async def sims() -> AsyncIterator[Simulators]:
    async with running_simulators(["BA", "VS", "DL", "AY"]) as running:
        yield running


@pytest.mark.parametrize("code", ["BA", "VS", "DL", "AY"], ids=["ndc", "rest-virgin", "rest-delta", "mcp"])
async def test_a_throttling_airline_of_every_kind_is_reported_with_its_retry_after(sims: Simulators, code: str) -> None:
    async with control_client(sims) as control:
        answer = await control.put(f"/airlines/{code}", json={"fault": "throttle", "retry_after_s": 2})
        assert answer.status_code == 200
        http = build_http_client(timeout_s=5.0)
        connector = build_connector(sims.airline(code), http)
        criteria = f.criteria(departure_date=(datetime.now(UTC) + timedelta(days=20)).date())
        try:
            with pytest.raises(AirlineThrottled) as caught:
                await connector.search(criteria, request_id="req-throttle", timeout_s=3.0)
        finally:
            await connector.aclose()
            await http.aclose()
        assert caught.value.retry_after_s == 2.0
        assert caught.value.code == "airline_throttled"
        seen = (await control.get(f"/airlines/{code}")).json()[code]
        assert seen["calls"] == 1, "counted at the airline: one business call"
        assert seen["answers"] == {"throttle": 1}
        assert [c["answer"] for c in seen["recent_calls"]] == ["throttle"]


async def test_the_simulator_answers_429_at_once_and_reset_clears_the_counts(sims: Simulators) -> None:
    async with control_client(sims) as control, httpx.AsyncClient(trust_env=False) as client:
        await control.put("/airlines/VS", json={"fault": "throttle", "retry_after_s": 7, "latency_ms": 2000})
        url = sims.endpoint("VS") + "/api/v2/flights/search"
        answer = await client.get(url, headers={"X-API-Key": "k"}, timeout=1.0)
        assert answer.status_code == 429
        assert answer.headers["retry-after"] == "7"
        assert answer.elapsed.total_seconds() < 1.0, "a gateway throttles before the backend's latency"
        assert (await control.get("/airlines")).json()["VS"]["calls"] == 1
        await control.post("/reset")
        after = (await control.get("/airlines/VS")).json()["VS"]
        assert (after["calls"], after["answers"], after["recent_calls"], after["fault"]) == (0, {}, [], "none")
