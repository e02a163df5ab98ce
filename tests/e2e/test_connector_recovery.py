"""After a burst of calls that all time out, the connectors still reach their airlines (simulators in
their own process, as in production).

Regression: cancelling httpx requests with a cancel scope (anyio.fail_after / asyncio.timeout) left every
pooled connection stuck "in use", so after one overload every later call of that airline timed out.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest

from connectors.base import build_connector
from jetbridge.airlines import load_registry
from jetbridge.errors import AirlineError
from jetbridge.http import build_http_client
from tests.e2e.conftest import Stack
from tests.support import factories as f

pytestmark = pytest.mark.e2e


async def test_http_connectors_answer_again_after_a_burst_of_timeouts(
    stack: Stack, simulators: httpx.AsyncClient
) -> None:
    codes = ("BA", "AA", "VS", "DL")  # every HTTP airline, at their usual 90-180 ms (+/- 30 ms)
    registry = load_registry(Path(stack.env["JB_AIRLINES_FILE"]))
    http = build_http_client(max_connections=20)
    connectors = {code: build_connector(registry[code], http) for code in codes}

    async def call(code: str, budget: float) -> str:
        try:
            await connectors[code].search(f.criteria(), request_id="burst", timeout_s=budget)
        except AirlineError as exc:
            return exc.code
        return "ok"

    try:
        # Budgets from 30 to 210 ms: calls cancelled while queued for a connection, connecting, waiting
        # for headers and reading the body.
        burst = await asyncio.gather(*(call(code, 0.03 + (i % 10) * 0.02) for i in range(100) for code in codes))
        assert Counter(burst)["airline_timeout"] > 300, Counter(burst)
        after = await asyncio.gather(*(call(code, 3.0) for code in codes for _ in range(2)))
        assert after == ["ok"] * 8, "the pool recovered: every connection is usable again"
    finally:
        for connector in connectors.values():
            await connector.aclose()
        await http.aclose()
