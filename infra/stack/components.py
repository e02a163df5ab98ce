"""What the local stack runs: one spec per process instance, from the settings and the requested scale.

Port plan of the health endpoints (every one on 127.0.0.1 unless the settings say otherwise):

=============  ===========================================  ==========================
instance       health                                       JB_INSTANCE
=============  ===========================================  ==========================
simulators     ``JB_SIM_CONTROL_PORT`` (9100) ``/health``   ``simulators``
issuer         ``JB_AUTH_ISSUER``'s port (9400) ``/health``  ``issuer``
streams-N      ``JB_HEALTH_PORT_BASE`` + N (9301, 9302, …)  ``streams-N``
connectors-N   ``JB_HEALTH_PORT_BASE`` + 50 + N (9351, …)   ``connectors-N``
bridge         ``JB_BRIDGE_PORT`` (8080) ``/health``        ``bridge``
=============  ===========================================  ==========================
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from jetbridge.settings import Settings

__all__ = ["KINDS", "MAX_SCALE", "SCALABLE", "InstanceSpec", "StackPlan", "format_scale", "parse_scale", "plan"]

# Start order; the supervisor stops in the reverse order.
KINDS = ("simulators", "issuer", "streams", "connectors", "bridge")
SCALABLE = ("streams", "connectors")
# Keeps streams-N and connectors-N inside their 50-port blocks of the plan above.
MAX_SCALE = 49
_CONNECTORS_OFFSET = 50

_MODULES = {
    "simulators": "infra.simulators",
    "issuer": "infra.auth.dev_issuer",
    "streams": "streams",
    "connectors": "connectors",
    "bridge": "mcp_bridge",
}


class InstanceSpec(BaseModel):
    """One process the supervisor keeps running: how to start it and where to ask whether it is healthy."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: str
    index: int
    argv: tuple[str, ...]
    env: dict[str, str]
    # Empty: the process counts as healthy while it runs (the supervisor's own tests use that).
    health_url: str = ""
    endpoint: str = ""


class StackPlan(BaseModel):
    """What ``jetbridge up`` asked for; the supervisor reads it at start and on SIGHUP."""

    model_config = ConfigDict(frozen=True)

    scale: dict[str, int]
    simulators: bool
    instances: tuple[InstanceSpec, ...]


def parse_scale(text: str) -> dict[str, int]:
    """``"streams=2,connectors=3"`` as a mapping; raises ValueError naming what is wrong."""
    scale: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, sep, count = item.partition("=")
        kind = kind.strip()
        if not sep:
            raise ValueError(f"expected KIND=N, got {item!r}")
        if kind not in SCALABLE:
            raise ValueError(f"{kind!r} cannot be scaled; only {' and '.join(SCALABLE)} can")
        try:
            n = int(count)
        except ValueError:
            raise ValueError(f"{kind}: {count.strip()!r} is not a whole number") from None
        if not 1 <= n <= MAX_SCALE:
            raise ValueError(f"{kind}: between 1 and {MAX_SCALE} instances, not {n}")
        scale[kind] = n
    return scale


def format_scale(scale: Mapping[str, int]) -> str:
    return ",".join(f"{kind}={scale.get(kind, 1)}" for kind in SCALABLE)


def plan(settings: Settings, scale: Mapping[str, int] | None = None, *, simulators: bool = True) -> StackPlan:
    """Every instance to run, in start order."""
    counts = {kind: (scale or {}).get(kind, 1) for kind in SCALABLE}
    instances: list[InstanceSpec] = []
    if simulators:
        control = f"http://{settings.simulator_host}:{settings.simulator_control_port}"
        sims = _spec("simulators", 1, "simulators", f"{control}/health", f"{control}/airlines")
        # The NDC and REST airlines push their own order changes to the connectors' webhook (connectors-1 here;
        # behind a load balancer in production): an airline that cannot deliver retries.
        webhook = f"http://127.0.0.1:{settings.health_port_base + _CONNECTORS_OFFSET + 1}/webhooks/{{code}}"
        instances.append(sims.model_copy(update={"env": sims.env | {"JB_SIM_WEBHOOK_URL": webhook}}))
    if settings.auth == "on" and settings.auth_dev_issuer:
        # The development issuer of the bridge's tokens (infra/auth/dev_issuer.py), where JB_AUTH_ISSUER says.
        issuer = settings.auth_issuer.rstrip("/")
        instances.append(_spec("issuer", 1, "issuer", f"{issuer}/health", issuer))
    for kind in SCALABLE:
        offset = _CONNECTORS_OFFSET if kind == "connectors" else 0
        for i in range(1, counts[kind] + 1):
            port = settings.health_port_base + offset + i
            url = f"http://127.0.0.1:{port}/health"
            instances.append(_spec(kind, i, f"{kind}-{i}", url, url, health_port=port))
    bridge_health = f"http://{settings.bridge_host}:{settings.bridge_port}/health"
    instances.append(_spec("bridge", 1, "bridge", bridge_health, settings.bridge_url))
    return StackPlan(scale=counts, simulators=simulators, instances=tuple(instances))


def _spec(kind: str, index: int, name: str, health_url: str, endpoint: str, *, health_port: int = 0) -> InstanceSpec:
    return InstanceSpec(
        name=name,
        kind=kind,
        index=index,
        argv=(sys.executable, "-m", _MODULES[kind]),
        # JB_HEALTH_PORT is set for every kind, so a value in the caller's environment never leaks into
        # a process that must not listen on it.
        env={"JB_INSTANCE": name, "JB_HEALTH_PORT": str(health_port), "PYTHONUNBUFFERED": "1"},
        health_url=health_url,
        endpoint=endpoint,
    )
