"""``python -m streams``: run the faust worker with the router and the aggregator."""

from __future__ import annotations

import asyncio
import sys
import time

import uvloop
from confluent_kafka import Consumer, KafkaException

from jetbridge.errors import ConfigurationError
from jetbridge.kafka import client_config
from jetbridge.log import configure_logging, get_logger
from jetbridge.settings import Settings, get_settings
from jetbridge.topics import TopicNames
from jetbridge.tracing import configure_from_settings

log = get_logger("streams")


def wait_for_inputs(settings: Settings, timeout_s: float = 60.0) -> None:
    """Return once the agent's input topics have a leader for every partition.

    faust's assignor ignores a topic the cluster does not report yet, and with static membership a worker
    that rejoins under its instance id gets its previous assignment back without a rebalance: a worker that
    first joined a moment before its topics were visible (a new prefix, topics just created by `jetbridge
    up`) would keep an empty assignment for good. Found by tests/e2e/test_no_secrets_leak.py's stack.
    """
    names = TopicNames(settings.topic_prefix)
    wanted = [names.requests, names.responses, names.control]
    consumer = Consumer(client_config(settings) | {"group.id": f"{settings.topic_prefix}jetbridge-streams-probe"})
    try:
        give_up = time.monotonic() + timeout_s
        while True:
            try:
                topics = consumer.list_topics(timeout=5).topics
            except KafkaException as exc:  # the broker is not there yet: the same as not ready
                log.info("waiting for the broker", error=str(exc))
                topics = {}
            missing = [
                t
                for t in wanted
                if t not in topics
                or topics[t].error is not None
                or not topics[t].partitions
                or any(p.leader < 0 for p in topics[t].partitions.values())
            ]
            if not missing:
                return
            if time.monotonic() > give_up:
                raise ConfigurationError(
                    f"input topics {', '.join(missing)} not in the cluster after {timeout_s:.0f} s: "
                    "run `jetbridge topics apply` (or `jetbridge up`)"
                )
            log.info("waiting for the input topics", missing=missing)
            time.sleep(0.5)
    finally:
        consumer.close()


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, process="streams")
    configure_from_settings(settings, "streams")
    settings.state_dir.mkdir(parents=True, exist_ok=True)  # faust makes only the last level of its datadir
    wait_for_inputs(settings)
    # uvloop before faust creates its loop (faust's own --loop option comes too late: the app module,
    # imported below, already made one).
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from streams.app import app

    # --quiet (before the command) drops faust's ANSI banner; at "warn" or above faust would start a
    # terminal spinner, so the level stays "info" and our logging config (app.py) filters instead.
    sys.argv = [sys.argv[0], "--quiet", "worker", "--loglevel", "info", "--without-web"]
    app.main()


if __name__ == "__main__":
    main()
