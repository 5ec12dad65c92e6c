"""parallel-dispatch: an MCP server for bounded, observable parallel sub-agents."""

__version__ = "0.1.0"
