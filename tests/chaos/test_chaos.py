"""Chaos on real processes and the real broker, each scenario bounded in time and printing its counts.

Invariant after every scenario: every request the bridge published has exactly one reply on the reply
topic (none lost, none duplicated), and every agent got a result or a clear error by its deadline plus
the grace. Run alone with `pytest tests/chaos -s` to see the counts.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from infra.stack.backends import Infra
from mcp_bridge.service import REPLY_GRACE_S
from tests.chaos.conftest import ChaosStack, Counts, Outcome, kafka_script, report

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.kafka]

FAST = ("BA", "AA", "VS")
SLOW = ("DL", "AY")


def assert_invariant(counts: Counts, outcomes: list[Outcome], scenario: str, *, slack_s: float = 0.25) -> None:
    """No request lost or answered twice, and every agent answered by its deadline plus the bridge's grace plus
    ``slack_s`` (measured at the agent: the MCP round trip and the load generator's own scheduling)."""
    report(counts.line(scenario))
    assert counts.lost == [], f"requests without a reply: {counts.lost}"
    assert counts.duplicated == [], f"requests with more than one reply: {counts.duplicated}"
    late = [o for o in outcomes if o.elapsed_s > o.deadline_s + REPLY_GRACE_S + slack_s]
    assert late == [], f"agents kept waiting past deadline + grace: {[round(o.elapsed_s, 2) for o in late]}"
    for outcome in outcomes:
        assert outcome.status is not None or outcome.error_code == "backbone_unavailable", outcome


async def test_kill_9_of_the_connector_worker_while_20_searches_are_in_flight(chaos: ChaosStack) -> None:
    chaos.up("streams=1,connectors=1")
    # Every airline answers in about a second, so all 20 searches have calls in flight at the kill.
    await chaos.airlines(**{code: {"latency_ms": 1000, "jitter_ms": 0} for code in FAST + SLOW})
    marks = await chaos.marks()
    searches = asyncio.create_task(chaos.searches(20, rate_per_s=40, deadline_ms=6000))
    await asyncio.sleep(0.8)
    killed_at = time.monotonic()
    old = chaos.kill("connectors-1")
    back = await chaos.healthy_again("connectors-1", old)
    outcomes = await searches
    await chaos.airlines()
    resumed = await chaos.first_complete_after(killed_at)
    counts = await chaos.counts(marks, outcomes)
    report(
        f"[chaos] connector restarted and healthy {back:.1f} s after kill -9; "
        f"complete searches again after {resumed:.1f} s"
    )
    assert_invariant(counts, outcomes, "kill -9 connector, 20 in flight")
    assert counts.requests_in >= 20  # and the probes that timed the resumption
    assert resumed <= 10.0
    assert counts.agents["complete"] >= 15, "calls in flight were replayed to the restarted worker, not lost"


async def test_kill_9_of_the_stream_worker_after_three_of_five_airlines_answered(chaos: ChaosStack) -> None:
    chaos.up("streams=1,connectors=1")
    # DL and AY answer after 1.5 s (inside their 2.5 s call timeout); BA, AA and VS within 0.2 s.
    await chaos.airlines(**{code: {"latency_ms": 1500, "jitter_ms": 0} for code in SLOW})
    marks = await chaos.marks()
    searches = asyncio.create_task(chaos.searches(10, rate_per_s=40, deadline_ms=6000))
    await asyncio.sleep(0.9)  # BA, AA and VS have answered; DL and AY are still on their way
    killed_at = time.monotonic()
    old = chaos.kill("streams-1")
    back = await chaos.healthy_again("streams-1", old)
    outcomes = await searches
    await chaos.airlines()
    resumed = await chaos.first_complete_after(killed_at)
    counts = await chaos.counts(marks, outcomes)
    report(
        f"[chaos] streams restarted and healthy {back:.1f} s after kill -9; "
        f"complete searches again after {resumed:.1f} s"
    )
    assert_invariant(counts, outcomes, "kill -9 streams after 3 of 5 answered")
    assert counts.agents["complete"] == 10, "the three early answers survived the crash"
    assert resumed <= 10.0


async def test_kill_9_of_the_stream_worker_while_idle_after_a_burst(chaos: ChaosStack) -> None:
    chaos.up("streams=1,connectors=1")
    marks = await chaos.marks()
    outcomes = await chaos.searches(40, rate_per_s=10)
    killed_at = time.monotonic()
    old = chaos.kill("streams-1")
    back = await chaos.healthy_again("streams-1", old)
    resumed = await chaos.first_complete_after(killed_at)
    await asyncio.sleep(3.0)  # whatever the new worker replays, it has replayed now
    counts = await chaos.counts(marks, outcomes)
    report(f"[chaos] streams healthy again {back:.1f} s after kill -9; complete searches again after {resumed:.1f} s")
    assert_invariant(counts, outcomes, "kill -9 streams idle after a burst of 40")
    assert counts.agents["complete"] == 40
    assert resumed <= 10.0


async def test_two_stream_and_two_connector_workers_answer_every_search(chaos: ChaosStack) -> None:
    chaos.up("streams=2,connectors=2")
    marks = await chaos.marks()
    outcomes = await chaos.searches(100, rate_per_s=10)
    counts = await chaos.counts(marks, outcomes)
    assert_invariant(counts, outcomes, "two of each, 100 searches at 10/s")
    assert counts.agents["complete"] == 100


async def test_one_of_two_stream_and_connector_workers_killed_under_load(chaos: ChaosStack) -> None:
    chaos.up("streams=2,connectors=2")
    marks = await chaos.marks()
    searches = asyncio.create_task(chaos.searches(100, rate_per_s=10))
    await asyncio.sleep(4.0)
    killed_at = time.monotonic()
    old_streams = chaos.kill("streams-2")
    old_connectors = chaos.kill("connectors-2")
    await chaos.healthy_again("streams-2", old_streams)
    await chaos.healthy_again("connectors-2", old_connectors)
    outcomes = await searches
    counts = await chaos.counts(marks, outcomes)
    # Measured at the agent while a killed stream worker and connector restart on this 2-core machine, competing
    # with the bridge and the load generator: agents were answered in 4.0-4.3 s in 3 of 6 runs of 2026-11-26 and
    # once in 4.56 s, while the bridge held those searches at most 3.68 s (its audit records and logs; it gives up
    # at deadline + grace, 3.75 s): the extra time was spent outside the bridge's application, in HTTP transport and
    # the load generator. So the agents' bound here only says nobody hangs (1.5 s of slack), and the bridge's own
    # bound is checked strictly from its audit records.
    held = await chaos.bridge_durations_ms(marks)
    report(
        f"[chaos] one of two killed: the bridge held searches {max(held)} ms at most, the agents waited "
        f"{max(o.elapsed_s for o in outcomes) * 1000:.0f} ms at most (deadline 3000 ms)"
    )
    assert_invariant(counts, outcomes, "one of two streams and connectors killed at 10/s", slack_s=1.5)
    assert len(held) >= len(outcomes)
    assert max(held) <= 3000 + REPLY_GRACE_S * 1000 + 100, "the bridge answers by the deadline plus its grace"
    after = sorted(o.started_at - killed_at for o in outcomes if o.status == "complete" and o.started_at > killed_at)
    gap = after[0] if after else float("inf")
    report(f"[chaos] first search started after the kill that came back complete: +{gap:.1f} s")
    assert gap <= 10.0
    chaos.up("streams=1,connectors=1")


async def test_broker_stopped_for_15_s_under_light_load(chaos: ChaosStack, test_home: Path, infra: Infra) -> None:
    if infra.backend != "local":
        pytest.skip(f"stopping the broker needs the local Kafka process (backend is {infra.backend})")
    chaos.up("streams=1,connectors=1")
    marks = await chaos.marks()
    searches = asyncio.create_task(chaos.searches(60, rate_per_s=2))
    await asyncio.sleep(5.0)
    # In a thread: the agents share this event loop, and their clocks must keep running meanwhile.
    assert (await asyncio.to_thread(kafka_script, "stop", test_home, infra)).returncode == 0
    stopped_at = time.monotonic()
    await asyncio.sleep(15.0)
    assert (await asyncio.to_thread(kafka_script, "start", test_home, infra)).returncode == 0
    report(f"[chaos] broker back after {time.monotonic() - stopped_at:.1f} s")
    outcomes = await searches
    resumed = await chaos.first_complete_after(time.monotonic(), limit_s=60)
    counts = await chaos.counts(marks, outcomes, settle_s=30)
    unavailable = [o for o in outcomes if o.error_code == "backbone_unavailable"]
    worst = max(o.elapsed_s - o.deadline_s for o in outcomes)
    report(
        f"[chaos] broker down: {len(unavailable)} agents told backbone_unavailable, worst answer "
        f"{worst:+.2f} s past the deadline; complete searches {resumed:.1f} s after the broker was back"
    )
    assert_invariant(counts, outcomes, "broker stopped 15 s at 2/s")
    assert unavailable, "searches during the outage got the clear error"
    assert worst <= 1.0


async def test_poison_on_every_input_topic_is_dead_lettered_and_searches_go_on(chaos: ChaosStack) -> None:
    from jetbridge.kafka import AsyncProducer

    chaos.up("streams=1,connectors=1")
    dlq_before = await chaos.probe.end_offsets(chaos.names.dlq)
    topics = {
        chaos.names.requests: "router",
        chaos.names.control: "aggregator",
        chaos.names.responses: "aggregator",
        chaos.names.calls("BA"): "connector.BA",
    }
    producer = AsyncProducer({"bootstrap.servers": chaos.settings.kafka_bootstrap_servers})
    try:
        for topic in topics:
            await producer.send(
                topic, key=b"poison", value=b"\x00\x00\x00\x00\x09 poison", headers=[("request_id", b"poison")]
            )
    finally:
        await producer.close()

    def all_four(messages: list[object]) -> bool:
        return len(messages) >= len(topics)

    letters = await chaos.probe.read_since(chaos.names.dlq, dlq_before, until_s=20, want=all_four)  # type: ignore[arg-type]
    seen = {(chaos.probe.headers(m)["dlq.original_topic"], chaos.probe.headers(m)["dlq.stage"]) for m in letters}
    report(f"[chaos] poison: {len(topics)} sent, {len(letters)} dead-lettered")
    assert seen == set(topics.items())
    marks = await chaos.marks()
    outcomes = await chaos.searches(5, rate_per_s=5)
    counts = await chaos.counts(marks, outcomes)
    assert_invariant(counts, outcomes, "poison on every input topic")
    assert counts.agents["complete"] == 5
