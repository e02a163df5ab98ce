"""``python -m mcp_bridge``: run one bridge instance (MCP over streamable HTTP)."""

from mcp_bridge.server import main

if __name__ == "__main__":
    main()
