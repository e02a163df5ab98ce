"""Per-airline mapping modules for proprietary APIs, named in the registry's ``mapping`` field.

A REST airline's module satisfies `connectors.kinds.rest.RestMapping`; an airline MCP server's module
satisfies `connectors.kinds.mcp.McpMapping`. `load_mapping` resolves a registry name to its module.
"""

from __future__ import annotations

import importlib
import re
from types import ModuleType

from jetbridge.errors import ConfigurationError

__all__ = ["load_mapping"]

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def load_mapping(name: str, *, required: tuple[str, ...]) -> ModuleType:
    """The module ``connectors.airlines.<name>``, checked to define every attribute in ``required``."""
    # The name comes from configuration, but it still picks code to import: keep it to plain identifiers.
    if not _NAME.fullmatch(name):
        raise ConfigurationError(f"mapping module name {name!r} is not a plain module name")
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ImportError as exc:
        raise ConfigurationError(f"no mapping module connectors.airlines.{name}: {exc}") from exc
    missing = [attr for attr in required if not hasattr(module, attr)]
    if missing:
        raise ConfigurationError(f"mapping module {name} lacks {', '.join(missing)}")
    return module
