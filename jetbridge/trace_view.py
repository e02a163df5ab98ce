"""``jetbridge trace <request_id>``: one search's spans, read from the local span files, as a timeline tree.

The span files are what ``JB_TRACING=file`` writes (``jetbridge/tracing.py``): one JSON object per line, one file
per process under ``$JB_HOME/traces/``. The trace shown is the one whose spans carry the request id; every span
of that trace is shown, each under its parent, with its offset from the root, its duration, its status and its
events (retries, breaker decisions).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from jetbridge.tracing import REQUEST_ID

__all__ = ["SpanNode", "TraceNotFound", "add_arguments", "build_trees", "find_trace", "read_spans", "render", "show"]


class TraceNotFound(LookupError):
    """No span of the asked request in the span files (a user's answer, not a Jetbridge failure)."""


@dataclass
class SpanNode:
    record: dict[str, Any]
    children: list[SpanNode] = field(default_factory=list)
    orphan: bool = False  # its parent is not in the files (not exported yet, or exported elsewhere)

    @property
    def start_ns(self) -> int:
        return int(self.record.get("start_ns") or 0)

    @property
    def end_ns(self) -> int:
        return int(self.record.get("end_ns") or self.start_ns)


def read_spans(traces_dir: Path) -> list[dict[str, Any]]:
    """Every span record in the directory's ``*.jsonl`` files; a line that is not one (a file being written) is
    skipped."""
    spans: list[dict[str, Any]] = []
    for path in sorted(traces_dir.glob("*.jsonl")):
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and "trace_id" in record and "span_id" in record:
                    spans.append(record)
    return spans


def find_trace(spans: Iterable[dict[str, Any]], request_id: str) -> list[dict[str, Any]]:
    """The spans of every trace in which some span carries ``request_id``."""
    spans = list(spans)
    traces = {s["trace_id"] for s in spans if (s.get("attributes") or {}).get(REQUEST_ID) == request_id}
    return [s for s in spans if s["trace_id"] in traces]


def build_trees(spans: Sequence[dict[str, Any]]) -> list[SpanNode]:
    """The spans as trees (children by start time); roots first by start time, the true root before orphans."""
    nodes = {s["span_id"]: SpanNode(s) for s in spans}
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent_id = node.record.get("parent_id")
        parent = nodes.get(parent_id) if parent_id else None
        if parent is None:
            node.orphan = parent_id is not None
            roots.append(node)
        else:
            parent.children.append(node)
    for node in nodes.values():
        node.children.sort(key=lambda n: n.start_ns)
    return sorted(roots, key=lambda n: (n.orphan, n.start_ns))


def _ms(ns: int) -> str:
    return f"{ns / 1e6:,.1f} ms"


def _label(node: SpanNode, origin_ns: int) -> str:
    record = node.record
    attributes = record.get("attributes") or {}
    where = " · ".join(
        str(v) for v in (attributes.get("jetbridge.stage"), attributes.get("jetbridge.airline")) if v is not None
    )
    status = str(record.get("status", "UNSET"))
    if status == "ERROR":
        why = attributes.get("error.type") or record.get("status_message") or ""
        shown = f"[red]ERROR {escape(str(why))}[/red]"
    else:
        shown = "[green]ok[/green]"  # OTel's UNSET or OK: nothing went wrong
    text = (
        f"[bold]{escape(str(record.get('name', '?')))}[/bold]"
        + (f"  [cyan]{escape(where)}[/cyan]" if where else "")
        + f"  +{_ms(node.start_ns - origin_ns)}  {_ms(node.end_ns - node.start_ns)}  {shown}"
        + f"  [dim]{escape(str(record.get('service', '')))}[/dim]"
    )
    at_bridge = str(record.get("name", "")).startswith("tools/call") or attributes.get("jetbridge.stage") == "bridge"
    if node.orphan and at_bridge:
        text += "  [dim](child of the MCP client's span: its traceparent in the call's _meta)[/dim]"
    elif node.orphan:
        text += "  [yellow](parent span not in the files)[/yellow]"
    return text


def _add(tree: Tree, node: SpanNode, origin_ns: int) -> None:
    branch = tree.add(_label(node, origin_ns))
    for item in node.record.get("events") or []:
        details = " ".join(f"{k}={v}" for k, v in (item.get("attributes") or {}).items())
        offset = int(item.get("time_ns") or 0) - origin_ns
        branch.add(f"[magenta]• {escape(str(item.get('name')))}[/magenta] +{_ms(offset)} [dim]{escape(details)}[/dim]")
    for child in node.children:
        _add(branch, child, origin_ns)


def render(request_id: str, spans: Sequence[dict[str, Any]]) -> list[Tree]:
    """One tree per trace of the request."""
    trees: list[Tree] = []
    for trace_id in sorted({s["trace_id"] for s in spans}):
        roots = build_trees([s for s in spans if s["trace_id"] == trace_id])
        origin = min(r.start_ns for r in roots)
        end = max(n.end_ns for n in roots)
        tree = Tree(
            f"[bold]request {escape(request_id)}[/bold]  trace {trace_id}  "
            f"{sum(1 for s in spans if s['trace_id'] == trace_id)} spans  {_ms(end - origin)}"
        )
        for root in roots:
            _add(tree, root, origin)
        trees.append(tree)
    return trees


def show(request_id: str, traces_dir: Path, console: Console) -> int:
    """Print the request's trace; raises TraceNotFound saying what to do when there is none."""
    if not traces_dir.is_dir():
        raise TraceNotFound(
            f"no span files in {traces_dir}: spans are written there when JB_TRACING is file; start the stack with "
            "`JB_TRACING=file jetbridge up` and run a search"
        )
    spans = find_trace(read_spans(traces_dir), request_id)
    if not spans:
        raise TraceNotFound(
            f"no span carries request id {request_id} in {traces_dir}: check the id (the bridge logs it with "
            "'search answered'), give the processes a second to write their spans, or, when the spans go to "
            "OTLP (OTEL_EXPORTER_OTLP_ENDPOINT), look the trace up in that backend"
        )
    for tree in render(request_id, spans):
        console.print(tree)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("request_id", help="the search's request id (in the bridge's log and the audit topic)")
    parser.add_argument("--dir", type=Path, default=None, help="span files' directory (default: $JB_HOME/traces)")
