#!/usr/bin/env python3
"""wordcount: an example P3AK tool plugin, standard library only. Copy it to start your own.

The kernel starts this file with its connection to the kernel, a Unix stream socket, as
standard input (as inetd does), and two environment variables:
  P3AK_PLUGIN_NAME    the name the operator gave this plugin in config.toml
  P3AK_MAX_FRAME      the largest frame payload, in bytes
Every frame is a 4-byte big-endian length, then that many bytes of one UTF-8 JSON object.
See docs/protocol.md for the whole contract.
"""

import json
import os
import socket
import struct
import sys

VERSIONS = [1]  # protocol versions this plugin speaks
MAX_FRAME = int(os.environ.get("P3AK_MAX_FRAME", str(1 << 20)))

# The actions offered. `parameters` is the JSON Schema the kernel checks arguments against
# before it ever sends an `invoke`; `tier` is only a recommendation (the policy decides).
TEXT_ONLY = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
    "additionalProperties": False,
}
ACTIONS = [
    {"name": "count", "description": "Count the words, lines and characters of a text.",
     "parameters": TEXT_ONLY, "tier": "observe"},
    {"name": "shout", "description": "Return the text in upper case.",
     "parameters": TEXT_ONLY, "tier": "act"},
]


class Invalid(Exception):
    """A request this plugin cannot serve: answered with an `invalid` error."""


def read_exact(sock, n):
    """Reads exactly n bytes; None if the kernel closed the connection before any byte."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            if data:
                raise EOFError("connection closed mid-frame")
            return None
        data += chunk
    return data


def receive(sock):
    """The next message as a dict, or None at end of stream."""
    header = read_exact(sock, 4)
    if header is None:
        return None
    (size,) = struct.unpack(">I", header)
    if size == 0 or size > MAX_FRAME:
        raise ValueError(f"bad frame length {size}")
    payload = read_exact(sock, size)
    if payload is None:
        raise EOFError("connection closed mid-frame")
    return json.loads(payload.decode("utf-8"))


def send(sock, msg_id, msg_type, **fields):
    """Sends one message. Replies repeat the `id` of the request they answer."""
    message = {"v": VERSIONS[0], "id": msg_id, "type": msg_type, **fields}
    payload = json.dumps(message).encode("utf-8")
    if len(payload) > MAX_FRAME:
        raise ValueError("message over the frame limit")
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def run(action, args):
    """Runs one action. The kernel already validated `args` against the schema; check anyway."""
    if not isinstance(args, dict) or set(args) != {"text"} or not isinstance(args["text"], str):
        raise Invalid("expected {\"text\": string}")
    text = args["text"]
    if action == "count":
        # chars counts Unicode code points.
        return {"words": len(text.split()), "lines": len(text.splitlines()), "chars": len(text)}
    if action == "shout":
        return {"text": text.upper()}
    raise Invalid(f"unknown action {action!r}")


def kernel_connection():
    """The socket on standard input; /dev/null takes its place, so that programs this plugin
    might start do not inherit the kernel's connection."""
    sock = socket.socket(fileno=os.dup(0))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return sock


def main():
    sock = kernel_connection()

    # Handshake: hello -> welcome, register -> registered. Our requests use fresh ids.
    send(sock, 1, "hello", plugin=os.environ["P3AK_PLUGIN_NAME"], versions=VERSIONS,
         software="wordcount.py 0.1")
    welcome = receive(sock)
    if welcome is None or welcome.get("type") != "welcome":
        sys.exit(f"wordcount: expected welcome, got {welcome!r}")  # e.g. no common version
    # welcome["config"] holds this plugin's settings from config.toml (unused here).
    send(sock, 2, "register", kind="tool", actions=ACTIONS)
    registered = receive(sock)
    if registered is None or registered.get("type") != "registered":
        sys.exit(f"wordcount: registration refused: {registered!r}")

    # Operation: answer each request until shutdown or end of stream.
    while True:
        message = receive(sock)
        if message is None or message.get("type") == "shutdown":
            break
        msg_type, msg_id = message.get("type"), message.get("id")
        if msg_type == "ping":
            send(sock, msg_id, "pong")
        elif msg_type == "invoke":
            try:
                output = run(message.get("action"), message.get("args"))
                send(sock, msg_id, "result", output=output)
            except Invalid as e:
                send(sock, msg_id, "error", kind="invalid", message=str(e))
        elif msg_type in ("pong", "result", "error", "stream_chunk"):
            pass  # replies: this plugin sends no requests after registering, so none expected
        else:
            send(sock, msg_id, "error", kind="invalid", message=f"unexpected {msg_type!r}")
    sock.close()


if __name__ == "__main__":
    main()
