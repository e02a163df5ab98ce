"""Simulated airlines on free ports, in the test's own event loop, for tests that need real servers.

Test modules wrap `running_simulators` in their own fixtures (the lead owns conftest.py files):

    @pytest.fixture(scope="module")
    async def sims() -> AsyncIterator[Simulators]:
        async with running_simulators() as running:
            yield running
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import httpx

from infra.simulators import FaultConfig, Simulators
from jetbridge.airlines import load_registry

__all__ = ["control_client", "running_simulators"]


@asynccontextmanager
async def running_simulators(codes: Iterable[str] | None = None) -> AsyncIterator[Simulators]:
    """The registry's airlines (or ``codes``) and the control API, each on a free port, without latency."""
    wanted = set(codes) if codes is not None else None
    airlines = [a for a in load_registry() if wanted is None or a.code in wanted]
    # No added latency: tests wait on deadlines, never on the simulators' realism.
    quiet = {a.code: FaultConfig() for a in airlines}
    async with Simulators(airlines, ports={a.code: 0 for a in airlines}, control_port=0, defaults=quiet) as sims:
        yield sims


@asynccontextmanager
async def control_client(sims: Simulators) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the control API that resets every airline when the test is done with it."""
    async with httpx.AsyncClient(base_url=sims.control_url, timeout=10, trust_env=False) as client:
        try:
            yield client
        finally:
            await client.post("/reset")
