"""The simulated airlines count the calls they receive in Prometheus text, as an airline's monitoring would."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors.base import build_connector
from jetbridge.errors import AirlineUnavailable
from jetbridge.http import build_http_client
from tests.integration.simulators_fixture import control_client, running_simulators
from tests.support import factories as f


def calls_by(text: str) -> dict[tuple[str, str], float]:
    return {
        (s.labels["airline"], s.labels["answer"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "jb_sim_calls_total"
    }


async def test_metrics_count_each_airlines_calls_by_answer() -> None:
    async with running_simulators(["BA", "VS"]) as sims, control_client(sims) as control:
        http = build_http_client()
        ba = build_connector(sims.airline("BA"), http)
        try:
            await ba.search(f.criteria(), request_id="m-1", timeout_s=5)
            await ba.search(f.criteria(), request_id="m-2", timeout_s=5)
            assert (await control.put("/airlines/BA", json={"fault": "http_500"})).status_code == 200
            with pytest.raises(AirlineUnavailable):
                await ba.search(f.criteria(), request_id="m-3", timeout_s=5)
            answer = await control.get("/metrics")
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/plain")
            counted = calls_by(answer.text)
            assert counted[("BA", "served")] == 2
            assert counted[("BA", "http_500")] == 1
            assert not any(airline == "VS" for airline, _ in counted), "VS was never called"
        finally:
            await ba.aclose()
            await http.aclose()
