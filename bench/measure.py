"""What the benchmark reads off the machine while load runs: CPU time and memory of each process, and
how many events each Kafka topic received."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil
from confluent_kafka import Consumer, TopicPartition

__all__ = ["ProcessMeter", "topic_end_offsets"]


@dataclass
class _Tracked:
    process: psutil.Process
    peak_rss: int = 0
    rss_series: list[tuple[float, int]] = field(default_factory=list)


class ProcessMeter:
    """Samples the RSS of named processes (with their children) and reads their CPU seconds on demand."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.25) -> None:
        self._tracked = {name: _Tracked(psutil.Process(pid)) for name, pid in pids.items()}
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None
        self._t0 = 0.0

    def _family(self, tracked: _Tracked) -> list[psutil.Process]:
        try:
            return [tracked.process, *tracked.process.children(recursive=True)]
        except psutil.Error:
            return []

    def cpu_seconds(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for name, tracked in self._tracked.items():
            total = 0.0
            for proc in self._family(tracked):
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
            totals[name] = total
        return totals

    def _sample(self, now: float) -> None:
        for tracked in self._tracked.values():
            rss = 0
            for proc in self._family(tracked):
                with contextlib.suppress(psutil.Error):
                    rss += proc.memory_info().rss
            tracked.peak_rss = max(tracked.peak_rss, rss)
            tracked.rss_series.append((now - self._t0, rss))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._sample(loop.time())
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._t0 = asyncio.get_running_loop().time()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def peak_rss_mb(self) -> dict[str, float]:
        return {name: round(t.peak_rss / 2**20, 1) for name, t in self._tracked.items()}

    def rss_series_mb(self, name: str) -> list[tuple[float, float]]:
        return [(round(t, 1), round(rss / 2**20, 1)) for t, rss in self._tracked[name].rss_series]


async def topic_end_offsets(config: Mapping[str, Any], prefixes: tuple[str, ...]) -> dict[str, int]:
    """Sum of end offsets per topic whose name starts with one of ``prefixes`` (``config``: the cluster's
    librdkafka client settings, ``jetbridge.kafka.client_config``)."""

    def read() -> dict[str, int]:
        consumer = Consumer({**config, "group.id": "jb-bench-offsets"})
        try:
            metadata = consumer.list_topics(timeout=10)
            totals: dict[str, int] = {}
            for name, topic in metadata.topics.items():
                if not name.startswith(prefixes):
                    continue
                totals[name] = sum(
                    consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1] for p in topic.partitions
                )
            return totals
        finally:
            consumer.close()

    return await asyncio.to_thread(read)
