"""A simulated Finnair that sells through its own MCP server: tool ``search_flights`` over streamable HTTP.

Typed arguments in; structured content out in Finnair's own shape (snake_case, ``bounds`` of ``flights``,
prices as JSON numbers). Refusals are tool errors (``isError``); a ``malformed`` fault answers a
successful-looking result whose only content is garbage text. The tool's description can be changed
through the control API (``tool_description``), as a redeployed or tampered server would change it.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent
from mcp_types import Tool as McpTool
from starlette.types import ASGIApp

from infra.simulators.faults import AirlineGate, AirlineState, is_mcp_tool_call
from infra.simulators.schedule import AIRCRAFT_NAMES, CabinName, FareOffer, Schedule, ShopQuery

__all__ = ["MCP_PATH", "TOOL_DESCRIPTION", "TOOL_NAME", "build_app", "build_server"]

MCP_PATH = "/mcp"
TOOL_NAME = "search_flights"
TOOL_DESCRIPTION = "Search Finnair flights and fares for one trip."
TravelClass = Literal["economy", "premium_economy", "business"]
_CABINS: dict[str, CabinName] = {"economy": "economy", "premium_economy": "premium", "business": "business"}
_CLASS_OUT: dict[CabinName, str] = {v: k for k, v in _CABINS.items()}


def _minutes_iso(minutes: int) -> str:
    return f"PT{minutes // 60}H{minutes % 60}M"


def _offer(offer: FareOffer) -> dict[str, Any]:
    return {
        "offer_id": offer.offer_id,
        "fare_family": offer.brand,
        "travel_class": _CLASS_OUT[offer.cabin],
        "price": {"amount": float(offer.total), "currency": offer.currency},
        "valid_until": offer.expires_at.astimezone(UTC).isoformat(timespec="seconds"),
        "bounds": [
            {
                "bound_type": "outbound" if i == 0 else "inbound",
                "duration": _minutes_iso(flight.duration_minutes),
                "flights": [
                    {
                        "flight_number": flight.designator,
                        "operating_carrier": flight.carrier,
                        "departure": {
                            "airport": flight.origin,
                            "local_time": flight.departure.isoformat(timespec="minutes"),
                        },
                        "arrival": {
                            "airport": flight.destination,
                            "local_time": flight.arrival.isoformat(timespec="minutes"),
                        },
                        "aircraft_code": flight.aircraft,
                        "aircraft_name": AIRCRAFT_NAMES.get(flight.aircraft),
                    }
                ],
            }
            for i, flight in enumerate(offer.journeys)
        ],
    }


class _FinnairServer(MCPServer):
    """Lists its shopping tool with the description the control API set, if any."""

    def __init__(self, state: AirlineState) -> None:
        super().__init__("finnair-sim", instructions="Finnair flight shopping (simulated).")
        self._state = state

    async def list_tools(self) -> list[McpTool]:
        tools = await super().list_tools()
        description = self._state.config.tool_description
        if description is None:
            return tools
        return [t.model_copy(update={"description": description}) if t.name == TOOL_NAME else t for t in tools]


def build_server(state: AirlineState, schedule: Schedule) -> MCPServer:
    """Finnair's MCP server with its one shopping tool."""
    server = _FinnairServer(state)

    @server.tool(name=TOOL_NAME, description=TOOL_DESCRIPTION)
    async def search_flights(
        origin: str,
        destination: str,
        departure_date: date,
        return_date: date | None = None,
        adults: int = 1,
        children: int = 0,
        infants: int = 0,
        travel_class: TravelClass = "economy",
        currency: str = "EUR",
    ) -> CallToolResult:
        query = ShopQuery(
            airline=state.code,
            origin=origin.upper()[:3],
            destination=destination.upper()[:3],
            departure_date=departure_date,
            return_date=return_date,
            adults=adults,
            children=children,
            infants=infants,
            cabin=_CABINS[travel_class],
            currency=currency.upper()[:3],
        )
        problems = query.problems(today=datetime.now(UTC).date())
        if problems:
            raise ToolError("; ".join(problems))
        if state.malformed_now():
            # Looks like success, carries nothing usable: no structured content, text that is not JSON.
            return CallToolResult(content=[TextContent(type="text", text="<html><body>502 Bad Gat")])
        payload = {
            "search_id": f"{query.origin}{query.destination}{query.departure_date:%Y%m%d}",
            "offers": [
                _offer(o) for o in schedule.offers(query, now=datetime.now(UTC), ttl_s=state.config.offer_ttl_s)
            ],
        }
        return CallToolResult(content=[TextContent(type="text", text=json.dumps(payload))], structured_content=payload)

    return server


def build_app(state: AirlineState, schedule: Schedule) -> ASGIApp:
    """A fresh streamable-HTTP app (its session manager runs once, so a restart needs a new one)."""
    app = build_server(state, schedule).streamable_http_app(
        streamable_http_path=MCP_PATH, stateless_http=True, json_response=True
    )
    return AirlineGate(app, state, is_business=is_mcp_tool_call)
