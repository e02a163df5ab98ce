"""Built-in connector kinds, one module per `jetbridge.airlines.ConnectorKind`; importing this package
registers each of them with `connectors.base.register_kind`."""

from connectors.kinds import mcp, ndc, rest

__all__ = ["mcp", "ndc", "rest"]
