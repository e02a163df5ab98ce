"""Tracing: OpenTelemetry spans for every hop of a search, joined across Kafka by the ``traceparent`` header.

One trace per search: the bridge's tool span is its root, and the ``traceparent`` it puts on the request is that
span's. Every stage starts its span from the ``traceparent`` of the event it handles and writes its own span's
on what it produces, so the router's span is the parent of each airline call's span (through the call event)
and of the aggregator's. Attribute names follow OpenTelemetry's semantic conventions: MCP (``mcp.method.name``,
``gen_ai.tool.name``, ``gen_ai.operation.name``) and messaging (``messaging.system``,
``messaging.destination.name``, ``messaging.operation.type``, ``messaging.kafka.message.key``...); what is
ours is under ``jetbridge.``.

Exporters (``JB_TRACING``): ``file`` writes one JSON line per span to ``$JB_HOME/traces/<process>-<pid>.jsonl``
(what ``jetbridge trace`` reads); ``console`` prints spans; ``otlp`` sends them over OTLP/HTTP to
``OTEL_EXPORTER_OTLP_ENDPOINT`` (set, it turns ``otlp`` on by itself); ``off`` makes no spans, and the headers
carry what they carried before. Spans leave through a batch processor: the hot path only queues them.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from jetbridge.kafka import HEADER_TRACEPARENT, new_traceparent
from jetbridge.settings import Settings

__all__ = [
    "REQUEST_ID",
    "JsonLinesExporter",
    "Span",
    "SpanKind",
    "TracingMode",
    "annotate",
    "configure_from_settings",
    "configure_tracing",
    "end_span",
    "event",
    "flush_tracing",
    "messaging",
    "parent_from",
    "shutdown_tracing",
    "span",
    "span_record",
    "start_span",
    "traceparent_of",
    "tracer",
]

TracingMode = Literal["off", "file", "console", "otlp"]

# Ours: the request every span of a search carries, so `jetbridge trace <request_id>` finds its trace.
REQUEST_ID = "jetbridge.request.id"

_PROPAGATOR = TraceContextTextMapPropagator()
_NOOP = trace.NoOpTracer()
_provider: TracerProvider | None = None


def _kind_name(kind: SpanKind) -> str:
    return kind.name.lower()


def span_record(span: ReadableSpan) -> dict[str, object]:
    """One finished span as the JSON object the file exporter writes (and ``jetbridge trace`` reads)."""
    ctx = span.get_span_context()
    parent = span.parent
    assert ctx is not None, "a finished SDK span always has a context"
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
        "name": span.name,
        "kind": _kind_name(span.kind),
        "service": str(span.resource.attributes.get("service.name", "")),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "status_message": span.status.description,
        "attributes": dict(span.attributes or {}),
        "events": [
            {"name": e.name, "time_ns": e.timestamp, "attributes": dict(e.attributes or {})} for e in span.events
        ],
    }


class JsonLinesExporter(SpanExporter):
    """Appends each span as one JSON line to a file of this process's own (no two writers share a file). Past
    ``max_bytes`` the file becomes ``<name>.1.jsonl`` (the one before is dropped) and a new one starts, so a long
    run keeps at most twice that per process (a search is about 8 spans of 1 kB)."""

    def __init__(self, path: Path, *, max_bytes: int = 64 * 2**20) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._file: IO[str] | None = path.open("a", encoding="utf-8")
        self._written = path.stat().st_size

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_record(s), default=str) + "\n" for s in spans)
        with self._lock:
            if self._file is None:
                return SpanExportResult.FAILURE
            if self._written + len(lines) > self._max_bytes and self._written > 0:
                self._file.close()
                self.path.replace(self.path.with_suffix(".1.jsonl"))
                self._file = self.path.open("a", encoding="utf-8")
                self._written = 0
            self._file.write(lines)
            self._file.flush()
            self._written += len(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _exporter(mode: TracingMode, process: str, traces_dir: Path, otlp_endpoint: str | None) -> SpanExporter:
    if mode == "file":
        return JsonLinesExporter(traces_dir / f"{process}-{os.getpid()}.jsonl")
    if mode == "console":
        return ConsoleSpanExporter(service_name=process)
    if not otlp_endpoint:
        raise ValueError("JB_TRACING=otlp needs OTEL_EXPORTER_OTLP_ENDPOINT (for example http://127.0.0.1:4318)")
    # Imported here: only a process that exports over OTLP pays for protobuf.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # The exporter reads the standard OTEL_EXPORTER_OTLP_* variables itself (headers, timeout, compression);
    # the endpoint is the base URL, to which the traces path is added.
    return OTLPSpanExporter(endpoint=otlp_endpoint.rstrip("/") + "/v1/traces")


def configure_tracing(
    mode: TracingMode,
    *,
    process: str,
    traces_dir: Path,
    otlp_endpoint: str | None = None,
    schedule_delay_ms: int = 500,
) -> TracerProvider | None:
    """Set this process's tracing up once, at its edge; a second call replaces the first (tests)."""
    global _provider
    shutdown_tracing()
    if mode == "off":
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": f"jetbridge-{process}"}), shutdown_on_exit=True)
    # A short delay: `jetbridge trace` right after a search should find its spans; the queue keeps it cheap.
    processor = BatchSpanProcessor(
        _exporter(mode, process, traces_dir, otlp_endpoint), schedule_delay_millis=schedule_delay_ms
    )
    provider.add_span_processor(processor)
    _provider = provider
    return provider


def shutdown_tracing() -> None:
    """Export what is queued and stop (at exit this happens by itself)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def flush_tracing() -> None:
    """Export every span ended so far, now."""
    if _provider is not None:
        _provider.force_flush()


def tracer() -> trace.Tracer:
    """Jetbridge's tracer: a no-op one while tracing is off."""
    return _provider.get_tracer("jetbridge") if _provider is not None else _NOOP


def parent_from(traceparent: str | None) -> Context | None:
    """The remote parent a ``traceparent`` header names; None when there is none (or it is malformed)."""
    if not traceparent:
        return None
    ctx = _PROPAGATOR.extract({HEADER_TRACEPARENT: traceparent})
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def traceparent_of(current: Span, fallback: str | None = None) -> str:
    """The ``traceparent`` to put on what ``current``'s work produces: the span's own; when no span is recorded
    (tracing off), ``fallback`` (the incoming header) or a fresh one, as before tracing existed."""
    ctx = current.get_span_context()
    if ctx.is_valid and current.is_recording():
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, trace.set_span_in_context(current))
        return carrier[HEADER_TRACEPARENT]
    return fallback or new_traceparent()


@contextmanager
def span(
    name: str,
    *,
    parent: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, AttributeValue] | None = None,
    start_ns: int | None = None,
) -> Iterator[Span]:
    """A span that is current inside the block, child of the ``parent`` traceparent when given (else of the
    current span); an exception leaving the block marks it ERROR with ``error.type``."""
    ctx = parent_from(parent)
    with tracer().start_as_current_span(
        name,
        context=ctx,
        kind=kind,
        attributes=attributes,
        start_time=start_ns,
        record_exception=True,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_attribute("error.type", getattr(exc, "code", None) or type(exc).__qualname__)
            current.set_status(Status(StatusCode.ERROR, str(exc) or type(exc).__qualname__))
            raise


def start_span(
    name: str,
    *,
    parent: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, AttributeValue] | None = None,
    start_ns: int | None = None,
) -> Span:
    """A span the caller ends itself (one that ends in a callback, not at the end of a block)."""
    return tracer().start_span(name, context=parent_from(parent), kind=kind, attributes=attributes, start_time=start_ns)


def end_span(current: Span, error: BaseException | None = None, **attributes: AttributeValue) -> None:
    """End ``current``, marked ERROR with ``error.type`` when ``error`` is given."""
    if attributes:
        current.set_attributes(attributes)
    if error is not None:
        current.set_attribute("error.type", getattr(error, "code", None) or type(error).__qualname__)
        current.set_status(Status(StatusCode.ERROR, str(error) or type(error).__qualname__))
    current.end()


def annotate(attributes: Mapping[str, AttributeValue], *, error_code: str | None = None) -> None:
    """Attributes on the current span; an ``error_code`` (an answer that failed without raising) marks it ERROR."""
    current = trace.get_current_span()
    if not current.is_recording():
        return
    current.set_attributes(attributes)
    if error_code is not None:
        current.set_attribute("error.type", error_code)
        current.set_status(Status(StatusCode.ERROR, error_code))


def event(name: str, **attributes: AttributeValue | None) -> None:
    """An event on the current span (a retry, a breaker decision); nothing when no span is recorded."""
    current = trace.get_current_span()
    if current.is_recording():
        current.add_event(name, {k: v for k, v in attributes.items() if v is not None})


def messaging(
    destination: str,
    operation: Literal["process", "send", "receive"],
    key: str,
    more: Mapping[str, AttributeValue] | None = None,
) -> dict[str, AttributeValue]:
    """OpenTelemetry's messaging attributes for one Kafka event."""
    return {
        "messaging.system": "kafka",
        "messaging.destination.name": destination,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.kafka.message.key": key,
        **(more or {}),
    }


def configure_from_settings(settings: Settings, process: str) -> TracerProvider | None:
    """``configure_tracing`` as the settings say (``JB_TRACING``, ``OTEL_EXPORTER_OTLP_ENDPOINT``)."""
    return configure_tracing(
        settings.tracing_mode, process=process, traces_dir=settings.traces_dir, otlp_endpoint=settings.otlp_endpoint
    )
