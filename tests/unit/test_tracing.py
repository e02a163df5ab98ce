"""Tracing (``jetbridge/tracing.py``, ``jetbridge/trace_view.py``): spans start from the ``traceparent`` of the
event handled and put their own on what they produce, so one search is one trace; the file exporter writes what
``jetbridge trace`` reads, and the command prints the trace as a tree, or says what to do when there is none."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from mcp import Client
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from connectors.resilience import AirlineGuard
from jetbridge import tracing
from jetbridge.cli import main
from jetbridge.errors import KafkaError
from jetbridge.kafka import decode_headers
from jetbridge.settings import Settings
from jetbridge.trace_view import build_trees, find_trace, read_spans
from mcp_bridge.server import build_server
from mcp_bridge.service import SearchResult, SearchService
from mcp_bridge.validation import SearchArguments
from schemas.models import ReplyStatus, SearchReply, now_utc
from streams.acks import InOrderAcks
from streams.aggregator import Aggregator
from tests.support import factories as f
from tests.support.router_context import TRACE, Context, route_recorded, router_codec
from tests.unit.test_cache_bridge import service_answering
from tests.unit.test_retry_policy import FakeClock, ScriptedAirline, airline, unavailable
from tests.unit.test_search_arguments import RULES, RecordingBackend, real_soon

TRACE_ID, PARENT_ID = TRACE.split("-")[1:3]
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-0[0-9a-f]$")


def ids(traceparent: str) -> tuple[str, str]:
    """The trace and parent span ids a traceparent names (its flags aside: W3C level 2 adds a random bit)."""
    found = TRACEPARENT.match(traceparent)
    assert found, traceparent
    return found[1], found[2]


Spans = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def spans(tmp_path: Path) -> Iterator[Spans]:
    """Tracing to span files in a temporary directory; the spans ended so far, as the files have them."""
    tracing.configure_tracing("file", process="test", traces_dir=tmp_path)

    def ended() -> list[dict[str, Any]]:
        tracing.flush_tracing()
        return read_spans(tmp_path)

    yield ended
    tracing.configure_tracing("off", process="test", traces_dir=tmp_path)


def named(records: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [r for r in records if r["name"].startswith(prefix)]


# ---- header in, header out ----
def test_a_span_started_from_a_traceparent_is_its_child_and_hands_on_its_own(spans: Spans) -> None:
    with tracing.span("work", parent=TRACE) as current:
        out = tracing.traceparent_of(current, TRACE)
    [record] = spans()
    assert (record["trace_id"], record["parent_id"]) == (TRACE_ID, PARENT_ID)
    assert ids(out) == (TRACE_ID, record["span_id"]), "what is produced names this span as its parent"


def test_a_span_without_a_traceparent_starts_a_trace_of_its_own(spans: Spans) -> None:
    with tracing.span("root") as current:
        out = tracing.traceparent_of(current)
    [record] = spans()
    assert record["parent_id"] is None
    assert ids(out) == (record["trace_id"], record["span_id"])


@pytest.mark.parametrize("header", ["", "garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"])
def test_a_missing_or_malformed_traceparent_is_no_parent(spans: Spans, header: str) -> None:
    assert tracing.parent_from(header) is None
    with tracing.span("root", parent=header):
        pass
    [record] = spans()
    assert record["parent_id"] is None


def test_with_tracing_off_the_incoming_header_goes_on_unchanged_or_a_fresh_one_is_made(tmp_path: Path) -> None:
    tracing.configure_tracing("off", process="test", traces_dir=tmp_path)
    with tracing.span("work", parent=TRACE) as current:
        assert tracing.traceparent_of(current, TRACE) == TRACE
        tracing.event("ignored")  # no span is recorded: nothing to add it to
    with tracing.span("root") as current:
        fresh = tracing.traceparent_of(current)
    assert TRACEPARENT.match(fresh)
    assert fresh != tracing.traceparent_of(current)
    assert not list(tmp_path.glob("*.jsonl")), "off writes no span file"


def test_the_file_exporter_writes_one_json_line_per_span_with_its_events_and_error(spans: Spans) -> None:
    def fail() -> None:
        with tracing.span("work", attributes={tracing.REQUEST_ID: "r-1"}):
            tracing.event("retry", attempt=2, wait_s=0.1, skipped=None)
            raise KafkaError("broker away")

    with pytest.raises(KafkaError):
        fail()
    [record] = spans()
    assert record["status"] == "ERROR"
    assert record["attributes"] == {tracing.REQUEST_ID: "r-1", "error.type": "kafka"}
    assert [(e["name"], e["attributes"]) for e in record["events"] if e["name"] == "retry"] == [
        ("retry", {"attempt": 2, "wait_s": 0.1})
    ]
    assert record["end_ns"] >= record["start_ns"] > 0


def test_otlp_without_an_endpoint_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        tracing.configure_tracing("otlp", process="test", traces_dir=tmp_path)


def test_otlp_sends_the_spans_to_the_collector_at_the_endpoint(tmp_path: Path) -> None:
    received: list[tuple[str, str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"], body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        tracing.configure_tracing(
            "otlp", process="test", traces_dir=tmp_path, otlp_endpoint=f"http://127.0.0.1:{server.server_port}/"
        )
        with tracing.span("tools/call search_offers", attributes={tracing.REQUEST_ID: "r-otlp"}):
            pass
        tracing.shutdown_tracing()
    finally:
        server.shutdown()
        server.server_close()
    [(path, content_type, body)] = received
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    exported = ExportTraceServiceRequest.FromString(body)
    [resource] = exported.resource_spans
    [service] = [a.value.string_value for a in resource.resource.attributes if a.key == "service.name"]
    [span] = [s for scope in resource.scope_spans for s in scope.spans]
    assert (service, span.name) == ("jetbridge-test", "tools/call search_offers")
    assert not list(tmp_path.glob("*.jsonl")), "otlp writes no span file"


def test_tracing_is_otlp_when_an_endpoint_is_set_and_off_otherwise() -> None:
    assert Settings().tracing_mode == "off", "no exporter configured: no spans (JB_TRACING=file asks for files)"
    assert Settings(JB_TRACING="file").tracing_mode == "file"
    assert Settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318").tracing_mode == "otlp"
    assert Settings(JB_TRACING="off", OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318").tracing_mode == "off"


# ---- parenting at each stage ----
class HeadersProducer:
    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []

    async def send(self, topic: str, *, key: str, value: Any, headers: Any = None) -> None:
        self.headers.append(decode_headers(headers))


def traced_service() -> tuple[SearchService, HeadersProducer]:
    """The bridge's search service on a recording producer, answered at once by a correlator double."""
    now = now_utc()
    reply = SearchReply(
        request_id="-",
        correlation_id="-",
        reply_to="bridge-test",
        status=ReplyStatus.COMPLETE,
        offers=[],
        airlines=[],
        deadline=now + timedelta(seconds=3),
        completed_at=now,
    )
    producer = HeadersProducer()
    return service_answering(reply, producer), producer


def request_headers_of(producer: HeadersProducer) -> dict[str, str]:
    [headers] = [h for h in producer.headers if "traceparent" in h and h.get("deadline_ms", "0") != "0"]
    return headers


async def test_the_bridges_tool_span_is_the_root_and_the_request_carries_its_traceparent(spans: Spans) -> None:
    service, producer = traced_service()
    await service.search({"origin": "LHR", "destination": "JFK", "departure_date": real_soon()}, client_id="c1")
    await service.drain()
    request_headers = request_headers_of(producer)
    [tool] = named(spans(), "tools/call")
    assert tool["name"] == "tools/call search_offers"
    assert (tool["kind"], tool["parent_id"], tool["status"]) == ("server", None, "UNSET")
    assert ids(request_headers["traceparent"]) == (tool["trace_id"], tool["span_id"])
    attributes = tool["attributes"]
    assert attributes["mcp.method.name"] == "tools/call"
    assert attributes["gen_ai.tool.name"] == "search_offers"
    assert attributes[tracing.REQUEST_ID] == request_headers["request_id"]
    assert attributes["jetbridge.reply.status"] == "COMPLETE"


class ServiceBackend(RecordingBackend):
    """The MCP server's backend on the real search service."""

    def __init__(self, service: SearchService) -> None:
        super().__init__(RULES)
        self.service = service

    async def search(self, arguments: SearchArguments, *, client_id: str) -> SearchResult:
        return await self.service.search(arguments, client_id=client_id)


CALLER_TRACE, CALLER_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("meta", "joined"),
    [
        ({"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}, True),
        ({"traceparent": "00-not-a-traceparent-01"}, False),
        (None, False),
    ],
)
async def test_a_caller_that_sends_its_traceparent_in_meta_gets_the_tool_span_as_its_child(
    spans: Spans, meta: dict[str, str] | None, joined: bool
) -> None:
    # The MCP SDK's own OpenTelemetry middleware makes the `_meta.traceparent` of a call the current context
    # (OTel's MCP conventions; its span records nothing, the process's tracer provider being ours, not global):
    # the bridge's tool span, started without an explicit parent, joins the caller's trace.
    service, producer = traced_service()
    arguments = {"origin": "LHR", "destination": "JFK", "departure_date": real_soon()}
    with anyio.fail_after(10):
        async with Client(build_server(ServiceBackend(service))) as client:
            result = await client.call_tool("search_offers", arguments, meta=cast(Any, meta))
    assert not result.is_error
    await service.drain()
    [tool] = named(spans(), "tools/call")
    if joined:
        assert (tool["trace_id"], tool["parent_id"]) == (CALLER_TRACE, CALLER_SPAN), "the caller's span is the parent"
    else:
        assert tool["parent_id"] is None, "no usable traceparent: the tool span starts its own trace"
        assert tool["trace_id"] != CALLER_TRACE
    # the hops after the bridge follow the tool span, in the caller's trace when it sent one
    assert ids(request_headers_of(producer)["traceparent"]) == (tool["trace_id"], tool["span_id"])


async def test_the_routers_span_is_the_requests_child_and_the_parent_of_every_call(spans: Spans) -> None:
    async with router_codec() as codec:
        ctx = Context(codec, {})
        request = f.search_request(request_id="req-t1", correlation_id="req-t1")
        sent, routed = await route_recorded(ctx, codec, request)
    [router] = named(spans(), "process jb.requests")
    assert (router["trace_id"], router["parent_id"], router["kind"]) == (TRACE_ID, PARENT_ID, "consumer")
    mine = (TRACE_ID, router["span_id"])
    assert sent, "the route has airlines"
    assert {ids(s.headers["traceparent"]) for s in sent} == {mine}
    assert ids(routed.headers["traceparent"]) == mine
    attributes = router["attributes"]
    assert attributes["messaging.system"] == "kafka"
    assert attributes["messaging.destination.name"] == ctx.names.requests
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.kafka.message.key"] == "req-t1"
    assert attributes["jetbridge.airlines.called"] == routed.plan.expected_airlines


class ReplyHarness:
    def __init__(self, refuse: bool = False) -> None:
        self.headers: list[dict[str, str]] = []
        self.refuse = refuse
        self.acks = InOrderAcks(ack=lambda _: None)
        self.core = Aggregator(send_reply=self.send, acks=self.acks, reply_window=timedelta(minutes=10))

    async def send(self, reply: SearchReply, headers: dict[str, str]) -> asyncio.Future[Any]:
        self.headers.append(headers)
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.refuse:
            delivery.set_exception(KafkaError("not enough replicas"))
        else:
            delivery.set_result(None)
        return delivery

    async def join(self) -> None:
        plan = f.plan(["BA"], request_id="req-a1")
        await self.core.on_plan(self.acks.hold("req", 0, 0, 0), 0, plan, {"client_id": "c1", "traceparent": TRACE})
        await self.core.on_response(self.acks.hold("resp", 0, 0, 0), 0, f.response("BA", request_id="req-a1"))
        for _ in range(3):
            await asyncio.sleep(0)


async def test_the_aggregators_span_joins_the_trace_and_the_reply_carries_it(spans: Spans) -> None:
    harness = ReplyHarness()
    await harness.join()
    [aggregate] = named(spans(), "aggregate")
    assert (aggregate["trace_id"], aggregate["parent_id"], aggregate["status"]) == (TRACE_ID, PARENT_ID, "UNSET")
    assert ids(harness.headers[0]["traceparent"]) == (TRACE_ID, aggregate["span_id"])
    assert harness.headers[0]["client_id"] == "c1", "the rest of the envelope is unchanged"
    attributes = aggregate["attributes"]
    assert (attributes[tracing.REQUEST_ID], attributes["jetbridge.reply.status"]) == ("req-a1", "COMPLETE")
    assert attributes["jetbridge.airlines.answered"] == ["BA"]


async def test_a_reply_the_broker_refuses_ends_the_aggregators_span_in_error(spans: Spans) -> None:
    harness = ReplyHarness(refuse=True)
    await harness.join()
    [aggregate] = named(spans(), "aggregate")
    assert (aggregate["status"], aggregate["attributes"]["error.type"]) == ("ERROR", "kafka")


async def test_retries_and_the_decision_that_ends_an_airline_call_are_events_of_its_span(spans: Spans) -> None:
    clock = FakeClock()
    attempt = ScriptedAirline(clock, [(0.05, unavailable())])
    with tracing.span("process jb.airline.ZZ.calls.v1"):
        outcome = await AirlineGuard(airline(), instance="w1", clock=clock).call(attempt, budget_s=3.0)
    assert outcome.attempts == 3
    [record] = spans()
    events = [(e["name"], e["attributes"]) for e in record["events"]]
    failed = ("attempt failed", {"error.type": "airline_unavailable"})
    assert events == [
        (failed[0], {"attempt": 1, **failed[1]}),
        ("retry", {"attempt": 2, "wait_s": 0.1}),
        (failed[0], {"attempt": 2, **failed[1]}),
        ("retry", {"attempt": 3, "wait_s": 0.2}),
        (failed[0], {"attempt": 3, **failed[1]}),
        ("call stopped", {"reason": "attempts_exhausted", "attempts": 3, "error.type": "airline_unavailable"}),
    ]


# ---- the tree and the command ----
def record(span_id: str, parent_id: str | None, name: str, start_ms: int, end_ms: int, **extra: Any) -> dict[str, Any]:
    return {
        "trace_id": TRACE_ID,
        "span_id": span_id,
        "parent_id": parent_id,
        "name": name,
        "kind": "internal",
        "service": extra.pop("service", "jetbridge-test"),
        "start_ns": start_ms * 1_000_000,
        "end_ns": end_ms * 1_000_000,
        "status": extra.pop("status", "UNSET"),
        "status_message": None,
        "attributes": extra.pop("attributes", {}),
        "events": extra.pop("events", []),
    }


def search_trace() -> list[dict[str, Any]]:
    rid = {tracing.REQUEST_ID: "req-9"}
    return [
        record("a" * 16, "b" * 16, "aggregate", 1_020, 1_300, attributes={**rid, "jetbridge.stage": "aggregator"}),
        record(
            "b" * 16, "c" * 16, "process jb.requests.v1", 1_010, 1_020, attributes={**rid, "jetbridge.stage": "router"}
        ),
        record("c" * 16, None, "tools/call search_offers", 1_000, 1_310, attributes=rid),
        record(
            "d" * 16,
            "b" * 16,
            "process jb.airline.AA.calls.v1",
            1_030,
            1_250,
            status="ERROR",
            attributes={
                **rid,
                "jetbridge.stage": "connector",
                "jetbridge.airline": "AA",
                "error.type": "airline_timeout",
            },
            events=[{"name": "retry", "time_ns": 1_100_000_000, "attributes": {"attempt": 2}}],
        ),
        record(
            "e" * 16,
            "b" * 16,
            "process jb.airline.BA.calls.v1",
            1_025,
            1_090,
            attributes={**rid, "jetbridge.airline": "BA"},
        ),
    ]


def write(path: Path, records: list[dict[str, Any]], junk: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + junk, encoding="utf-8")


def test_the_tree_nests_each_span_under_its_parent_in_start_order() -> None:
    [root] = build_trees(search_trace())
    assert root.record["name"] == "tools/call search_offers"
    [router] = root.children
    assert [c.record["name"] for c in router.children] == [
        "aggregate",
        "process jb.airline.BA.calls.v1",
        "process jb.airline.AA.calls.v1",
    ]


def test_a_span_whose_parent_is_not_in_the_files_is_shown_as_an_orphan_after_the_root() -> None:
    roots = build_trees([r for r in search_trace() if r["name"] != "process jb.requests.v1"])
    assert (roots[0].record["name"], roots[0].orphan) == ("tools/call search_offers", False)
    assert {r.record["name"] for r in roots[1:]} == {
        "aggregate",
        "process jb.airline.AA.calls.v1",
        "process jb.airline.BA.calls.v1",
    }
    assert all(r.orphan for r in roots[1:])


def test_only_the_trace_carrying_the_request_id_is_found(tmp_path: Path) -> None:
    other = record("f" * 16, None, "tools/call search_offers", 0, 1, attributes={tracing.REQUEST_ID: "req-other"})
    other["trace_id"] = "1" * 32
    write(tmp_path / "bridge-1.jsonl", [*search_trace(), other], junk='{"half a line')
    found = find_trace(read_spans(tmp_path), "req-9")
    assert len(found) == 5
    assert {s["trace_id"] for s in found} == {TRACE_ID}


def test_jetbridge_trace_prints_the_timeline_tree_of_a_search(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = search_trace()
    write(tmp_path / "bridge-1.jsonl", records[2:3])
    write(tmp_path / "streams-2.jsonl", records[:2])
    write(tmp_path / "connectors-3.jsonl", records[3:])
    assert main(["trace", "req-9", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert f"trace {TRACE_ID}" in lines[0]
    assert "5 spans" in lines[0]
    assert "310.0 ms" in lines[0]
    depth = {
        name: next(i for i, line in enumerate(lines) if name in line)
        for name in ("tools/call", "process jb.requests", "AA.calls", "retry")
    }
    assert depth["tools/call"] < depth["process jb.requests"] < depth["AA.calls"] < depth["retry"]
    aa = lines[depth["AA.calls"]]
    assert lines[depth["tools/call"]].rstrip().endswith("ok  jetbridge-test")
    assert "connector · AA" in aa
    assert "+30.0 ms" in aa
    assert "220.0 ms" in aa
    assert "ERROR airline_timeout" in aa
    assert "attempt=2" in lines[depth["retry"]]
    assert "+100.0 ms" in lines[depth["retry"]]
    indent = [
        len(line) - len(line.lstrip("│ ├└─"))
        for line in (lines[depth["tools/call"]], lines[depth["process jb.requests"]], aa)
    ]
    assert indent[0] < indent[1] < indent[2], "each stage nested under its parent"


def test_jetbridge_trace_says_what_to_do_when_no_span_carries_the_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "bridge-1.jsonl", search_trace())
    assert main(["trace", "req-unknown", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("jetbridge trace: no span carries request id req-unknown")
    assert "search answered" in err
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in err


def test_jetbridge_trace_says_how_to_get_span_files_when_there_are_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["trace", "req-9", "--dir", str(tmp_path / "missing")]) == 1
    assert "JB_TRACING is file" in capsys.readouterr().err


def test_a_span_file_past_its_size_is_rotated_once(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from jetbridge.tracing import JsonLinesExporter

    path = tmp_path / "bridge-1.jsonl"
    exporter = JsonLinesExporter(path, max_bytes=4000)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for i in range(60):
        with tracer.start_as_current_span(f"span-{i}"):
            pass
    provider.shutdown()
    rotated = tmp_path / "bridge-1.1.jsonl"
    assert rotated.exists()
    assert path.stat().st_size <= 4000
    assert rotated.stat().st_size <= 4000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bridge-1.1.jsonl", "bridge-1.jsonl"]


def test_a_tool_span_whose_parent_is_the_callers_is_shown_as_such_not_as_lost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = search_trace()
    [tool] = [r for r in records if r["name"].startswith("tools/call")]
    tool["parent_id"] = CALLER_SPAN  # the agent's span: in its own tracer's backend, never in our files
    write(tmp_path / "bridge-1.jsonl", records)
    assert main(["trace", "req-9", "--dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    [tool_line] = [line for line in lines if "tools/call" in line]
    assert "child of the MCP client's span" in tool_line
    assert not any("parent span not in the files" in line for line in lines)
