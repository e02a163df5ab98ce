"""Runs every simulated airline as a real HTTP server, plus the control API, in one asyncio loop.

Each airline gets its own uvicorn server on its own port (from the registry's endpoint, or any free port
when asked for 0, as tests do). The supervisor owns the listening sockets, so a ``refuse`` fault can stop
an airline's server (connections are then refused by the OS) and start it again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import uvicorn
from starlette.types import ASGIApp

from infra.simulators import mcp_finnair, ndc, rest_delta, rest_virgin
from infra.simulators.control import build_control_app
from infra.simulators.faults import DEFAULT_LATENCY_MS, AirlineState, FaultConfig, FaultPatch
from infra.simulators.orders import OrderDesk
from infra.simulators.schedule import Schedule
from jetbridge.airlines import Airline
from jetbridge.errors import ConfigurationError
from jetbridge.log import get_logger

__all__ = ["AppBuilder", "Simulators", "app_builder_for", "register_protocol"]

log = get_logger(__name__)

AppBuilder = Callable[[AirlineState, Schedule], ASGIApp]

# Which simulator speaks for an airline, by its connector kind and (for REST) its mapping module.
_PROTOCOLS: dict[tuple[str, str | None], AppBuilder] = {
    ("ndc", None): ndc.build_app,
    ("rest", "virgin_atlantic"): rest_virgin.build_app,
    ("rest", "delta"): rest_delta.build_app,
    ("mcp", None): mcp_finnair.build_app,
}
_START_TIMEOUT_S = 10.0


def register_protocol(kind: str, mapping: str | None, build: AppBuilder) -> None:
    _PROTOCOLS[(kind, mapping)] = build


def app_builder_for(airline: Airline) -> AppBuilder:
    build = _PROTOCOLS.get((airline.kind, airline.mapping if airline.kind == "rest" else None))
    if build is None:
        raise ConfigurationError(f"no simulator for airline {airline.code} ({airline.kind}/{airline.mapping})")
    return build


class _Server(uvicorn.Server):
    """uvicorn minus its own signal handling (the supervisor owns signals for every server in the loop)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be TCP explicitly: asyncio turns on TCP_NODELAY only for sockets that say so, and
    # without it keep-alive requests stall ~40 ms on delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class _Listener:
    """One uvicorn server on one pre-bound socket, startable again after it was stopped."""

    def __init__(self, name: str, host: str, port: int, build: Callable[[], ASGIApp]) -> None:
        self.name = name
        self.host = host
        self.port = port
        self._build = build
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self.listening:
            return
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._build(),
            interface="asgi3",
            lifespan="on",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
            ws="none",
        )
        server = _Server(config)
        task = asyncio.create_task(self._serve(server, sock), name=f"sim-{self.name}")
        ready = asyncio.create_task(server.ready.wait())
        await asyncio.wait({task, ready}, timeout=_START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        if not server.ready.is_set():
            ready.cancel()
            server.should_exit = True
            (outcome,) = await asyncio.gather(task, return_exceptions=True)
            sock.close()
            cause = outcome if isinstance(outcome, BaseException) else None
            raise RuntimeError(f"simulator {self.name} did not start on {self.host}:{self.port}") from cause
        self._server, self._task = server, task

    @staticmethod
    async def _serve(server: _Server, sock: socket.socket) -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:
            # uvicorn exits the process on a failed lifespan; in a shared loop that must stay local.
            raise RuntimeError(f"uvicorn exited with {exc.code}") from exc

    async def stop(self, *, grace_s: float = 1.0) -> None:
        """Stop listening; requests still running get ``grace_s`` to finish, then are cut off."""
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        # uvicorn annotates this int but hands it to asyncio.wait_for, which takes fractions of a second.
        server.config.timeout_graceful_shutdown = grace_s  # type: ignore[assignment]
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)


@dataclasses.dataclass
class _Airline:
    airline: Airline
    state: AirlineState
    listener: _Listener
    path: str
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)


class Simulators:
    """All simulated airlines and the control API; use as ``async with Simulators(...) as sims``."""

    def __init__(
        self,
        airlines: Iterable[Airline],
        *,
        host: str | None = None,
        ports: Mapping[str, int] | None = None,
        control_host: str = "127.0.0.1",
        control_port: int | None = 9100,
        defaults: Mapping[str, FaultConfig] | None = None,
        schedule: Schedule | None = None,
    ) -> None:
        chosen = list(airlines)
        self.schedule = schedule or Schedule(routes={a.code: a.routes for a in chosen})
        self._airlines: dict[str, _Airline] = {}
        for airline in chosen:
            parts = urlsplit(airline.endpoint)
            state = AirlineState(
                airline.code,
                (defaults or {}).get(airline.code)
                or FaultConfig(latency_ms=DEFAULT_LATENCY_MS.get(airline.code, 150), jitter_ms=30),
            )
            build = app_builder_for(airline)
            port = (ports or {}).get(airline.code, parts.port or 80)
            listener = _Listener(
                airline.code,
                host or parts.hostname or "127.0.0.1",
                port,
                partial(build, state, self.schedule),
            )
            self._airlines[airline.code] = _Airline(airline, state, listener, parts.path.rstrip("/"))
        self._control: _Listener | None = None
        if control_port is not None:
            self._control = _Listener("control", control_host, control_port, lambda: build_control_app(self))

    async def __aenter__(self) -> Simulators:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        try:
            for entry in self._airlines.values():
                if entry.state.config.fault != "refuse":
                    await entry.listener.start()
            if self._control is not None:
                await self._control.start()
        except BaseException:
            await self.stop()
            raise
        log.info("simulators started", airlines={c: self.endpoint(c) for c in self._airlines})

    async def stop(self) -> None:
        listeners = [e.listener for e in self._airlines.values()]
        if self._control is not None:
            listeners.append(self._control)
        await asyncio.gather(*(listener.stop() for listener in listeners))

    def codes(self) -> list[str]:
        return list(self._airlines)

    def endpoint(self, code: str) -> str:
        """The airline's base URL as it is actually bound (same shape as the registry's endpoint)."""
        entry = self._airlines[code]
        parts = urlsplit(entry.airline.endpoint)
        netloc = f"{entry.listener.host}:{entry.listener.port}"
        return urlunsplit((parts.scheme or "http", netloc, parts.path, "", ""))

    def airline(self, code: str) -> Airline:
        """The registry entry with its endpoint pointed at this simulator."""
        entry = self._airlines[code]
        return dataclasses.replace(entry.airline, endpoint=self.endpoint(code))

    @property
    def control_url(self) -> str:
        if self._control is None:
            raise RuntimeError("the control API is disabled")
        return f"http://{self._control.host}:{self._control.port}"

    def status(self, code: str | None = None) -> dict[str, dict[str, Any]]:
        """Every airline's settings and call counts; with ``code``, that airline's alone with its recent calls."""
        return {
            name: {
                **entry.state.config.model_dump(),
                "kind": entry.airline.kind,
                "endpoint": self.endpoint(name),
                "listening": entry.listener.listening,
                **entry.state.counts(recent=code is not None),
                "orders_created": entry.state.orders.created,
                "seats_left": entry.state.orders.seats_left,
            }
            for name, entry in self._airlines.items()
            if code is None or name == code
        }

    async def configure(self, code: str, patch: FaultPatch) -> FaultConfig:
        """Change one airline's behaviour; ``refuse`` stops its server, clearing it starts it again."""
        entry = self._airlines[code]
        async with entry.lock:
            entry.state.config = patch.apply(entry.state.config)
            if patch.seats_left is not None:
                entry.state.orders.seats_left = None if patch.seats_left < 0 else patch.seats_left
            await self._sync_listener(entry)
            log.info("simulator configured", airline=code, **entry.state.config.model_dump())
            return entry.state.config

    def orders(self, code: str) -> OrderDesk:
        """The airline's order desk (its offers and orders)."""
        return self._airlines[code].state.orders

    async def reset(self) -> None:
        for entry in self._airlines.values():
            async with entry.lock:
                entry.state.config = entry.state.defaults
                entry.state.reset_counts()
                entry.state.orders.orders.clear()
                entry.state.orders.seats_left = None
                await self._sync_listener(entry)

    @staticmethod
    async def _sync_listener(entry: _Airline) -> None:
        if entry.state.config.fault == "refuse":
            # An airline that goes away drops what it was doing; no grace for requests in flight.
            await entry.listener.stop(grace_s=0.1)
        else:
            await entry.listener.start()
