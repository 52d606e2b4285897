#!/usr/bin/env python3
"""chatroom: a connector plugin for the kernel's tests, standard library only.

Its "platform" is a folder (`config.dir`): each `inbox/*.json` file is a message a person
wrote (an `inbound` without `v`/`id`/`type`), sent to the kernel in name order; only once the
kernel answered is the answer appended to `answers.jsonl`, which is the platform's
acknowledgement (a file without one is sent again after a restart). The plugin deletes
nothing: its sandbox class (`script`) has no call to. Every `outbound` the kernel sends is appended to `sent.jsonl`
and answered with a fresh message id.
"""

import json
import os
import socket
import struct
import sys
import threading
import time

MAX_FRAME = int(os.environ.get("P3AK_MAX_FRAME", str(1 << 20)))


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def receive(sock):
    header = read_exact(sock, 4)
    if header is None:
        return None
    (size,) = struct.unpack(">I", header)
    payload = read_exact(sock, size)
    return None if payload is None else json.loads(payload.decode("utf-8"))


LOCK = threading.Lock()


def send(sock, msg_id, msg_type, **fields):
    payload = json.dumps({"v": 1, "id": msg_id, "type": msg_type, **fields}).encode("utf-8")
    with LOCK:
        sock.sendall(struct.pack(">I", len(payload)) + payload)


def append(path, record):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def main():
    sock = socket.socket(fileno=os.dup(0))
    send(sock, 1, "hello", plugin=os.environ["P3AK_PLUGIN_NAME"], versions=[1],
         software="chatroom.py")
    welcome = receive(sock)
    folder = welcome["config"]["dir"]
    send(sock, 2, "register", kind="connector", actions=[])
    receive(sock)

    answers = {}
    answered = threading.Condition()
    next_message = [0]

    def read_loop():
        while True:
            message = receive(sock)
            if message is None or message.get("type") == "shutdown":
                os._exit(0)
            kind, msg_id = message.get("type"), message.get("id")
            if kind == "ping":
                send(sock, msg_id, "pong")
            elif kind == "outbound":
                next_message[0] += 1
                record = {k: message.get(k) for k in ("conversation", "text", "edit", "partial")}
                record["message_id"] = str(next_message[0]) if not message.get("edit") else message["edit"]
                append(os.path.join(folder, "sent.jsonl"), record)
                send(sock, msg_id, "result", output={"message_id": record["message_id"]})
            elif kind in ("result", "error"):
                with answered:
                    answers[msg_id] = message
                    answered.notify_all()
            else:
                send(sock, msg_id, "error", kind="invalid", message=f"unexpected {kind}")

    threading.Thread(target=read_loop, daemon=True).start()
    inbox = os.path.join(folder, "inbox")
    answers_path = os.path.join(folder, "answers.jsonl")
    done = set()
    if os.path.exists(answers_path):
        with open(answers_path, encoding="utf-8") as f:
            done = {json.loads(line)["file"] for line in f if line.strip()}
    request_id = 100
    while True:
        names = sorted(n for n in os.listdir(inbox) if n.endswith(".json") and n not in done)
        if not names:
            time.sleep(0.05)
            continue
        path = os.path.join(inbox, names[0])
        with open(path, encoding="utf-8") as f:
            fields = json.load(f)
        request_id += 1
        send(sock, request_id, "inbound", **fields)
        with answered:
            while request_id not in answers:
                answered.wait()
            answer = answers.pop(request_id)
        append(answers_path, {"file": names[0], "answer": answer})
        done.add(names[0])


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, ConnectionResetError):
        sys.exit(0)
