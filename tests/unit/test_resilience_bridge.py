"""What an agent sees of the airlines' circuit breakers through list_airlines."""

from __future__ import annotations

from jetbridge.airlines import load_registry
from mcp_bridge.airline_health import CircuitView
from mcp_bridge.server import airline_infos


class Circuits:
    def __init__(self, views: dict[str, CircuitView]) -> None:
        self.views = views

    def circuit(self, airline: str) -> CircuitView:
        return self.views.get(airline, CircuitView("closed"))


def test_list_airlines_shows_each_airlines_circuit_and_when_it_will_be_probed() -> None:
    views = {
        "VS": CircuitView(
            "open", since="2026-11-25T10:00:00.000+00:00", next_probe_at="2026-11-25T10:00:10.000+00:00", reason="x"
        ),
        "DL": CircuitView("half_open", since="2026-11-25T10:00:10.000+00:00"),
    }
    infos = {i.code: i for i in airline_infos(load_registry(), Circuits(views))}
    assert (infos["VS"].status, infos["VS"].circuit, infos["VS"].next_probe_at) == (
        "circuit_open",
        "open",
        "2026-11-25T10:00:10.000+00:00",
    )
    assert infos["VS"].circuit_reason == "x"
    assert (infos["DL"].status, infos["DL"].circuit) == ("half_open", "half_open")
    assert (infos["BA"].status, infos["BA"].circuit, infos["BA"].next_probe_at) == ("active", "closed", None)


def test_without_a_health_view_every_circuit_shows_closed() -> None:
    assert {i.circuit for i in airline_infos(load_registry())} == {"closed"}
