"""Whether the workers' consumer groups have settled on the plan's scale: what ``jetbridge up`` waits for last.

Every stream and connector worker joins its groups under a static instance id (so a restarted worker takes its
partitions back at once). A static member does not leave its group when it stops: after ``up --scale`` removed a
worker, its partitions stay with it until its session expires (``JB_GROUP_SESSION_TIMEOUT_MS``) and the group
rebalances. A health probe cannot see that (the remaining workers are healthy, they are just not given the
partitions yet), so ``up`` also asks the broker: each group stable, with one member per worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import ConsumerGroupState, KafkaException
from confluent_kafka.admin import AdminClient

from jetbridge.airlines import load_registry
from jetbridge.kafka import client_config, with_logger
from jetbridge.settings import Settings

__all__ = ["GroupWant", "unsettled_groups", "wanted_groups"]


@dataclass(frozen=True, slots=True)
class GroupWant:
    group_id: str
    members: int
    # False for a group that only some airlines have (orders: an airline whose connector has no order
    # operations has no order worker): absent or empty counts as settled.
    required: bool = True


def wanted_groups(settings: Settings, scale: Mapping[str, int]) -> list[GroupWant]:
    """The groups the plan's stream and connector workers join, and how many members each should have."""
    prefix = settings.topic_prefix
    wants = [GroupWant(f"{prefix}jetbridge-streams", scale.get("streams", 0))]
    connectors = scale.get("connectors", 0)
    for airline in load_registry(settings.airlines_file):
        if airline.enabled:
            wants.append(GroupWant(f"{prefix}jb.connector.{airline.code}", connectors))
            wants.append(GroupWant(f"{prefix}jb.orders.{airline.code}", connectors, required=False))
    return [w for w in wants if w.members > 0]


def _describe(config: Mapping[str, Any], group_ids: Sequence[str], timeout_s: float) -> dict[str, tuple[str, int]]:
    admin = AdminClient(with_logger(config))
    futures = admin.describe_consumer_groups(list(group_ids), request_timeout=timeout_s)
    described: dict[str, tuple[str, int]] = {}
    for group_id, future in futures.items():
        try:
            description = future.result()
        except KafkaException as exc:  # the coordinator is moving or loading: not settled yet
            described[group_id] = (f"unknown ({exc.args[0]})", -1)
            continue
        state = description.state
        name = state.name.lower() if isinstance(state, ConsumerGroupState) else str(state).lower()
        described[group_id] = (name, len(description.members))
    return described


async def unsettled_groups(settings: Settings, wants: Sequence[GroupWant], timeout_s: float = 5.0) -> list[str]:
    """One line per group that is not yet stable at its wanted size, saying what it is; empty once all are."""
    if not wants:
        return []
    described = await asyncio.to_thread(_describe, client_config(settings), [w.group_id for w in wants], timeout_s)
    lines: list[str] = []
    for want in wants:
        state, members = described.get(want.group_id, ("unknown", -1))
        if not want.required and members == 0 and state in ("dead", "empty"):
            continue
        if state != "stable" or members != want.members:
            lines.append(f"{want.group_id}: {state}, {members} of {want.members} members")
    return lines
