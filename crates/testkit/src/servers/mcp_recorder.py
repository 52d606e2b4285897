"""An MCP stdio server for tests: appends every tool call it receives to a record file.

Usage: python3 mcp_recorder.py RECORD_FILE
"""

import json
import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

RECORD = sys.argv[1]
app = MCPServer("recorder")


def record(tool, args):
    with open(RECORD, "a", encoding="utf-8") as f:
        f.write(json.dumps({"tool": tool, "args": args}) + "\n")


@app.tool(annotations=ToolAnnotations(readOnlyHint=True, destructiveHint=False))
def peek(key: str) -> str:
    """Shows the note under a key."""
    record("peek", {"key": key})
    return f"note {key}: nothing yet"


@app.tool(name="notes.add")
def notes_add(key: str, text: str) -> str:
    """Adds a note under a key."""
    record("notes.add", {"key": key, "text": text})
    return f"added {key}"


@app.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True))
def erase(key: str) -> str:
    """Erases the note under a key."""
    record("erase", {"key": key})
    return f"erased {key}"


@app.tool()
def fail(reason: str) -> str:
    """Always fails."""
    record("fail", {"reason": reason})
    raise ToolError(f"refused: {reason}")


@app.tool()
def crash() -> str:
    """Ends the server at once, mid-call."""
    record("crash", {})
    os._exit(3)


if __name__ == "__main__":
    app.run()
