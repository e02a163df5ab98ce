"""No secret reaches a log line, a dead letter, an audit record or a reply (promise 5; issue 9).

A stack of its own (home, ports and topic prefix) runs with real-looking airline credentials in its
environment. Searches go through every failure path that writes something about an airline call (an airline
refusing connections, one answering malformed bodies, one answering 500, a refused tool call), with the
agents' credentials too: a bearer token, an API key made by `jetbridge keys create`, and tokens the bridge
refuses (forged, revoked). Then every log file of the stack and every record on every topic those searches
went through (requests, each airline's calls, responses, airline health, replies, DLQ, audit) is searched for
all of them. The simulators see the airline keys (they are the airlines), so their own log is left out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from infra.stack.backends import Infra
from jetbridge.settings import Settings
from jetbridge.topics import (
    AIRLINE_HEALTH,
    AIRLINE_RESPONSES,
    AUDIT,
    DLQ,
    REPLIES,
    REQUESTS,
    airline_calls_topic,
)
from mcp_bridge.agent import open_agent
from tests.conftest import PORT_SHIFT
from tests.e2e.conftest import Stack, call_tool, error_text, running_stack
from tests.support.kafka_tools import KafkaProbe

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

PREFIX = "leaks."
BRIDGE_PORT = 18380 + PORT_SHIFT
SIM_CONTROL_PORT = 19380 + PORT_SHIFT
HEALTH_PORT_BASE = 18700 + PORT_SHIFT
AIRLINE_PORT_SHIFT = 10600 + PORT_SHIFT  # 9201 -> 19801

SECRETS = {code: f"sk-live-{code.lower()}-7f3a9c2e4b1d8e60" for code in ("BA", "AA", "VS", "DL", "AY")}


@pytest.fixture(scope="module")
def secret_stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    credentials = {f"JB_CREDENTIAL_{code}": value for code, value in SECRETS.items()}
    with running_stack(
        infra,
        tmp_path_factory.mktemp("secrets"),  # a home of its own: its logs hold this run only
        bridge_port=BRIDGE_PORT,
        control_port=SIM_CONTROL_PORT,
        health_port_base=HEALTH_PORT_BASE,
        airline_port_shift=AIRLINE_PORT_SHIFT,
        JB_TOPIC_PREFIX=PREFIX,
        **credentials,
    ) as started:
        yield started


def _search(**overrides: object) -> dict[str, object]:
    from tests.e2e.test_search import search_args

    return search_args(**overrides)


def _api_key(stack: Stack, client: str) -> str:
    made = stack.jetbridge("keys", "create", "--client", client, timeout=60)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


async def test_credentials_appear_in_no_log_line_dead_letter_audit_record_or_reply(
    secret_stack: Stack, settings: Settings
) -> None:
    revoked = _api_key(secret_stack, "leak-bot-old")
    assert secret_stack.jetbridge("keys", "revoke", revoked.split("_")[1]).returncode == 0
    agent_secrets = {
        "agent token": secret_stack.token(),
        "API key": _api_key(secret_stack, "leak-bot"),
        "forged token": secret_stack.token()[:-12] + "forgedforged",
        "revoked API key": revoked,
    }
    secrets = SECRETS | agent_secrets
    async with httpx.AsyncClient(base_url=secret_stack.control_url, timeout=10, trust_env=False) as sims:
        await sims.put("/airlines/AA", json={"fault": "refuse"})
        await sims.put("/airlines/VS", json={"fault": "malformed"})
        await sims.put("/airlines/DL", json={"fault": "http_500"})
        try:
            answered = [await call_tool(secret_stack, "search_offers", _search()) for _ in range(3)]
            refused = await call_tool(secret_stack, "search_offers", _search(origin="XQX"))
            async with open_agent(secret_stack.bridge_url, token=agent_secrets["API key"]) as machine:
                by_key = await machine.call_tool("search_offers", _search())
            for bad in ("forged token", "revoked API key"):
                with pytest.raises(Exception):  # noqa: B017, PT011 - refused at the HTTP layer (401)
                    async with open_agent(secret_stack.bridge_url, token=agent_secrets[bad]) as client:
                        await client.call_tool("list_airlines", {})
        finally:
            await sims.post("/reset")
    assert not by_key.is_error
    assert [error_text(r) for r in answered if r.is_error] == []
    assert refused.is_error
    statuses = {a["airline"]: a["status"] for a in answered[-1].structured_content["airlines"]}
    assert statuses["BA"] == "ok"
    assert {statuses[c] for c in ("AA", "VS", "DL")} <= {"error", "timeout", "circuit_open"}, statuses

    probe = KafkaProbe(settings)
    leaks: list[str] = []
    # Every topic an event of these searches went through: the agent's token must stay at the bridge (events
    # carry the client id), the airlines' credentials in the connectors.
    topics = [REQUESTS, AIRLINE_RESPONSES, AIRLINE_HEALTH, REPLIES, DLQ, AUDIT]
    for topic in [*topics, *(airline_calls_topic(code) for code in SECRETS)]:
        name = PREFIX + topic
        since = dict.fromkeys(await probe.end_offsets(name), 0)
        records = await probe.read_since(name, since, until_s=3)
        if topic == DLQ:
            assert records, "the malformed answers were dead-lettered (the path that quotes airline errors)"
        for record in records:
            raw = bytes(record.value() or b"").decode("utf-8", "replace") + repr(KafkaProbe.headers(record))
            leaks += [f"{name}: {what}" for what, secret in secrets.items() if secret in raw]
    await asyncio.sleep(0.5)  # let the processes' last lines reach their files
    logs = [p for p in (secret_stack.home / "logs").glob("*.log") if p.name != "simulators.log"]
    assert {p.stem.split("-")[0] for p in logs} >= {"bridge", "streams", "connectors"}
    for path in logs:
        text = path.read_text(encoding="utf-8", errors="replace")
        leaks += [f"{path.name}: {what}" for what, secret in secrets.items() if secret in text]
    assert leaks == [], f"credentials found: {leaks}"
