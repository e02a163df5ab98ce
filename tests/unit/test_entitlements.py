"""Per-client entitlements and traffic control (mcp_bridge/entitlements.py), on a fake clock: the token
bucket, the daily quota, the look-to-book window, the in-flight cap, the airline and fan-out rules, the
deadline cap, the strict client registry, and the service refusing over-limit searches with nothing but an
audit record published."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from jetbridge.airlines import load_registry
from jetbridge.errors import ClientRateLimited, ConfigurationError, InvalidInput, QuotaExceeded
from jetbridge.kafka import AsyncProducer
from jetbridge.runtime import Runtime
from jetbridge.settings import Settings
from mcp_bridge.correlator import ReplyCorrelator
from mcp_bridge.entitlements import (
    DEFAULT_CLIENTS,
    DEFAULTS,
    ClientRegistry,
    Entitlement,
    TrafficControl,
    choose_airlines,
    load_clients,
)
from mcp_bridge.limits import DailyQuota, SearchWindow, TokenBucket
from mcp_bridge.service import SearchService, arguments_sha256
from mcp_bridge.validation import SearchArguments, SearchRules
from schemas.codec import AvroCodec
from schemas.models import AuditRecord

AIRLINES = load_registry()
RULES = SearchRules(AIRLINES, default_deadline_ms=3000, max_deadline_ms=15000, default_max_offers=20)
TODAY = date(2026, 11, 23)
SOON = (TODAY + timedelta(days=21)).isoformat()
# 2026-11-23 23:59:50 UTC: ten seconds before a quota's day ends.
NEAR_MIDNIGHT = datetime(2026, 11, 23, 23, 59, 50, tzinfo=UTC).timestamp()


class FakeClock:
    def __init__(self, now: float = NEAR_MIDNIGHT - 3600) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def search(**overrides: object) -> SearchArguments:
    arguments: dict[str, object] = {"origin": "LHR", "destination": "JFK", "departure_date": SOON}
    return SearchArguments.parse(arguments | overrides, RULES, today=TODAY)


def control(clients: ClientRegistry, clock: FakeClock, *, max_in_flight: int = 100) -> TrafficControl:
    return TrafficControl(clients, AIRLINES, max_in_flight=max_in_flight, process_default_deadline_ms=3000, clock=clock)


async def let_through(traffic: TrafficControl, client_id: str) -> None:
    with await traffic.admit(client_id):
        pass


# ---- the bucket, the quota, the window ----


def test_a_token_bucket_lets_its_burst_through_then_one_search_per_refill() -> None:
    bucket = TokenBucket.full(rate_per_s=2.0, burst=3, now=0.0)
    for _ in range(3):
        assert bucket.wait_s(0.0) == 0
        bucket.take(0.0)
    assert bucket.wait_s(0.0) == pytest.approx(0.5)
    assert bucket.wait_s(0.25) == pytest.approx(0.25)
    assert bucket.wait_s(0.5) == 0
    bucket.take(0.5)
    assert bucket.wait_s(100.0) == 0
    assert bucket.tokens == 3, "never more than the burst"


def test_a_token_bucket_does_not_drain_when_the_clock_goes_back() -> None:
    bucket = TokenBucket.full(rate_per_s=1.0, burst=1, now=100.0)
    bucket.take(100.0)
    assert bucket.wait_s(50.0) == pytest.approx(1.0)


def test_a_daily_quota_starts_again_at_midnight_utc() -> None:
    quota = DailyQuota(limit=2)
    quota.take(NEAR_MIDNIGHT)
    quota.take(NEAR_MIDNIGHT)
    assert quota.wait_s(NEAR_MIDNIGHT) == pytest.approx(10.0)
    assert quota.wait_s(NEAR_MIDNIGHT + 10) == 0
    assert DailyQuota(limit=0).wait_s(NEAR_MIDNIGHT) == 0, "0 is no quota"


def test_the_look_to_book_window_counts_searches_in_the_trailing_window_until_a_booking() -> None:
    window = SearchWindow(limit=2, window_s=60.0)
    window.take(0.0)
    window.take(30.0)
    assert window.wait_s(31.0) == pytest.approx(29.0)
    assert window.wait_s(60.0) == 0, "the first search left the window"
    window.booked()
    window.take(61.0)
    assert window.wait_s(61.0) == 0


# ---- traffic control ----


async def test_a_client_over_its_rate_is_rate_limited_with_a_retry_after_and_recovers_after_it() -> None:
    clock = FakeClock()
    clients = ClientRegistry(Entitlement(), {"slow": Entitlement(rate_per_s=0.5, burst=2)})
    traffic = control(clients, clock)
    await let_through(traffic, "slow")
    await let_through(traffic, "slow")
    with pytest.raises(ClientRateLimited) as caught:
        await traffic.admit("slow")
    assert caught.value.code == "rate_limited"
    assert caught.value.retriable
    assert caught.value.retry_after_s == 2.0
    assert "0.5 searches/s (burst 2)" in caught.value.message
    clock.advance(caught.value.retry_after_s)
    await let_through(traffic, "slow")


async def test_a_client_past_its_daily_quota_gets_quota_exceeded_until_midnight_utc() -> None:
    clock = FakeClock(NEAR_MIDNIGHT - 5)
    traffic = control(ClientRegistry(Entitlement(), {"small": Entitlement(daily_quota=1)}), clock)
    await let_through(traffic, "small")
    with pytest.raises(QuotaExceeded) as caught:
        await traffic.admit("small")
    assert caught.value.code == "quota_exceeded"
    assert caught.value.retry_after_s == 15.0
    assert "daily quota of 1" in caught.value.message
    clock.advance(15)
    await let_through(traffic, "small")


async def test_searches_without_a_booking_past_the_look_to_book_budget_get_quota_exceeded() -> None:
    clock = FakeClock()
    allowance = Entitlement(look_to_book_searches=2, look_to_book_window_s=600)
    traffic = control(ClientRegistry(Entitlement(), {"looker": allowance}), clock)
    await let_through(traffic, "looker")
    clock.advance(100)
    await let_through(traffic, "looker")
    with pytest.raises(QuotaExceeded, match="look-to-book") as caught:
        await traffic.admit("looker")
    assert caught.value.retry_after_s == 500.0


async def test_a_refused_search_spends_nothing_of_the_allowance() -> None:
    clock = FakeClock(NEAR_MIDNIGHT + 5)
    allowance = Entitlement(daily_quota=1, rate_per_s=0.001, burst=2)
    traffic = control(ClientRegistry(Entitlement(), {"c": allowance}), clock)
    await let_through(traffic, "c")
    for _ in range(3):
        with pytest.raises(QuotaExceeded):
            await traffic.admit("c")
    clock.advance(5)  # a new UTC day; the bucket refilled next to nothing
    await let_through(traffic, "c")  # the token the refusals did not take


async def test_clients_the_registry_does_not_name_share_one_defaults_allowance() -> None:
    clock = FakeClock()
    traffic = control(ClientRegistry(Entitlement(rate_per_s=1, burst=2), {"vip": Entitlement()}), clock)
    await let_through(traffic, "anonymous")
    await let_through(traffic, "made-up-id")
    with pytest.raises(ClientRateLimited, match=r"\[defaults\] allowance"):
        await traffic.admit("another-made-up-id")
    await let_through(traffic, "vip")
    assert traffic.clients.allowance("nobody")[0] == DEFAULTS


async def test_the_bridge_sheds_searches_past_its_in_flight_cap_and_takes_them_again_once_replies_came() -> None:
    traffic = control(ClientRegistry(Entitlement()), FakeClock(), max_in_flight=2)
    first, second = await traffic.admit("a"), await traffic.admit("b")
    with first, second:
        assert traffic.in_flight == 2
        with pytest.raises(ClientRateLimited, match="JB_BRIDGE_MAX_IN_FLIGHT") as caught:
            await traffic.admit("c")
        assert caught.value.retry_after_s == 1.0
    assert traffic.in_flight == 0
    await let_through(traffic, "c")


# ---- airlines, fan-out, deadline ----


def serving_lhr_jfk() -> list[str]:
    return [a.code for a in AIRLINES.serving("LHR", "JFK")]


def test_a_search_naming_an_airline_the_client_may_not_search_is_refused_naming_it() -> None:
    allowance = Entitlement(airlines=("BA", "VS"))
    with pytest.raises(InvalidInput) as caught:
        choose_airlines("acme", allowance, AIRLINES, search(airlines=["BA", "AA"]))
    assert caught.value.field == "airlines"
    assert caught.value.reason.startswith("AA is not among the airlines client acme may search (BA, VS)")
    assert choose_airlines("acme", allowance, AIRLINES, search(airlines=["vs"])) == ["VS"]


def test_a_search_naming_more_airlines_than_the_fan_out_is_refused() -> None:
    with pytest.raises(InvalidInput, match="at most 2 airlines per search for client acme, got 3") as caught:
        choose_airlines("acme", Entitlement(max_fanout=2), AIRLINES, search(airlines=["BA", "AA", "VS"]))
    assert caught.value.field == "airlines"


def test_a_search_without_airlines_asks_the_allowed_ones_serving_the_route_in_the_clients_order() -> None:
    assert len(serving_lhr_jfk()) >= 3
    allowance = Entitlement(airlines=("VS", "QF", "BA", "AA"), max_fanout=2)
    # QF does not fly LHR-JFK non-stop: it costs no slot of the fan-out.
    assert choose_airlines("acme", allowance, AIRLINES, search()) == ["VS", "BA"]


def test_a_search_without_airlines_is_cut_to_the_fan_out_in_registry_order() -> None:
    assert choose_airlines("acme", Entitlement(max_fanout=2), AIRLINES, search()) == serving_lhr_jfk()[:2]
    assert choose_airlines("acme", Entitlement(max_fanout=60), AIRLINES, search()) is None, "the router's choice"


def test_airlines_that_will_not_answer_live_go_last_when_the_fan_out_is_cut() -> None:
    first, second, *rest = serving_lhr_jfk()
    failing = {first}  # its circuit is open: it would take a healthy airline's place
    chosen = choose_airlines("acme", Entitlement(max_fanout=2), AIRLINES, search(), failing.__contains__)
    assert chosen == [second, rest[0]]
    everyone = choose_airlines("acme", Entitlement(max_fanout=60), AIRLINES, search(), failing.__contains__)
    assert everyone is None, "no cut, no reordering: the router asks every airline and says why one was skipped"


def test_the_deadline_is_capped_per_client() -> None:
    clients = ClientRegistry(Entitlement(), {"quick": Entitlement(max_deadline_ms=2000)})
    traffic = control(clients, FakeClock())
    assert traffic.authorize("quick", search()).deadline_ms == 2000, "the process default is cut to the cap"
    assert traffic.authorize("quick", search(deadline_ms=1500)).deadline_ms == 1500
    with pytest.raises(InvalidInput, match="at most 2000 for client quick, got 5000") as caught:
        traffic.authorize("quick", search(deadline_ms=5000))
    assert caught.value.field == "deadline_ms"
    assert traffic.authorize("other", search(deadline_ms=5000)).deadline_ms == 5000


# ---- the registry file ----


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "clients.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_client_registry_loads() -> None:
    clients = load_clients(DEFAULT_CLIENTS, AIRLINES)
    assert clients.defaults.max_fanout >= len(AIRLINES)


def test_a_client_table_overrides_the_defaults_field_by_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[defaults]\nrate_per_s = 3\nburst = 6\n\n[clients.acme]\nairlines = ["BA", "VS"]\nburst = 1\n',
    )
    clients = load_clients(path, AIRLINES)
    name, acme = clients.allowance("acme")
    assert name == "acme"
    assert (acme.airlines, acme.rate_per_s, acme.burst) == (("BA", "VS"), 3.0, 1)
    assert clients.allowance("anonymous") == (DEFAULTS, clients.defaults)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[defaults]\nrate_per_sec = 3\n", "[defaults] has an unknown field 'rate_per_sec'"),
        ("[clients.acme]\nburst = 0\n", "[clients.acme] burst: must be >= 1, got 0"),
        ('[clients.acme]\nmax_fanout = "3"\n', "[clients.acme] max_fanout: expected int"),
        ('[clients.acme]\nairlines = ["BA", "ZZ"]\n', "[clients.acme] airlines: ZZ not in the airline registry"),
        ("[client.acme]\nburst = 1\n", "the file has an unknown table 'client'"),
    ],
)
def test_a_client_registry_that_cannot_work_stops_the_bridge_naming_the_table_and_field(
    tmp_path: Path, text: str, words: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_clients(write(tmp_path, text), AIRLINES)
    assert words in caught.value.message
    assert str(tmp_path) in caught.value.message


# ---- the service: refusals publish their audit record only ----


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    async def send(self, topic: str, *, key: str, value: Any, headers: object = None) -> None:
        self.sent.append((topic, value))


class PassThroughCodec:
    def encode(self, topic: str, event: object) -> object:
        return event


def service_with(clients: ClientRegistry, producer: RecordingProducer) -> SearchService:
    runtime = Runtime(
        Settings(),
        AIRLINES,
        cast(httpx.AsyncClient, None),
        cast(AvroCodec, PassThroughCodec()),
        cast(AsyncProducer, producer),
    )
    traffic = control(clients, FakeClock())
    return SearchService(runtime, cast(ReplyCorrelator, None), traffic=traffic)


async def test_a_refused_search_publishes_its_audit_record_and_nothing_else() -> None:
    producer = RecordingProducer()
    service = service_with(ClientRegistry(Entitlement(), {"broke": Entitlement(daily_quota=1)}), producer)
    await let_through(service.traffic, "broke")  # its one search of the day
    arguments = search(airlines=["BA"])
    with pytest.raises(QuotaExceeded):
        await service.search(arguments, client_id="broke")
    with pytest.raises(InvalidInput):
        await service.search({"origin": "LHR", "destination": "XQX", "departure_date": SOON}, client_id="typo")
    await service.drain()
    topics = {topic for topic, _ in producer.sent}
    assert topics == {service._topics.audit}, "no request event"
    records = [cast(AuditRecord, value) for _, value in producer.sent]
    assert [(r.client_id, r.tool, r.outcome, r.error_code) for r in records] == [
        ("broke", "search_offers", "quota_exceeded", "quota_exceeded"),
        ("typo", "search_offers", "invalid_input", "invalid_input"),
    ]
    assert records[0].arguments_sha256 == arguments_sha256(arguments)
    assert all(r.arguments_sha256 and len(r.arguments_sha256) == 64 for r in records)
    assert "LHR" not in repr(records), "never the arguments themselves"


def test_the_arguments_hash_is_canonical() -> None:
    assert arguments_sha256({"b": 1, "a": None, "c": "x"}) == arguments_sha256({"c": "x", "b": 1})
    assert arguments_sha256(search(origin="lhr")) == arguments_sha256(search(origin="LHR", adults=1))
    assert arguments_sha256(search(deadline_ms=2990)) == arguments_sha256(search()), "the deadline is left out"
    assert arguments_sha256(search(adults=2)) != arguments_sha256(search())


async def test_audit_records_past_the_pending_cap_are_dropped_not_held(monkeypatch: pytest.MonkeyPatch) -> None:
    import mcp_bridge.service as service_module

    class StuckProducer(RecordingProducer):
        async def send(self, topic: str, *, key: str, value: Any, headers: object = None) -> None:
            await asyncio.Event().wait()

    monkeypatch.setattr(service_module, "MAX_PENDING_AUDITS", 3)
    service = service_with(ClientRegistry(Entitlement(rate_per_s=1, burst=1)), StuckProducer())
    for _ in range(5):
        service.refused(InvalidInput("origin", "bad"), {}, client_id="c", started=asyncio.get_running_loop().time())
    assert service.audits_dropped == 2
    for task in list(service._audits):
        task.cancel()
    await asyncio.gather(*service._audits, return_exceptions=True)
