"""What the stack's processes counted, read from their ``/metrics`` for ``jetbridge status``.

A few figures per instance, summed over labels where a total is what a person wants first; the full
series are on each ``/metrics`` URL (ports in the README).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from infra.stack.components import InstanceSpec

__all__ = ["Figures", "figures", "metrics_url"]


@dataclass(frozen=True)
class Figures:
    name: str
    url: str
    summary: str  # "searches 120 (complete 118, backbone_unavailable 2) · lag 0" or why there is none


def metrics_url(spec: InstanceSpec) -> str | None:
    """Where an instance serves /metrics: beside its /health (the simulators: on their control port)."""
    if not spec.health_url.endswith("/health"):
        return None
    return spec.health_url.removesuffix("/health") + "/metrics"


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name].append((dict(sample.labels), float(sample.value)))
    return found


def _by(samples: list[tuple[dict[str, str], float]], label: str) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for labels, value in samples:
        totals[labels.get(label, "")] += value
    return dict(totals)


def _counts(title: str, totals: dict[str, float]) -> str | None:
    if not totals:
        return None
    parts = ", ".join(f"{k} {v:g}" for k, v in sorted(totals.items(), key=lambda kv: -kv[1]) if v and k)
    return f"{title} {sum(totals.values()):g}" + (f" ({parts})" if parts else "")


def summarise(text: str) -> str:
    """The figures a person looks at first, from one process's metrics text."""
    s = _samples(text)
    words = [
        _counts("searches", _by(s.get("jb_searches_total", []), "outcome")),
        _counts("routed", _by(s.get("jb_requests_routed_total", []), "")),
        _counts("replies", _by(s.get("jb_replies_total", []), "status")),
        _counts("airline calls", _by(s.get("jb_airline_calls_total", []), "outcome")),
        _counts("retries", _by(s.get("jb_airline_retries_total", []), "airline")),
        _counts("dlq writes", _by(s.get("jb_dlq_writes_total", []), "code")),
        _counts("calls received", _by(s.get("jb_sim_calls_total", []), "airline")),
    ]
    open_circuits = [labels["airline"] for labels, v in s.get("jb_circuit_state", []) if v >= 2]
    if open_circuits:
        words.append(f"circuit open: {', '.join(sorted(open_circuits))}")
    lag = sum(v for _, v in s.get("jb_consumer_lag", []))
    if s.get("jb_consumer_lag"):
        words.append(f"lag {lag:g}")
    if s.get("jb_dlq_depth"):
        words.append(f"dlq depth {sum(v for _, v in s['jb_dlq_depth']):g}")
    if s.get("jb_open_joins"):
        words.append(f"open joins {sum(v for _, v in s['jb_open_joins']):g}")
    return " · ".join(w for w in words if w) or "nothing counted yet"


async def figures(specs: Sequence[InstanceSpec]) -> list[Figures]:
    """One summary per instance that serves /metrics; unreachable ones say so."""

    async def one(http: httpx.AsyncClient, spec: InstanceSpec, url: str) -> Figures:
        try:
            answer = await http.get(url)
            answer.raise_for_status()
        except httpx.HTTPError as exc:
            return Figures(spec.name, url, f"no metrics ({type(exc).__name__})")
        return Figures(spec.name, url, summarise(answer.text))

    async with httpx.AsyncClient(timeout=1.0, trust_env=False) as http:
        jobs = [one(http, spec, url) for spec in specs if (url := metrics_url(spec)) is not None]
        return list(await asyncio.gather(*jobs))
