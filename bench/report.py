"""The benchmark's outputs: percentiles, the JSON file, the chart and the Markdown summary."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

__all__ = [
    "percentile",
    "write_chart",
    "write_counts_chart",
    "write_counts_summary",
    "write_json",
    "write_network_summary",
    "write_summary",
]

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


# ---- the airline-count mode (jetbridge bench --airline-counts) ----


def _measured(results: dict[str, Any], system: str, figure: str) -> tuple[list[int], list[float]]:
    rows = [r for r in results["by_count"] if r[system] is not None]
    return [r["airlines"] for r in rows], [r[system][figure] for r in rows]


def write_counts_chart(path: Path, results: dict[str, Any]) -> None:
    """CPU per search against airlines per search for both systems; Kafka events per search for Jetbridge."""
    fig, (cpu, events) = plt.subplots(1, 2, figsize=(11, 4.8), dpi=110)
    growth = results["growth"]
    for system, style in (("jetbridge", "-"), ("baseline", "--")):
        counts, values = _measured(results, system, "cpu_ms_per_search")
        slope = growth["cpu_ms_per_added_airline"][system]
        label = system if slope is None else f"{system} ({slope:+.1f} ms per added airline)"
        cpu.plot(counts, values, style, marker="o", label=label)
    cpu.set_xlabel("airlines per search")
    cpu.set_ylabel("CPU per search, own processes (ms)")
    cpu.set_ylim(bottom=0)
    cpu.set_title("CPU per search")
    counts, totals = _measured(results, "jetbridge", "kafka_events_per_search")
    _, calls = _measured(results, "jetbridge", "calls")
    _, responses = _measured(results, "jetbridge", "responses")
    events.plot(counts, totals, "-", marker="o", label="all topics")
    both = [c + r for c, r in zip(calls, responses, strict=True)]
    events.plot(counts, both, ":", marker="s", label="calls + responses")
    events.set_xlabel("airlines per search")
    events.set_ylabel("Kafka events per search")
    events.set_ylim(bottom=0)
    events.set_title("Jetbridge: Kafka events per search (baseline: none)")
    for ax in (cpu, events):
        ax.set_xticks([r["airlines"] for r in results["by_count"]])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"Cost against airlines per search at {results['rate']:g} searches/s, "
        f"{results['machine']['cpus']} cores, {results['date'][:10]}"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _triple(latency: dict[str, float]) -> str:
    return " / ".join(_fmt(latency[q]) for q in ("p50", "p95", "p99"))


def _errors(row: dict[str, Any] | None) -> str:
    if row is None:
        return "not run"
    return f"{row['error_rate'] * 100:.2f} % ({row['errors']} of {row['requests']})"


def write_counts_summary(path: Path, results: dict[str, Any]) -> None:
    cfg = results["config"]
    airlines = results["airlines"]
    latencies = sorted({a["latency_ms"] for a in airlines})
    counts = [r["airlines"] for r in results["by_count"]]
    lines = [
        f"# Jetbridge benchmark: cost against airlines per search, {results['date']}",
        "",
        f"Machine: {results['machine']['cpus']} cores, {results['machine']['memory_gb']} GiB, "
        f"{results['machine']['platform']}, Python {results['machine']['python']}. Everything on one machine.",
        f"Load: open-loop MCP `search_offers` {results['route']} at {results['rate']:g}/s over {cfg['sessions']} "
        "streamable-HTTP sessions, each search asking for exactly N airlines (the tool's `airlines` argument) of "
        f"{len(airlines)} synthetic airlines that all fly {results['route']} (connector kinds ndc, rest, mcp in "
        f"turn; fixed latencies {', '.join(map(str, latencies))} ms in turn, no jitter), one stack and one baseline "
        f"serving every N. Deadline {cfg['deadline_ms']} ms, warm-up {cfg['warmup_s']} s excluded, {cfg['hold_s']} s "
        "measured per N and system, systems alternated at each N.",
        "",
        "## Cost and latency by airlines per search",
        "",
        "| airlines | JB CPU/search (ms) | base CPU/search (ms) | CPU ratio | JB Kafka events/search"
        " | JB p50 / p95 / p99 (ms) | base p50 / p95 / p99 (ms) | added p50 / p95 / p99 (ms)"
        " | JB errors | base errors |",
        "|---:|---:|---:|---:|---:|---|---|---|---:|---:|",
    ]
    for row in results["by_count"]:
        jb, base, added = row["jetbridge"], row["baseline"], row["added_latency_ms"]
        a = jb["cpu_ms_per_search"] if jb else None
        b = base["cpu_ms_per_search"] if base else None
        lines.append(
            f"| {row['airlines']} | {_fmt(a, 1)} | {_fmt(b, 1)} | {_fmt(a / b if a and b else None, 2)} "
            f"| {_fmt(jb['kafka_events_per_search'] if jb else None, 2)} "
            f"| {_triple(jb['latency_ms']) if jb else '-'} | {_triple(base['latency_ms']) if base else '-'} "
            f"| {_triple(added) if added else '-'} | {_errors(jb)} | {_errors(base)} |"
        )
    growth = results["growth"]
    cpu_growth = growth["cpu_ms_per_added_airline"]
    if growth["kafka_events_per_added_airline"] is not None:
        lines += [
            "",
            f"Each added airline per search (least-squares slope over N = {', '.join(map(str, counts))}) costs "
            f"Jetbridge {_fmt(cpu_growth['jetbridge'], 1)} ms of CPU and "
            f"{_fmt(growth['kafka_events_per_added_airline'], 2)} Kafka events (its call and its response), "
            f"the baseline {_fmt(cpu_growth['baseline'], 1)} ms of CPU.",
        ]
    if results.get("saturated_at"):
        lines += [
            "",
            "Not kept up (p99 at or past the deadline, or over 5 % errors; larger N not run): "
            + ", ".join(f"{k} with {v} airlines" for k, v in results["saturated_at"].items()),
        ]
    processes = list(results["peak_rss_mb"]["jetbridge"])
    lines += [
        "",
        "## Jetbridge CPU per search by process (ms)",
        "",
        "| airlines | " + " | ".join(processes) + " | total |",
        "|---:|" + "---:|" * (len(processes) + 1),
    ]
    for row in results["by_count"]:
        jb = row["jetbridge"]
        if jb is None:
            continue
        by = jb["cpu_ms_per_search_by_process"]
        cells = " | ".join(_fmt(by.get(p), 1) for p in processes)
        lines.append(f"| {row['airlines']} | {cells} | {_fmt(jb['cpu_ms_per_search'], 1)} |")
    lines += ["", "Kafka events per search by topic (Jetbridge):", ""]
    for run in results["runs"]:
        if run["system"] == "jetbridge":
            events = run["kafka_events_per_request"]
            airline_topics = sum(v for t, v in events.items() if ".airline." in t and t.endswith(".calls.v1"))
            others = ", ".join(
                f"{t} {v:.2f}" for t, v in events.items() if t != "total" and not (".airline." in t and ".calls." in t)
            )
            lines.append(
                f"- {run['airline_count']} airlines: total {events.get('total', 0):.2f}; "
                f"calls topics {airline_topics:.2f}; {others}"
            )
    peak = results["peak_rss_mb"]
    lines += [
        "",
        "Peak RSS per process over the run (MB): "
        + ", ".join(f"{k} {v:.0f}" for group in ("jetbridge", "baseline", "shared") for k, v in peak[group].items()),
        "",
        "The synthetic registry is `airlines.toml` beside this file; every figure is in `results.json`.",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_cache_summary(path: Path, results: dict[str, Any]) -> None:
    """The cache-hit scenario's report: both systems side by side, then the cost of one hit."""
    scenario, hit = results["scenario"], results["cache_hit"]
    lines = [
        f"# Jetbridge benchmark: repeated searches and the offer cache, {results['date']}",
        "",
        f"{scenario['repeated_share']:.0%} of the searches repeat one of {scenario['pool']} searches (LHR-JFK), the "
        f"rest are new; {scenario['rate']:g} searches/s offered to each system for {scenario['hold_s']:g} s "
        "measured. Airline calls are counted at the simulators.",
        "",
        "| system | answered/s | p50 ms | p99 ms | errors | airline calls per search | CPU per search |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in results["runs"]:
        latency = run["latency_ms"]
        lines.append(
            f"| {run['system']} | {run['answered_per_s']:g} | {latency['p50']:.0f} | {latency['p99']:.0f} | "
            f"{run['error_rate'] * 100:.2f} % | {run['airline_calls_per_search']:.2f} | "
            f"{run['cpu_s_per_request']['total'] * 1000:.1f} ms |"
        )
    lines += [
        "",
        f"A cache hit ({hit['probes']} identical searches in one session, after the first filled the cache): "
        f"p50 {hit['through_jetbridge_ms']['p50']:.1f} ms through Jetbridge (MCP, Kafka, router, aggregator) "
        f"against {hit['direct_redis_ms']['p50']:.2f} ms reading the same {hit['entries_read_directly']} "
        f"airlines' entries straight from Redis: **{hit['added_p50_ms']:.1f} ms added**. Airline sources seen: "
        f"{hit['airline_sources']}.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def _by_topic(jb: dict[str, Any]) -> str:
    """Events and log bytes per search of each topic, the per-airline calls topics as one."""
    events: dict[str, float] = {}
    sizes: dict[str, float] = {}
    for source, target in (
        (jb["kafka_events_per_search_by_topic"], events),
        (jb["kafka_bytes_per_search_by_topic"], sizes),
    ):
        for topic, value in source.items():
            name = "calls topics" if ".airline." in topic and topic.endswith(".calls.v1") else topic
            target[name] = target.get(name, 0.0) + value
    return "; ".join(f"{t} {events[t]:.2f} events, {_fmt(sizes.get(t))} B" for t in sorted(events))


def write_network_summary(path: Path, results: dict[str, Any]) -> None:
    """The 50-airline run's report: whom route pruning asked on each route, then what a search cost."""
    cfg, machine = results["config"], results["machine"]
    kinds = ", ".join(f"{n} {kind}" for kind, n in results["kinds"].items())
    total = results["registry_airlines"]
    lines = [
        f"# Jetbridge benchmark: {total} airlines with real route networks, {results['date']}",
        "",
        f"Machine: {machine['cpus']} cores, {machine['memory_gb']} GiB, {machine['platform']}, Python "
        f"{machine['python']}. Everything on one machine.",
        f"Registry: {total} real airlines (OpenFlights, the most non-stop routes through the 50 busiest airports), "
        f"{results['registry_routes']} routes in all, connector kinds {kinds}, all simulated with fixed latencies "
        f"({', '.join(map(str, sorted({a['latency_ms'] for a in results['airlines']})))} ms in turn, no jitter).",
        f"Load: open-loop MCP `search_offers` at {results['rate']:g}/s over {cfg['sessions']} streamable-HTTP "
        "sessions, naming no airlines, so route pruning decides whom to ask. Deadline "
        f"{cfg['deadline_ms']} ms, warm-up {cfg['warmup_s']} s excluded, {cfg['hold_s']} s measured per route and "
        "system, systems alternated.",
        "",
        "## Airlines asked per search",
        "",
        "| route | airlines in the registry | fly the route | JB calls/search | JB airlines/reply "
        "| base airlines/reply | asked of all |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["by_route"]:
        jb, base = row["jetbridge"], row["baseline"]
        lines.append(
            f"| {row['route']} | {row['registry_airlines']} | {row['airlines_serving']} "
            f"| {_fmt(jb['calls'] if jb else None, 2)} | {_fmt(jb['airlines_per_reply'] if jb else None, 2)} "
            f"| {_fmt(base['airlines_per_reply'] if base else None, 2)} "
            f"| {row['airlines_serving'] / row['registry_airlines']:.0%} |"
        )
    lines += [
        "",
        "## Latency and cost per search",
        "",
        "| route | JB p50 / p95 / p99 (ms) | base p50 / p95 / p99 (ms) | JB CPU/search (ms) | base CPU/search (ms) "
        "| JB Kafka events/search | JB Kafka bytes/search | JB errors | base errors |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["by_route"]:
        jb, base = row["jetbridge"], row["baseline"]
        lines.append(
            f"| {row['route']} | {_triple(jb['latency_ms']) if jb else '-'} "
            f"| {_triple(base['latency_ms']) if base else '-'} "
            f"| {_fmt(jb['cpu_ms_per_search'] if jb else None, 1)} "
            f"| {_fmt(base['cpu_ms_per_search'] if base else None, 1)} "
            f"| {_fmt(jb['kafka_events_per_search'] if jb else None, 2)} "
            f"| {_fmt(jb.get('kafka_bytes_per_search') if jb else None)} | {_errors(jb)} | {_errors(base)} |"
        )
    processes = list(results["peak_rss_mb"]["jetbridge"])
    lines += [
        "",
        "## Jetbridge CPU per search by process (ms)",
        "",
        "| route | " + " | ".join(processes) + " | total |",
        "|---|" + "---:|" * (len(processes) + 1),
    ]
    for row in results["by_route"]:
        jb = row["jetbridge"]
        if jb is not None:
            by = jb["cpu_ms_per_search_by_process"]
            cells = " | ".join(_fmt(by.get(p), 1) for p in processes)
            lines.append(f"| {row['route']} | {cells} | {_fmt(jb['cpu_ms_per_search'], 1)} |")
    lines += ["", "Kafka events and bytes per search by topic (Jetbridge; calls topics summed):", ""]
    for row in results["by_route"]:
        jb = row["jetbridge"]
        if jb is not None:
            lines.append(f"- {row['route']}: " + _by_topic(jb))
    lines += ["", "Airlines asked on each route (route pruning):", ""]
    lines += [f"- {row['route']}: {', '.join(row['airlines_serving_codes'])}" for row in results["by_route"]]
    peak = results["peak_rss_mb"]
    lines += [
        "",
        "Peak RSS per process over the run (MB): "
        + ", ".join(f"{k} {v:.0f}" for group in ("jetbridge", "baseline", "shared") for k, v in peak[group].items()),
        "",
        "The registry is `airlines.toml` beside this file; every figure is in `results.json`.",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
