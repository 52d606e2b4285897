#!/usr/bin/env python3
"""A tool plugin that misbehaves on request, for the kernel's tests.

Actions: `ok` answers; `crash` exits at once; `oversize` announces a 2 GiB frame;
`garbage` sends a frame that is not JSON; `hang` stops answering anything, pings included.
"""
import json
import os
import socket
import struct
import sys
import time


def send(sock, obj):
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack(">I", len(data)) + data)


def recv(sock):
    header = b""
    while len(header) < 4:
        chunk = sock.recv(4 - len(header))
        if not chunk:
            return None
        header += chunk
    (size,) = struct.unpack(">I", header)
    body = b""
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        if not chunk:
            return None
        body += chunk
    return json.loads(body)


def main():
    # The kernel's connection is standard input.
    sock = socket.socket(fileno=os.dup(0))
    send(sock, {"v": 1, "id": 0, "type": "hello", "plugin": os.environ["P3AK_PLUGIN_NAME"], "versions": [1]})
    recv(sock)  # welcome
    schema = {"type": "object", "properties": {}, "additionalProperties": False}
    actions = [
        {"name": name, "description": name, "parameters": schema, "tier": "observe"}
        for name in ["ok", "crash", "oversize", "garbage", "hang"]
    ]
    send(sock, {"v": 1, "id": 1, "type": "register", "kind": "tool", "actions": actions})
    recv(sock)  # registered
    while True:
        msg = recv(sock)
        if msg is None or msg["type"] == "shutdown":
            return
        if msg["type"] == "ping":
            send(sock, {"v": 1, "id": msg["id"], "type": "pong"})
            continue
        action = msg.get("action")
        if action == "crash":
            os._exit(3)
        if action == "oversize":
            sock.sendall(struct.pack(">I", 2**31) + b"x" * 1024)
            time.sleep(30)
            return
        if action == "garbage":
            sock.sendall(struct.pack(">I", 9) + b"not json!")
            time.sleep(30)
            return
        if action == "hang":
            time.sleep(3600)
        send(sock, {"v": 1, "id": msg["id"], "type": "result", "output": {"ok": True}})


if __name__ == "__main__":
    sys.exit(main())
