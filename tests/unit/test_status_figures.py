"""`jetbridge status` summarises what each process counted, from its real /metrics text."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from infra.stack.figures import summarise


def test_a_connector_workers_metrics_read_as_a_few_words() -> None:
    registry = CollectorRegistry()
    calls = Counter("jb_airline_calls", "", ["airline", "outcome"], registry=registry)
    calls.labels("BA", "ok").inc(40)
    calls.labels("VS", "circuit_open").inc(7)
    circuit = Gauge("jb_circuit_state", "", ["airline"], registry=registry)
    circuit.labels("BA").set(0)
    circuit.labels("VS").set(2)
    Gauge("jb_consumer_lag", "", ["group", "topic"], registry=registry).labels("g", "t").set(3)
    text = generate_latest(registry).decode()
    assert summarise(text) == "airline calls 47 (ok 40, circuit_open 7) · circuit open: VS · lag 3"


def test_a_process_that_counted_nothing_says_so() -> None:
    assert summarise("") == "nothing counted yet"


def test_an_unlabelled_counter_reads_as_its_total() -> None:
    registry = CollectorRegistry()
    Counter("jb_requests_routed", "", registry=registry).inc(510)
    assert summarise(generate_latest(registry).decode()) == "routed 510"
