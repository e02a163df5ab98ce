"""Built-in connector kinds; importing this package registers each of them."""

from connectors.kinds import mcp, ndc, rest

__all__ = ["mcp", "ndc", "rest"]
