"""Simulated airline systems for local runs and tests: two NDC airlines, two proprietary REST APIs and
one airline MCP server, all answering from the same deterministic schedule, with fault injection.

Run them with ``python -m infra.simulators``; in tests, ``async with Simulators(...)`` on free ports.
"""

from infra.simulators.faults import FaultConfig, FaultPatch
from infra.simulators.schedule import Schedule, ShopQuery
from infra.simulators.supervisor import Simulators

__all__ = ["FaultConfig", "FaultPatch", "Schedule", "ShopQuery", "Simulators"]
