"""The benchmark's outputs: percentiles, the JSON file, the chart and the Markdown summary."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

__all__ = ["percentile", "write_chart", "write_json", "write_summary"]

SYSTEMS = ("jetbridge", "baseline")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")


def write_chart(path: Path, results: dict[str, Any]) -> None:
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    styles = {"jetbridge": "-", "baseline": "--"}
    colours = {"p50": "tab:blue", "p95": "tab:orange", "p99": "tab:red"}
    for system in SYSTEMS:
        runs = sorted((r for r in results["runs"] if r["system"] == system), key=lambda r: r["rate"])
        rates = [r["rate"] for r in runs]
        for q, colour in colours.items():
            ax.plot(
                rates,
                [r["latency_ms"][q] for r in runs],
                styles[system],
                color=colour,
                marker="o",
                label=f"{system} {q}",
            )
    deadline = results["config"]["deadline_ms"]
    ax.axhline(deadline, color="grey", linewidth=0.8, linestyle=":", label=f"deadline {deadline} ms")
    ax.set_xlabel("offered load (searches/s, 5 airlines each)")
    ax.set_ylabel("end-to-end latency through MCP (ms)")
    ax.set_yscale("log")
    ax.set_title(f"Jetbridge vs direct fan-out, {results['machine']['cpus']} cores, {results['date'][:10]}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def write_summary(path: Path, results: dict[str, Any]) -> None:
    cfg = results["config"]
    lines = [
        f"# Jetbridge benchmark, {results['date']}",
        "",
        f"Machine: {results['machine']['cpus']} cores, {results['machine']['memory_gb']} GiB, "
        f"{results['machine']['platform']}, Python {results['machine']['python']}. Everything on one machine.",
        f"Load: open-loop MCP `search_offers` LHR-JFK over {cfg['sessions']} streamable-HTTP sessions, five "
        f"airlines per search, simulators at fixed latencies {cfg['airline_latency_ms']} ms (no jitter), "
        f"deadline {cfg['deadline_ms']} ms, warm-up {cfg['warmup_s']} s excluded, {cfg['hold_s']} s measured per "
        "rate, systems alternated at each rate.",
        "",
        "## Latency (ms) and errors, side by side",
        "",
        "| rate/s | JB p50 | base p50 | JB p95 | base p95 | JB p99 | base p99 | added p50 | added p95 | added p99 "
        "| p50 ratio | JB errors | base errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by = {(r["system"], r["rate"]): r for r in results["runs"]}
    for added in results["added_latency_ms"]:
        rate = added["rate"]
        jb, base = by[("jetbridge", rate)], by[("baseline", rate)]
        ratio = jb["latency_ms"]["p50"] / base["latency_ms"]["p50"] if base["latency_ms"]["p50"] else math.nan
        lines.append(
            f"| {rate:g} | {_fmt(jb['latency_ms']['p50'])} | {_fmt(base['latency_ms']['p50'])} "
            f"| {_fmt(jb['latency_ms']['p95'])} | {_fmt(base['latency_ms']['p95'])} "
            f"| {_fmt(jb['latency_ms']['p99'])} | {_fmt(base['latency_ms']['p99'])} "
            f"| {_fmt(added['p50'])} | {_fmt(added['p95'])} | {_fmt(added['p99'])} | {_fmt(ratio, 2)} "
            f"| {jb['error_rate'] * 100:.2f} % | {base['error_rate'] * 100:.2f} % |"
        )
    sustained = results["max_sustained_rate"]
    if results.get("saturated_at"):
        lines += [
            "",
            "Saturation (first rate with p99 at or past the deadline, or over 5 % errors; higher rates not run): "
            + ", ".join(f"{k} at {v:g}/s" for k, v in results["saturated_at"].items()),
        ]
    lines += [
        "",
        "## Capacity and cost",
        "",
        "| | Jetbridge | baseline | ratio |",
        "|---|---:|---:|---:|",
        f"| max sustained rate (p99 < deadline, errors < 0.1 %) | {_fmt(sustained['jetbridge'])} /s "
        f"| {_fmt(sustained['baseline'])} /s | "
        f"{_fmt((sustained['jetbridge'] or 0) / sustained['baseline'], 2) if sustained['baseline'] else '-'} |",
    ]
    for rate in sorted({r["rate"] for r in results["runs"]}):
        if ("jetbridge", rate) not in by or ("baseline", rate) not in by:
            continue
        jb, base = by[("jetbridge", rate)], by[("baseline", rate)]
        a, b = jb["cpu_s_per_request"]["total"], base["cpu_s_per_request"]["total"]
        lines.append(
            f"| CPU seconds per request at {rate:g}/s (own processes) | {a * 1000:.1f} ms | {b * 1000:.1f} ms "
            f"| {_fmt(a / b if b else math.nan, 2)} |"
        )
    peak = results["peak_rss_mb"]
    lines.append(
        f"| peak RSS, sum of own processes | {sum(peak['jetbridge'].values()):.0f} MB "
        f"| {sum(peak['baseline'].values()):.0f} MB | |"
    )
    lines += [
        "",
        "Peak RSS per process (MB): "
        + ", ".join(f"{k} {v:.0f}" for group in ("jetbridge", "baseline", "shared") for k, v in peak[group].items()),
        "",
        "Kafka events produced per search (Jetbridge, at its highest sustained rate): "
        + ", ".join(f"{k} {v:.2f}" for k, v in results["kafka_events_per_request"].items()),
        "",
        "CPU seconds per request by process at the highest sustained rate are in the JSON (`cpu_s_per_request`).",
    ]
    if results.get("soak"):
        soak = results["soak"]
        lines += [
            "",
            f"## Soak: {soak['seconds']} s at {soak['rate']}/s on Jetbridge",
            "",
            "| process | RSS first minute (MB) | RSS last minute (MB) | growth |",
            "|---|---:|---:|---:|",
        ]
        for name, row in soak["rss_mb"].items():
            lines.append(f"| {name} | {row['first']:.0f} | {row['last']:.0f} | {row['last'] - row['first']:+.0f} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
